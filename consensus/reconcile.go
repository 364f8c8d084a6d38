package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// loop runs bootstrap and autopilot every ReconcileInterval.
const firstReconcile = 200 * time.Millisecond

func (m *Manager) loop() {
	defer m.wg.Done()
	// The first pass comes soon after Start (gossip starts right after
	// consensus), so a single node (-dev) takes writes within a moment
	// rather than after a whole interval.
	t := time.NewTimer(min(firstReconcile, m.cfg.ReconcileInterval))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			t.Reset(m.cfg.ReconcileInterval)
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.OpTimeout)
		peers := m.members.Peers()
		m.trackFailures(peers)
		if _, ok := m.hostedShard(m.cfg.LocalCluster); !ok {
			m.maybeBootstrap(ctx, peers)
		}
		m.mu.Lock()
		var hs []hosted
		for _, h := range m.shards {
			hs = append(hs, h)
		}
		m.mu.Unlock()
		for _, h := range hs {
			if m.IsLeader(h.Cluster) {
				m.autopilot(ctx, h, peers)
			}
		}
		cancel()
	}
}

// trackFailures remembers since when each member has been failed.
func (m *Manager) trackFailures(peers []Peer) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range peers {
		if p.Status == "failed" {
			seen[p.Name] = true
			if _, ok := m.failedSince[p.Name]; !ok {
				m.failedSince[p.Name] = now
			}
		}
	}
	for n := range m.failedSince {
		if !seen[n] {
			delete(m.failedSince, n)
		}
	}
}

type joinReq struct {
	Cluster string `json:"cluster"`
	Shard   uint64 `json:"shard"`
	Replica uint64 `json:"replica"`
}

// serveJoin starts a replica the group's leader just added.
func (m *Manager) serveJoin(ctx context.Context, r *transport.Request) ([]byte, error) {
	var req joinReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if req.Shard != ShardID(req.Cluster) || req.Replica == 0 {
		return nil, transport.Errorf(codeBad, "shard %d is not cluster %q's", req.Shard, req.Cluster)
	}
	if old, ok := m.hostedShard(req.Cluster); ok {
		if old.Replica == req.Replica {
			return []byte("{}"), nil
		}
		// An earlier replica of ours was removed (we were down too long):
		// drop it and its data, then join afresh.
		if err := m.nh.StopReplica(old.Shard, old.Replica); err != nil {
			m.log.Debug().Err(err).Msg("stop removed replica")
		}
		m.mu.Lock()
		if b := m.batchers[old.Shard]; b != nil {
			b.close()
			delete(m.batchers, old.Shard)
		}
		delete(m.shards, req.Cluster)
		m.mu.Unlock()
		for i := 0; i < 50; i++ {
			if err := m.nh.RemoveData(old.Shard, old.Replica); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if req.Cluster == m.cfg.LocalCluster {
		// Seen before starting: once added, this node must never
		// bootstrap, even if the replica is removed again later.
		m.bootMu.Lock()
		err := m.markSeen("added to the group by " + r.Peer)
		m.bootMu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("join cluster %s: %w", req.Cluster, err)
		}
	}
	h := hosted{Cluster: req.Cluster, Shard: req.Shard, Replica: req.Replica}
	if err := m.startReplica(h, nil, true); err != nil {
		return nil, fmt.Errorf("join cluster %s: %w", req.Cluster, err)
	}
	m.log.Info().Str("cluster", req.Cluster).Uint64("replica", req.Replica).Str("by", r.Peer).Msg("joined the cluster's Raft group")
	return []byte("{}"), nil
}

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
