// Log: a live tail of the cluster's central log (GET /v1/logs?follow=true,
// one entry per /svc/ request, run and admin change), filtered by service,
// kind and status as `meshgw logs` is, and the KPIs per service (GET
// /v1/kpis). The log names callers (client IP, token accessor), so reading
// it needs the manage policy; the KPIs need read, and a read token sees
// them alone.
'use strict';

(function (C) {
  const {h} = C;
  const KINDS = ['http', 'run', 'admin'];
  const KEEP = 200;     // entries the tail keeps on the page
  const RETRY = 2000;   // ms before following again after the stream ended

  C.page({
    id: 'logs', nav: 'Log', title: 'Central log', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'logs' ? {} : null,
    render(ctx, params, query) {
      const f = {service: query.get('service') || '', kind: query.get('kind') || '', status: query.get('status') || ''};
      const field = (id, label, control) => h('div', {class: 'field'}, h('label', {for: id}, label), control);
      const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter the log', onsubmit: (ev) => {
        ev.preventDefault();
        location.hash = C.link(['logs'], Object.fromEntries(new FormData(form).entries()));
      }},
        field('lf-service', 'Service', h('input', {id: 'lf-service', name: 'service', value: f.service, autocomplete: 'off'})),
        field('lf-kind', 'Kind', h('select', {id: 'lf-kind', name: 'kind'}, h('option', {value: ''}, 'any'),
          KINDS.map(k => h('option', {value: k, selected: k === f.kind}, k)))),
        field('lf-status', 'Status', h('input', {id: 'lf-status', name: 'status', value: f.status, autocomplete: 'off',
          placeholder: '404 or 5xx', size: 8})),
        h('div', {class: 'field actions'}, h('button', {type: 'submit'}, 'Filter'),
          h('a', {href: '#/logs', class: 'button secondary'}, 'Clear')));
      const kpis = h('div', {id: 'kpis'});
      const state = h('p', {class: 'summary', id: 'log-state', 'aria-live': 'polite'});
      const tail = h('div', {id: 'log-tail'});
      ctx.root.append(h('h1', {}, 'Central log'), form,
        h('h2', {}, 'KPIs per service, last 15 minutes'), kpis,
        h('h2', {}, 'Tail'), state, tail);

      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);

      ctx.every(5000, async () => {
        const kq = new URLSearchParams({since: '15m', window: '1m'});
        if (f.service) kq.set('service', f.service);
        const ws = await C.api('GET', '/v1/kpis?' + kq);
        C.replaceIfChanged(kpis, perService(ws), kpiTable);
      });

      if (!C.can('manage')) {
        state.textContent = 'The log itself names every caller (client IP, token): it needs a token with the manage policy.';
        return;
      }
      const entries = [];     // newest first
      const seen = new Set(); // ids, so a stream that starts over adds nothing twice
      let pending = false;
      const show = () => {
        pending = false;
        if (ctx.live()) C.replaceIfChanged(tail, entries, tailTable);
      };
      const add = (e) => {
        if (seen.has(e.id)) return;
        seen.add(e.id);
        entries.unshift(e);
        while (entries.length > KEEP) seen.delete(entries.pop().id);
        if (!pending) { pending = true; ctx.timers.push(setTimeout(show, 100)); }
      };
      q.set('follow', 'true');
      q.set('limit', '50');
      (async () => {
        while (ctx.live()) {
          try {
            state.textContent = 'Following live.';
            const started = C.stream('/v1/logs?' + q, add, ctx.signal);
            show();
            await started;
            C.clearError(ctx.root);
          } catch (e) {
            if (C.aborted(e) || !ctx.live()) return;
            ctx.error(e);
            if (e instanceof C.ApiError && e.status >= 400 && e.status < 500 && e.status !== 429) {
              // A refused filter or token: asking again changes nothing.
              state.textContent = 'Not following: change the filters or the token.';
              return;
            }
          }
          if (!ctx.live()) return;
          state.textContent = 'The stream ended; following again shortly.';
          await new Promise(r => ctx.timers.push(setTimeout(r, RETRY)));
        }
      })();
    },
  });

  // perService sums the KPI windows per service; p50/p99 are the latest
  // window's.
  function perService(ws) {
    const by = new Map();
    for (const w of ws || []) {
      const s = by.get(w.service) || {service: w.service, count: 0, errors: 0, p50: 0, p99: 0, last: ''};
      s.count += w.count;
      s.errors += w.errors;
      if (w.window_start >= s.last) { s.last = w.window_start; s.p50 = w.p50_ms; s.p99 = w.p99_ms; }
      by.set(w.service, s);
    }
    return [...by.values()].sort((a, b) => a.service.localeCompare(b.service));
  }

  function num(n) { return Math.round(n * 10) / 10; }

  function kpiTable(rows) {
    return C.table('KPIs per service', [
      {label: 'Service', cell: s => s.service ? h('a', {href: C.link(['logs'], {service: s.service})}, s.service) : '(none)'},
      {label: 'Requests', cell: s => s.count},
      {label: 'Errors', cell: s => s.errors ? h('span', {class: 'bad'}, s.errors) : 0},
      {label: 'Error rate', cell: s => s.count ? (100 * s.errors / s.count).toFixed(1) + ' %' : ''},
      {label: 'p50 (latest minute)', cell: s => num(s.p50) + ' ms'},
      {label: 'p99 (latest minute)', cell: s => num(s.p99) + ' ms'},
    ], rows, s => ({'data-kpi': s.service}));
  }

  function statusClass(n) {
    if (n >= 500) return 'failed';
    if (n >= 400) return 'suspect';
    return 'alive';
  }

  function tailTable(es) {
    return C.table('Newest entries first (' + es.length + ')', [
      {label: 'Time', cell: e => h('time', {datetime: e.time, title: new Date(e.time).toLocaleString()}, new Date(e.time).toLocaleTimeString())},
      {label: 'Kind', cell: e => e.kind},
      {label: 'Service', cell: e => e.service ? h('a', {href: C.link(['logs'], {service: e.service})}, e.service) : ''},
      {label: 'Request', cell: e => h('code', {}, e.method + ' ' + e.path)},
      {label: 'Status', cell: e => h('span', {class: 'badge st-' + statusClass(e.status)}, e.status)},
      {label: 'Duration', cell: e => num(e.duration_ms) + ' ms'},
      {label: 'Bytes in/out', cell: e => C.bytes(e.bytes_in) + ' / ' + C.bytes(e.bytes_out)},
      {label: 'Node', cell: e => e.node},
      {label: 'Client', cell: e => [h('code', {}, e.client_ip), e.token_accessor ? h('span', {class: 'note'}, ' token ' + e.token_accessor.slice(0, 8)) : null]},
      {label: 'Execution', cell: e => e.execution_id ? h('a', {href: C.link(['executions', e.execution_id])}, e.execution_id.slice(0, 12)) : ''},
    ], es, e => ({'data-entry': e.id, 'data-service': e.service, 'data-kind': e.kind, 'data-status': e.status}));
  }
})(window.Console);
