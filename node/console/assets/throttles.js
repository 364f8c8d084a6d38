// Throttles: the cluster-wide throttle. Per service with limits or
// max_in_flight (GET /v1/services) its limits (rate, per, by, burst); the
// current window's usage per limit and key as the active throttle manager
// knows it (GET /v1/throttles: admitted and so remaining, granted, not
// yet granted, reserved, the window's reset) and the max_in_flight slots;
// which node runs the throttle-manager role and its fence (GET
// /v1/roles). The API gives no cluster-wide refused count: the page shows
// what this node refused and admitted since it started
// (meshgw_throttle_*_total in /metrics), and says so. An optional
// ?service= filter is kept in the link.
'use strict';

(function (C) {
  const {h} = C;
  const PER_MS = {'1s': 1000, '1m': 60000, '1h': 3600000, '1d': 86400000, '30d': 30 * 86400000};

  C.page({
    id: 'throttles', nav: 'Throttles', title: 'Throttles', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'throttles' ? {} : null,
    render(ctx, params, query) {
      const service = query.get('service') || '';
      const names = h('datalist', {id: 'tf-services'});
      const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter throttles', onsubmit: (ev) => {
        ev.preventDefault();
        location.hash = C.link(['throttles'], {service: new FormData(form).get('service').trim()});
      }},
        h('div', {class: 'field'}, h('label', {for: 'tf-service'}, 'Service'),
          h('input', {id: 'tf-service', name: 'service', value: service, autocomplete: 'off', list: 'tf-services',
            placeholder: 'all', spellcheck: 'false'})),
        names,
        h('div', {class: 'field actions'}, h('button', {type: 'submit'}, 'Filter'),
          h('a', {href: '#/throttles', class: 'button secondary'}, 'Clear')));
      const mgr = h('div', {id: 'throttle-manager'});
      const slot = h('div', {id: 'throttles'});
      ctx.root.append(h('h1', {}, 'Throttles'), form,
        h('p', {class: 'hint'}, 'Usage of the current window, from the cluster\u2019s active throttle manager; ' +
          'admitted counts lag by up to one ask of each node (half a second).'),
        mgr, slot);
      const qs = service ? '?service=' + encodeURIComponent(service) : '';
      ctx.every(1000, async () => {
        // One failed read leaves the others on the page (no manager yet,
        // a token that may not read metrics).
        const get = (p) => C.api('GET', p).then(v => ({v}), e => { if (C.aborted(e)) throw e; return {e}; });
        const [svcs, rep, roles, metrics] =
          await Promise.all([get('/v1/services'), get('/v1/throttles' + qs), get('/v1/roles'), get('/metrics')]);
        if (svcs.e && rep.e) throw rep.e;
        C.clearError(ctx.root);
        const throttled = (svcs.v || []).filter(s => (s.limits && s.limits.length) || s.max_in_flight > 0);
        names.replaceChildren(...throttled.map(s => h('option', {value: s.name})));
        C.replaceIfChanged(mgr, {
          // GET /v1/roles answers for this node's cluster, the one whose
          // throttle this node obeys.
          role: (roles.v || []).find(r => r.role === 'throttle-manager') || null,
          rolesErr: roles.e && C.describe(roles.e),
          manager: rep.v ? rep.v.manager : '', fence: rep.v ? rep.v.fence : 0, repErr: rep.e && C.describe(rep.e),
        }, managerCard);
        mgr.querySelectorAll('time').forEach(t => { t.textContent = C.ago(t.getAttribute('datetime')); });
        C.replaceIfChanged(slot, {
          service,
          services: throttled.filter(s => !service || s.name === service),
          servicesErr: svcs.e && C.describe(svcs.e),
          limits: (rep.v && rep.v.limits) || [], slots: (rep.v && rep.v.slots) || [],
          counts: metrics.v ? counters(metrics.v) : null, metricsErr: metrics.e && C.describe(metrics.e),
        }, render);
        // The resets count down in place (a re-render would take the focus).
        slot.querySelectorAll('time[data-until]').forEach(t => { t.textContent = C.until(t.getAttribute('datetime')); });
      });
    },
  });

  // counters reads meshgw_throttle_{admitted,refused}_total{cluster,service,limit}
  // of this node: {service: {limit: {admitted, refused}}}.
  function counters(text) {
    const out = {};
    for (const line of String(text).split('\n')) {
      const m = line.match(/^meshgw_throttle_(admitted|refused)_total\{([^}]*)\}\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      for (const kv of m[2].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
      const s = out[labels.service] = out[labels.service] || {};
      const l = s[labels.limit] = s[labels.limit] || {admitted: 0, refused: 0};
      l[m[1]] += Number(m[3]) || 0;
    }
    return out;
  }

  function fact(k, v, attrs) { return [h('dt', {}, k), h('dd', attrs || {}, v === '' || v === undefined || v === null ? '\u2014' : v)]; }

  function managerCard(d) {
    const r = d.role;
    return h('section', {class: 'card', 'aria-labelledby': 'tm-h'},
      h('h2', {id: 'tm-h'}, 'Throttle manager'),
      h('dl', {class: 'facts'},
        fact('Active', r && r.active ? h('strong', {}, r.active) : h('span', {class: 'bad'}, 'none'), {id: 'tm-active'}),
        fact('State', r ? C.badge(r.state) : ''),
        fact('Fence', r && r.fence ? r.fence : '', {id: 'tm-fence'}),
        fact('Since', r && r.since ? C.time(r.since) : ''),
        fact('Standbys', r ? (r.standbys || []).join(', ') : ''),
        fact('Usage from', d.manager ? d.manager + ', fence ' + d.fence : '', {id: 'tm-usage-from'})),
      d.repErr ? h('p', {class: 'page-error'}, 'Usage: ' + d.repErr) : null,
      d.rolesErr ? h('p', {class: 'hint'}, 'Roles: ' + d.rolesErr) : null);
  }

  function keyCell(u) {
    if (u.by === 'service' || !u.key) return h('span', {class: 'note'}, u.by === 'token' ? 'requests without a token' : 'whole service');
    return [h('code', {}, u.key), h('span', {class: 'note'}, u.by === 'token' ? ' token accessor' : ' client address')];
  }

  // left is what the window still admits on the key, cluster-wide: its
  // budget (rate + burst) less what the nodes reported admitted. The
  // manager's own remaining is what it has not granted to a node yet.
  function left(u) { return Math.max(0, u.rate + (u.burst || 0) - u.used); }

  function resetOf(u) {
    const start = new Date(u.window_start).getTime();
    const per = PER_MS[u.per];
    return per && !isNaN(start) ? new Date(start + per).toISOString() : '';
  }

  function render(d) {
    const frag = h('div', {});
    if (d.servicesErr) frag.append(h('p', {class: 'page-error'}, 'Services: ' + d.servicesErr));
    const byName = new Map(d.services.map(s => [s.name, s]));
    // A service the manager still reports (its definition gone or not
    // readable) is shown from the report alone.
    for (const u of d.limits) if (!byName.has(u.service) && (!d.service || u.service === d.service)) byName.set(u.service, {name: u.service});
    for (const s of d.slots) if (!byName.has(s.service) && (!d.service || s.service === d.service)) byName.set(s.service, {name: s.service});
    if (byName.size === 0) {
      frag.append(h('p', {class: 'summary', id: 'throttles-none'}, d.service
        ? 'Service ' + d.service + ' has no limits and no max_in_flight.'
        : 'No service has limits or max_in_flight.'));
    }
    for (const s of [...byName.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const counts = (d.counts && d.counts[s.name]) || {};
      const id = 'th-' + s.name;
      const sec = h('section', {class: 'card', 'aria-labelledby': id, 'data-throttle': s.name},
        h('h2', {id}, 'Service ', h('a', {href: C.link(['services', s.name]), 'data-focus': 'th-' + s.name}, s.name)),
        h('dl', {class: 'facts'},
          fact('Limits', s.limits ? s.limits.length : ''),
          fact('When the manager is lost', s.limits && s.limits.length ? (s.on_manager_loss || 'share') : ''),
          fact('max_in_flight', s.max_in_flight || (s.limits ? 'no cap' : ''))));
      const usage = d.limits.filter(u => u.service === s.name);
      const here = (i) => counts[String(i)] || null;
      if (s.limits && s.limits.length) {
        sec.append(C.table('Limits of ' + s.name, [
          {label: 'Limit', cell: l => 'limits[' + l.i + ']'},
          {label: 'Rate', cell: l => l.rate},
          {label: 'Per', cell: l => l.per},
          {label: 'By', cell: l => l.by || 'service'},
          {label: 'Burst', cell: l => l.burst || 0},
          {label: 'Per window', cell: l => (l.rate + (l.burst || 0)) + ' per key'},
          {label: 'Admitted here', cell: l => here(l.i) ? here(l.i).admitted : (d.counts ? 0 : '\u2014')},
          {label: 'Refused here', cell: l => here(l.i) && here(l.i).refused ? h('span', {class: 'bad'}, here(l.i).refused) : (d.counts ? 0 : '\u2014')},
        ], s.limits.map((l, i) => Object.assign({i}, l)), l => ({'data-limit': l.i})));
      }
      if (s.limits && s.limits.length || usage.length) {
        sec.append(C.table('Current window of ' + s.name + ', per limit and key', [
          {label: 'Limit', cell: u => 'limits[' + u.limit + '] ' + u.rate + '/' + u.per},
          {label: 'Key', cell: keyCell},
          {label: 'Admitted', cell: u => u.used},
          {label: 'Remaining', cell: u => left(u) === 0 ? h('span', {class: 'bad'}, '0') : left(u)},
          {label: 'Granted to nodes', cell: u => u.granted},
          {label: 'Not yet granted', cell: u => u.remaining},
          {label: 'Reserved for shares', cell: u => u.reserved},
          {label: 'Resets', cell: u => {
            const t = C.time(resetOf(u), C.until);
            if (t.setAttribute) t.setAttribute('data-until', '');
            return t;
          }},
        ], usage, u => ({'data-limit': u.limit, 'data-key': u.key || '', 'data-used': u.used, 'data-remaining': left(u)})));
      }
      const sl = d.slots.find(x => x.service === s.name);
      if (s.max_in_flight > 0 || sl) {
        const hereF = counts['max_in_flight'];
        sec.append(C.table('max_in_flight of ' + s.name, [
          {label: 'Max', cell: x => x.max_in_flight},
          {label: 'In flight', cell: x => x.in_flight},
          {label: 'Slots held', cell: x => x.held},
          {label: 'Held by', cell: x => Object.entries(x.nodes || {}).sort().map(([n, k]) => h('span', {class: 'tag'}, n + ': ' + k))},
          {label: 'Refused here', cell: () => hereF && hereF.refused ? h('span', {class: 'bad'}, hereF.refused) : (d.counts ? 0 : '\u2014')},
        ], sl ? [sl] : [], x => ({'data-slots': x.service})));
      }
      frag.append(sec);
    }
    frag.append(h('p', {class: 'hint'}, d.metricsErr
      ? 'This node\u2019s admitted and refused counts: ' + d.metricsErr
      : '\u201cHere\u201d counts are this node\u2019s only (admitted and refused with 429 since it started); other nodes count their own.'));
    return frag;
  }
})(window.Console);
