// Cache: the response cache per service (GET /v1/cache: entries, bytes,
// hits, misses, hit ratio, summed over the nodes that answered) and which
// nodes serve hits; a purge (DELETE /v1/cache/{service}, policy write)
// behind a confirmation dialog, for a token that may write.
'use strict';

(function (C) {
  const {h} = C;

  C.page({
    id: 'cache', nav: 'Cache', title: 'Response cache', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'cache' ? {} : null,
    render(ctx) {
      const nodes = h('p', {class: 'summary', id: 'cache-nodes', 'aria-live': 'polite'});
      const done = h('p', {class: 'summary', id: 'purge-result', role: 'status'});
      const slot = h('div', {id: 'cache'});
      ctx.root.append(h('h1', {}, 'Response cache'),
        h('p', {class: 'hint'}, 'Entries and bytes count every copy (each entry is held by two nodes).'),
        nodes, done, slot);
      const write = C.can('write');
      ctx.every(2000, async () => {
        const rep = await C.api('GET', '/v1/cache');
        C.clearError(ctx.root);
        const ns = rep.nodes || [];
        nodes.textContent = ns.length === 0 ? 'No node answered.' : 'Nodes: ' + ns.map(n =>
          n.node + (n.error ? ' (did not answer: ' + n.error + ')' : n.serving ? ' (serving hits)' : ' (not serving hits)')).join(', ');
        C.replaceIfChanged(slot, rep.services || [], (ss) => C.table('Cached services', [
          {label: 'Service', cell: s => h('a', {href: C.link(['services', s.service])}, s.service)},
          {label: 'Entries', cell: s => s.entries},
          {label: 'Bytes', cell: s => C.bytes(s.bytes)},
          {label: 'Hits', cell: s => s.hits},
          {label: 'Misses', cell: s => s.misses},
          {label: 'Hit ratio', cell: s => (100 * (s.hit_ratio || 0)).toFixed(1) + ' %'},
          ...(write ? [{label: 'Purge', cell: s => h('button', {type: 'button', class: 'danger', 'data-purge': s.service,
            'data-focus': 'purge-' + s.service, onclick: () => confirmPurge(ctx, s.service, done)}, 'Purge')}] : []),
        ], ss, s => ({'data-cache': s.service})));
      });
    },
  });

  function confirmPurge(ctx, service, done) {
    const err = h('p', {class: 'field-error', role: 'alert'});
    const prefix = h('input', {id: 'purge-prefix', name: 'prefix', autocomplete: 'off', placeholder: '/',
      'aria-describedby': 'purge-prefix-help'});
    const yes = h('button', {value: 'purge', class: 'danger', id: 'confirm-purge-yes', onclick: async (ev) => {
      ev.preventDefault();
      err.textContent = '';
      const p = prefix.value.trim();
      yes.disabled = true;
      yes.textContent = 'Purging\u2026';
      try {
        const r = await C.api('DELETE', '/v1/cache/' + encodeURIComponent(service) + (p ? '?prefix=' + encodeURIComponent(p) : ''));
        dlg.close();
        done.textContent = 'Purged ' + r.service + (r.prefix ? r.prefix : '') + ': acknowledged by ' +
          ((r.acknowledged || []).join(', ') || 'no node') + (r.waited ? '; waited out the bound for the silent nodes.' : '.');
      } catch (e) {
        err.textContent = C.describe(e);
        yes.disabled = false;
        yes.textContent = 'Purge';
      }
    }}, 'Purge');
    const dlg = h('dialog', {id: 'confirm-purge', 'aria-labelledby': 'purge-h'},
      h('h2', {id: 'purge-h'}, 'Purge the cache of ' + service + '?'),
      h('p', {}, 'Every node stops serving the purged entries; the next requests go to the upstream.'),
      h('div', {class: 'field'}, h('label', {for: 'purge-prefix'}, 'Only paths below (optional)'), prefix,
        h('p', {class: 'hint', id: 'purge-prefix-help'}, 'A path below the service, starting with /; empty purges all of it.')),
      err,
      h('form', {method: 'dialog', class: 'actions'},
        h('button', {value: 'cancel', class: 'secondary', autofocus: true}, 'Keep it'), ' ', yes));
    dlg.addEventListener('close', () => dlg.remove());
    ctx.root.append(dlg);
    dlg.showModal();
  }
})(window.Console);
