// Mesh: every member as this node's gossip sees it, filtered like
// `meshgw members` (cluster, role, status, tag k=v), polled every second.
'use strict';

(function (C) {
  const {h} = C;
  const STATUSES = ['alive', 'suspect', 'failed', 'left'];

  C.page({
    id: 'mesh', nav: 'Mesh', title: 'Mesh',
    match: (parts) => parts.length === 1 && parts[0] === 'mesh' ? {} : null,
    render(ctx, params, query) {
      const f = {cluster: query.get('cluster') || '', role: query.get('role') || '',
        status: query.get('status') || '', tag: query.get('tag') || ''};
      const field = (id, label, control) => h('div', {class: 'field'}, h('label', {for: id}, label), control);
      const select = (id, name, values, cur) => h('select', {id, name},
        h('option', {value: ''}, 'any'), values.map(v => h('option', {value: v, selected: v === cur}, v)));
      const form = h('form', {class: 'filters', role: 'search', 'aria-label': 'Filter members', onsubmit: (ev) => {
        ev.preventDefault();
        const fd = new FormData(form);
        location.hash = C.link(['mesh'], Object.fromEntries(fd.entries()));
      }},
        field('f-cluster', 'Cluster', h('input', {id: 'f-cluster', name: 'cluster', value: f.cluster, autocomplete: 'off'})),
        field('f-role', 'Role', select('f-role', 'role', ['gateway', 'runner'], f.role)),
        field('f-status', 'Status', select('f-status', 'status', STATUSES, f.status)),
        field('f-tag', 'Tag (k=v)', h('input', {id: 'f-tag', name: 'tag', value: f.tag, autocomplete: 'off', placeholder: 'zone=a'})),
        h('div', {class: 'field actions'}, h('button', {type: 'submit'}, 'Filter'),
          h('a', {href: '#/mesh', class: 'button secondary'}, 'Clear')));
      const summary = h('p', {class: 'summary', 'aria-live': 'polite'});
      const slot = h('div', {id: 'members'});
      ctx.root.append(h('h1', {}, 'Mesh'), form, summary, slot);

      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(f)) if (v) q.set(k, v);
      ctx.every(1000, async () => {
        const ms = await C.api('GET', '/v1/members' + (q.toString() ? '?' + q : ''));
        C.clearError(ctx.root);
        ms.sort((a, b) => a.name.localeCompare(b.name));
        const counts = {};
        ms.forEach(m => { counts[m.status] = (counts[m.status] || 0) + 1; });
        summary.textContent = ms.length + ' member' + (ms.length === 1 ? '' : 's') + ': ' +
          (STATUSES.filter(s => counts[s]).map(s => counts[s] + ' ' + s).join(', ') || 'none');
        C.replaceIfChanged(slot, ms, membersTable);
      });
    },
  });

  function membersTable(ms) {
    return C.table('Members', [
      {label: 'Name', cell: m => h('strong', {}, m.name)},
      {label: 'Status', cell: m => [C.badge(m.status), m.refused ? h('span', {class: 'note'}, ' TLS refused: ' + m.refused) : null]},
      {label: 'Cluster', cell: m => h('a', {href: C.link(['mesh'], {cluster: m.cluster})}, m.cluster)},
      {label: 'Roles', cell: m => (m.roles || []).join(', ')},
      {label: 'Tags', cell: m => Object.entries(m.tags || {}).sort().map(([k, v]) =>
        h('a', {class: 'tag', href: C.link(['mesh'], {tag: k + '=' + v})}, k + '=' + v))},
      {label: 'Address', cell: m => h('code', {}, m.addr)},
      {label: 'API', cell: m => m.http_addr ? h('code', {}, m.http_addr) : ''},
      {label: 'Version', cell: m => m.version || ''},
    ], ms, m => ({class: 'row-' + m.status, 'data-member': m.name, 'data-status': m.status}));
  }
})(window.Console);
