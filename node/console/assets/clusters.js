// Clusters and groups: per cluster its members and Raft group (leader,
// term, applied index, voters and their gossip health), the autopilot's
// membership changes (from /metrics), and the singleton roles.
'use strict';

(function (C) {
  const {h} = C;

  C.page({
    id: 'clusters', nav: 'Clusters', title: 'Clusters and groups',
    match: (parts) => parts.length === 1 && parts[0] === 'clusters' ? {} : null,
    render(ctx) {
      const slot = h('div', {id: 'clusters'});
      ctx.root.append(h('h1', {}, 'Clusters and groups'),
        h('p', {class: 'hint'}, 'As the node serving this page sees them; every node shows the same mesh.'), slot);
      ctx.every(2000, async () => {
        // One failed read leaves the others on the page (a token may read
        // members but not metrics, a group may have no quorum).
        const get = (p) => C.api('GET', p).then(v => ({v}), e => { if (C.aborted(e)) throw e; return {e}; });
        const [clusters, status, members, roles, metrics] =
          await Promise.all([get('/v1/clusters'), get('/v1/status'), get('/v1/members'), get('/v1/roles'), get('/metrics')]);
        if (clusters.e && status.e) throw clusters.e;
        C.clearError(ctx.root);
        C.replaceIfChanged(slot, {
          clusters: clusters.v || [], clustersErr: clusters.e && C.describe(clusters.e),
          groups: (status.v && status.v.groups) || [], statusErr: status.e && C.describe(status.e),
          node: status.v && status.v.node,
          health: Object.fromEntries(((members.v) || []).map(m => [m.name, m.status])),
          roles: roles.v || [], rolesErr: roles.e && roles.e.status !== 404 && C.describe(roles.e),
          autopilot: metrics.v ? autopilot(metrics.v) : [], metricsErr: metrics.e && C.describe(metrics.e),
        }, render);
      });
    },
  });

  // autopilot reads meshgw_autopilot_actions_total{cluster,action,result}.
  function autopilot(text) {
    const out = [];
    for (const line of String(text).split('\n')) {
      if (!line.startsWith('meshgw_autopilot_actions_total{')) continue;
      const m = line.match(/^[^{]+\{([^}]*)\}\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      for (const kv of m[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
      out.push({cluster: labels.cluster || '', action: labels.action || '', result: labels.result || '', n: Number(m[2])});
    }
    return out;
  }

  function render(d) {
    const ids = new Set(d.clusters.map(c => c.id));
    d.groups.forEach(g => ids.add(g.cluster));
    d.roles.forEach(r => ids.add(r.cluster));
    const frag = h('div', {});
    if (d.clustersErr) frag.append(h('p', {class: 'page-error'}, 'Clusters: ' + d.clustersErr));
    if (d.statusErr) frag.append(h('p', {class: 'page-error'}, 'Groups: ' + d.statusErr));
    for (const id of [...ids].sort()) {
      const c = d.clusters.find(x => x.id === id) || {id};
      const g = d.groups.find(x => x.cluster === id);
      const sec = h('section', {class: 'card cluster', 'aria-labelledby': 'cl-' + id, 'data-cluster': id},
        h('h2', {id: 'cl-' + id}, 'Cluster ', h('code', {}, id)),
        h('dl', {class: 'facts'},
          fact('Members', c.members !== undefined ? c.alive + ' alive of ' + c.members : ''),
          fact('Runners', c.runners !== undefined ? c.runners : ''),
          fact('Leader', (g && g.leader) || c.leader || h('span', {class: 'bad'}, 'none')),
          fact('Shard', (g && g.shard_id) || c.shard_id || ''),
          g ? fact('Term', g.term) : null,
          g ? fact('Applied index', g.applied_index) : null,
          g && g.heartbeat_ms ? fact('Raft timings', 'heartbeat ' + g.heartbeat_ms + ' ms, election ' + g.election_timeout_ms + ' ms') : null),
        h('p', {}, h('a', {href: C.link(['mesh'], {cluster: id})}, 'Members of ' + id)));
      if (g) {
        sec.append(C.table('Voters of ' + id, [
          {label: 'Replica', cell: r => r.id},
          {label: 'Node', cell: r => [h('strong', {}, r.node), r.node === g.leader ? h('span', {class: 'note'}, ' leader') : null]},
          {label: 'Health', cell: r => C.badge(d.health[r.node] || 'unknown')},
          {label: 'Raft address', cell: r => h('code', {}, r.addr)},
        ], g.replicas || [], r => ({class: 'row-' + (d.health[r.node] || 'unknown')})));
      } else {
        sec.append(h('p', {class: 'hint'}, 'This node holds no replica of this group.'));
      }
      const ap = d.autopilot.filter(a => a.cluster === id && a.n > 0);
      sec.append(C.table('Autopilot actions in ' + id + ' (since this node started)', [
        {label: 'Action', cell: a => a.action},
        {label: 'Result', cell: a => a.result},
        {label: 'Count', cell: a => a.n},
      ], ap));
      const rs = d.roles.filter(r => r.cluster === id);
      if (rs.length) {
        sec.append(C.table('Singleton roles of ' + id, [
          {label: 'Role', cell: r => h('strong', {}, r.role)},
          {label: 'State', cell: r => C.badge(r.state)},
          {label: 'Active', cell: r => r.active || '—'},
          {label: 'Standbys', cell: r => (r.standbys || []).join(', ')},
          {label: 'Since', cell: r => r.since ? new Date(r.since).toLocaleString() : ''},
          {label: 'Fence', cell: r => r.fence || ''},
        ], rs));
      }
      frag.append(sec);
    }
    if (d.metricsErr) frag.append(h('p', {class: 'hint'}, 'Autopilot actions: ' + d.metricsErr));
    if (d.rolesErr) frag.append(h('p', {class: 'hint'}, 'Roles: ' + d.rolesErr));
    return frag;
  }

  function fact(k, v) { return [h('dt', {}, k), h('dd', {}, v === '' || v === undefined ? '—' : v)]; }
})(window.Console);
