// Routes: the node's route table (GET /v1/routes: Host and path-prefix
// routes to services, in match order) and each service's upstreams with
// their shared health, rotation and breaker state.
'use strict';

(function (C) {
  const {h} = C;

  C.page({
    id: 'routes', nav: 'Routes', title: 'Routes', need: 'read',
    match: (parts) => parts.length === 1 && parts[0] === 'routes' ? {} : null,
    render(ctx) {
      const facts = h('p', {class: 'summary', id: 'routes-facts'});
      const slot = h('div', {id: 'routes'});
      ctx.root.append(h('h1', {}, 'Routes'), facts, slot);
      ctx.every(3000, async () => {
        const t = await C.api('GET', '/v1/routes');
        C.clearError(ctx.root);
        facts.textContent = 'As node ' + t.node + ' of cluster ' + t.cluster + ' routes, revision ' + t.revision +
          ' (nodes with the same revision have the same table).';
        C.replaceIfChanged(slot, {routes: t.routes || [], services: t.services || []}, render);
      });
    },
  });

  function svc(name) { return h('a', {href: C.link(['services', name])}, name); }

  function render(d) {
    const frag = h('div', {});
    frag.append(C.table('Route table, in match order', [
      {label: 'Host', cell: r => r.host === '*' ? h('span', {class: 'note'}, 'any host') : h('code', {}, r.host)},
      {label: 'Prefix', cell: r => h('code', {}, r.prefix)},
      {label: 'Strip', cell: r => r.strip ? 'yes' : 'no'},
      {label: 'Service', cell: r => svc(r.service)},
    ], d.routes, r => ({'data-route': r.host + ' ' + r.prefix, 'data-service': r.service})));
    for (const s of d.services) {
      frag.append(C.table('Upstreams of ' + s.service, [
        {label: 'URL', cell: u => h('code', {}, u.url)},
        {label: 'Weight', cell: u => u.weight},
        {label: 'Health', cell: u => C.badge(u.healthy ? 'healthy' : 'unhealthy')},
        {label: 'In rotation', cell: u => u.in_rotation ? 'yes' : ['no', u.why ? h('span', {class: 'note'}, ' (' + u.why + ')') : null]},
        {label: 'Breaker', cell: u => u.breaker + (u.ejected ? ', ejected' : '')},
        {label: 'Observers', cell: u => (u.observers || []).map(o =>
          h('span', {class: 'tag'}, o.node + ': ' + (o.healthy ? 'healthy' : 'unhealthy') + ', ' + C.ms(o.age_ms) + ' ago'))},
      ], s.upstreams || [], u => ({class: 'row-' + (u.healthy ? 'alive' : 'failed'), 'data-upstream': u.url})));
    }
    return frag;
  }
})(window.Console);
