// Secrets: the cluster's secrets by name (GET /v1/secrets, policy
// secrets): version, times, sealing key and the services that use them.
// The API gives no value, so the console has none to show.
'use strict';

(function (C) {
  const {h} = C;

  C.page({
    id: 'secrets', nav: 'Secrets', title: 'Secrets', need: 'secrets',
    match: (parts) => parts.length === 1 && parts[0] === 'secrets' ? {} : null,
    render(ctx) {
      const slot = h('div', {id: 'secrets'});
      ctx.root.append(h('h1', {}, 'Secrets'),
        h('p', {class: 'hint'}, 'Names and metadata only: no value ever leaves the cluster through the API.'), slot);
      ctx.every(3000, async () => {
        const ss = await C.api('GET', '/v1/secrets');
        C.clearError(ctx.root);
        ss.sort((a, b) => a.name.localeCompare(b.name));
        C.replaceIfChanged(slot, ss, (rows) => C.table('Secrets of the cluster', [
          {label: 'Name', cell: s => h('strong', {}, s.name)},
          {label: 'Version', cell: s => s.version},
          {label: 'Created', cell: s => C.time(s.created)},
          {label: 'Updated', cell: s => C.time(s.updated)},
          {label: 'Key', cell: s => s.key_id ? h('code', {}, s.key_id) : ''},
          {label: 'Used by', cell: s => (s.used_by || []).length
            ? s.used_by.map(u => h('a', {class: 'tag', href: C.link(['services', u])}, u)) : h('span', {class: 'note'}, 'no service')},
        ], rows, s => ({'data-secret': s.name})));
      });
    },
  });
})(window.Console);
