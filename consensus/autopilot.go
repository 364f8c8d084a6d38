package consensus

import (
	"context"
	"encoding/json"
	"time"
)

// autopilot keeps the group's voters on live nodes: it removes voters that
// left, replaces voters failed for longer than DeadVoterTimeout, and grows
// the group to Voters with live nodes of the cluster. One change per tick;
// a dead voter is only removed once its replacement is in, unless the group
// is above its target size.
func (m *Manager) autopilot(ctx context.Context, h hosted, peers []Peer) {
	if m.retryJoins(ctx) {
		return
	}
	mem, err := m.nh.SyncGetShardMembership(ctx, h.Shard)
	if err != nil {
		return
	}
	byAddr := map[string]Peer{}
	for _, p := range peers {
		if p.RaftAddr != "" {
			byAddr[p.RaftAddr] = p
		}
	}
	inGroup := map[string]bool{}
	var dead, left []uint64
	m.mu.Lock()
	for rid, addr := range mem.Nodes {
		p, known := byAddr[addr]
		if known {
			inGroup[p.Name] = true
		}
		switch {
		case rid == h.Replica:
		case known && p.Status == "left":
			left = append(left, rid)
		case known && p.Status == "failed":
			if since, ok := m.failedSince[p.Name]; ok && time.Since(since) > m.cfg.DeadVoterTimeout {
				dead = append(dead, rid)
			}
		case !known:
			dead = append(dead, rid) // reaped from gossip long ago
		}
	}
	m.mu.Unlock()
	voters := len(mem.Nodes)
	var candidate *Peer
	for _, p := range peers {
		if p.Cluster == h.Cluster && p.Status == "alive" && p.RaftAddr != "" && !inGroup[p.Name] {
			p := p
			if candidate == nil || p.Name < candidate.Name {
				candidate = &p
			}
		}
	}
	remove := func(rid uint64, why string) {
		if err := m.nh.SyncRequestDeleteReplica(ctx, h.Shard, rid, mem.ConfigChangeID); err != nil {
			m.log.Warn().Err(err).Uint64("replica", rid).Msg("autopilot: remove voter")
			return
		}
		m.log.Info().Str("cluster", h.Cluster).Uint64("replica", rid).Str("addr", mem.Nodes[rid]).Str("why", why).Msg("autopilot removed a voter")
	}
	switch {
	case len(left) > 0:
		remove(left[0], "left the mesh")
	case len(dead) > 0 && voters > m.cfg.Voters:
		remove(dead[0], "failed longer than the dead-voter timeout")
	case candidate != nil && (voters < m.cfg.Voters || len(dead) > 0):
		m.add(ctx, h, *candidate, mem.ConfigChangeID)
	}
}

// add makes p a voter with a fresh replica ID and tells it to join.
func (m *Manager) add(ctx context.Context, h hosted, p Peer, ccid uint64) {
	rid := replicaID(p.Name, ccid+1)
	if err := m.nh.SyncRequestAddReplica(ctx, h.Shard, rid, p.RaftAddr, ccid); err != nil {
		m.log.Warn().Err(err).Str("node", p.Name).Msg("autopilot: add voter")
		return
	}
	body, _ := json.Marshal(joinReq{Cluster: h.Cluster, Shard: h.Shard, Replica: rid})
	if _, err := m.rpc.Call(ctx, p.RPCAddr, methodJoin, body); err != nil {
		// The replica is in the configuration already: keep telling the
		// node until it starts it (retried every tick by retryJoins).
		m.log.Warn().Err(err).Str("node", p.Name).Msg("autopilot: tell new voter to join; will retry")
		m.mu.Lock()
		m.pendingJoins[p.Name] = pendingJoin{addr: p.RPCAddr, body: body}
		m.mu.Unlock()
		return
	}
	m.log.Info().Str("cluster", h.Cluster).Str("node", p.Name).Uint64("replica", rid).Msg("autopilot added a voter")
}

type pendingJoin struct {
	addr string
	body []byte
}

// retryJoins re-sends join requests that failed; it reports whether any is
// still pending (autopilot makes no other change meanwhile).
func (m *Manager) retryJoins(ctx context.Context) bool {
	m.mu.Lock()
	pending := make(map[string]pendingJoin, len(m.pendingJoins))
	for k, v := range m.pendingJoins {
		pending[k] = v
	}
	m.mu.Unlock()
	for name, pj := range pending {
		if _, err := m.rpc.Call(ctx, pj.addr, methodJoin, pj.body); err == nil {
			m.mu.Lock()
			delete(m.pendingJoins, name)
			m.mu.Unlock()
			m.log.Info().Str("node", name).Msg("autopilot: new voter joined")
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pendingJoins) > 0
}
