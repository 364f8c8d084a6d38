// Decorators: the cluster's shared decorators (GET /v1/decorators), the
// JSON Schemas services name instead of carrying their own, with the
// services that use each; #/decorators/NAME shows one schema.
'use strict';

(function (C) {
  const {h} = C;

  function pretty(schema) {
    try { return JSON.stringify(typeof schema === 'string' ? JSON.parse(schema) : schema, null, 2); } catch (e) { return String(schema); }
  }

  function usedBy(d) {
    return (d.used_by || []).length
      ? d.used_by.map(u => h('a', {class: 'tag', href: C.link(['services', u])}, u)) : h('span', {class: 'note'}, 'no service');
  }

  C.page({
    id: 'decorators', nav: 'Decorators', title: 'Decorators', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'decorators' ? {} : null,
    render(ctx) {
      const slot = h('div', {id: 'decorators'});
      ctx.root.append(h('h1', {}, 'Shared decorators'), slot);
      ctx.every(3000, async () => {
        const ds = await C.api('GET', '/v1/decorators');
        C.clearError(ctx.root);
        ds.sort((a, b) => a.name.localeCompare(b.name));
        C.replaceIfChanged(slot, ds, (rows) => C.table('Decorators of the cluster', [
          {label: 'Name', cell: d => h('a', {href: C.link(['decorators', d.name]), 'data-focus': 'dec-' + d.name}, d.name)},
          {label: 'Version', cell: d => d.version},
          {label: 'Type', cell: d => { try { return JSON.parse(pretty(d.schema)).type || ''; } catch (e) { return ''; } }},
          {label: 'Used by', cell: usedBy},
        ], rows, d => ({'data-decorator': d.name})));
      });
    },
  });

  C.page({
    id: 'decorator', section: 'decorators', title: 'Decorator',
    match: (parts) => parts.length === 2 && parts[0] === 'decorators' ? {name: parts[1]} : null,
    render(ctx, {name}) {
      const slot = h('div', {id: 'decorator'});
      ctx.root.append(h('h1', {}, 'Decorator ', h('code', {}, name)),
        h('p', {}, h('a', {href: '#/decorators'}, 'All decorators')), slot);
      ctx.every(3000, async () => {
        const d = await C.api('GET', '/v1/decorators/' + encodeURIComponent(name));
        C.clearError(ctx.root);
        C.replaceIfChanged(slot, d, (d) => h('div', {},
          h('dl', {class: 'facts'},
            h('dt', {}, 'Cluster'), h('dd', {}, d.cluster),
            h('dt', {}, 'Version'), h('dd', {}, d.version),
            h('dt', {}, 'Used by'), h('dd', {}, usedBy(d))),
          h('h2', {}, 'Schema'),
          h('pre', {class: 'json', id: 'decorator-schema', tabindex: 0, 'aria-label': 'Schema of ' + name}, pretty(d.schema))));
      });
    },
  });
})(window.Console);
