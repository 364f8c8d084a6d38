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
			} else {
				m.checkRemoved(ctx, h, peers)
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
	// NonVoting: the replica was added as a non-voter (promoted later);
	// false once it has been promoted.
	NonVoting bool `json:"non_voting,omitempty"`
}

// serveJoin starts a replica the group's leader just added, or, when it
// runs already, notes a promotion. It answers whether the replica has
// caught up with the leader (autopilot promotes it then).
func (m *Manager) serveJoin(ctx context.Context, r *transport.Request) ([]byte, error) {
	if !m.started.Load() {
		return nil, transport.Errorf(codeNotBootstrapped, "%s is starting", m.cfg.NodeName)
	}
	caller, err := m.callerOf(r)
	if err != nil {
		return nil, err
	}
	var req joinReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if req.Shard != ShardID(req.Cluster) || req.Replica == 0 {
		return nil, transport.Errorf(codeBad, "shard %d is not cluster %q's", req.Shard, req.Cluster)
	}
	old, hosts := m.hostedShard(req.Cluster)
	var drop *hosted
	if hosts && old.Replica != req.Replica {
		drop = &old
	}
	if err := m.verifyJoin(ctx, caller, req, drop); err != nil {
		m.log.Warn().Err(err).Str("caller", caller.Name).Str("cluster", req.Cluster).Msg("join refused")
		return nil, err
	}
	if hosts {
		if old.Replica == req.Replica {
			if old.NonVoting && !req.NonVoting {
				// Promoted: restart as a voter from now on.
				if err := m.markPromoted(req.Cluster, req.Replica); err != nil {
					return nil, fmt.Errorf("join cluster %s: %w", req.Cluster, err)
				}
			}
			return json.Marshal(joinResp{Ready: m.caughtUp(ctx, old.Shard)})
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
	h := hosted{Cluster: req.Cluster, Shard: req.Shard, Replica: req.Replica, NonVoting: req.NonVoting}
	if err := m.startReplica(h, nil, true); err != nil {
		return nil, fmt.Errorf("join cluster %s: %w", req.Cluster, err)
	}
	m.log.Info().Str("cluster", req.Cluster).Uint64("replica", req.Replica).Bool("non_voting", req.NonVoting).
		Str("by", r.Peer).Msg("joined the cluster's Raft group")
	return json.Marshal(joinResp{})
}
