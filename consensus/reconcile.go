package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
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

// maybeBootstrap creates the local cluster's group once BootstrapExpect
// live nodes of it have been seen, stable for BootstrapStable: the
// BootstrapExpect alive nodes with the smallest names are its first voters,
// a choice every node makes alike from the same gossip view. A group that
// already exists anywhere is never bootstrapped again.
func (m *Manager) maybeBootstrap(ctx context.Context, peers []Peer) {
	n := m.cfg.BootstrapExpect
	if n == 0 {
		return
	}
	var alive []Peer
	for _, p := range peers {
		if p.Cluster == m.cfg.LocalCluster && p.Status == "alive" && p.RaftAddr != "" && p.RPCAddr != "" {
			alive = append(alive, p)
		}
	}
	if m.joinBootstrapRound(ctx, alive) {
		return
	}
	if len(alive) < n {
		m.setCandidates("")
		return
	}
	sort.Slice(alive, func(i, j int) bool { return alive[i].Name < alive[j].Name })
	chosen := alive[:n]
	var names []string
	for _, p := range chosen {
		names = append(names, p.Name)
	}
	key := strings.Join(names, ",")
	if !m.setCandidates(key) && n > 1 {
		return // the set just changed: wait for it to settle
	}
	m.mu.Lock()
	stable := time.Since(m.stableSince) >= m.cfg.BootstrapStable || n == 1
	m.mu.Unlock()
	if !stable {
		return
	}
	self := -1
	for i, p := range chosen {
		if p.Name == m.cfg.NodeName {
			self = i
		}
	}
	shard := ShardID(m.cfg.LocalCluster)
	// Anyone already hosting the group? If it is not a peer of this very
	// bootstrap (same chosen set, created moments ago), the group exists:
	// wait to be added by its leader instead of creating a second one.
	inChosen := map[string]bool{}
	for _, p := range chosen {
		inChosen[p.Name] = true
	}
	for _, p := range alive {
		if p.Name == m.cfg.NodeName {
			continue
		}
		info, err := m.info(ctx, p.RPCAddr, m.cfg.LocalCluster)
		if err != nil {
			m.log.Debug().Err(err).Str("peer", p.Name).Msg("bootstrap: peer not answering yet")
			return
		}
		sameBootstrap := inChosen[p.Name] && info.Replica == replicaID(p.Name, 0) &&
			!info.BootstrappedAt.IsZero() && time.Since(info.BootstrappedAt) < bootstrapWindow
		if info.Hosts && !sameBootstrap {
			if self >= 0 {
				m.log.Info().Str("cluster", m.cfg.LocalCluster).Str("peer", p.Name).Msg("group already exists; waiting to be added")
			}
			return
		}
	}
	if self < 0 {
		return
	}
	members := map[uint64]string{}
	for _, p := range chosen {
		members[replicaID(p.Name, 0)] = p.RaftAddr
	}
	h := hosted{Cluster: m.cfg.LocalCluster, Shard: shard, Replica: replicaID(m.cfg.NodeName, 0), BootstrappedAt: time.Now(), Initial: members}
	if err := m.startReplica(h, members, false); err != nil {
		m.log.Error().Err(err).Str("cluster", h.Cluster).Msg("bootstrap failed")
		return
	}
	m.log.Info().Str("cluster", h.Cluster).Strs("voters", names).Msg("bootstrapped the cluster's Raft group")
}

// joinBootstrapRound starts this node's replica when a peer bootstrapped
// the group with this node among its initial members (this node was slower
// to see the set, or the set changed since). It reports whether it did.
func (m *Manager) joinBootstrapRound(ctx context.Context, alive []Peer) bool {
	self := replicaID(m.cfg.NodeName, 0)
	for _, p := range alive {
		if p.Name == m.cfg.NodeName {
			continue
		}
		info, err := m.info(ctx, p.RPCAddr, m.cfg.LocalCluster)
		if err != nil || !info.Hosts || info.BootstrappedAt.IsZero() {
			continue
		}
		if addr, ok := info.Initial[self]; !ok || addr != m.cfg.RaftAdvertiseAddr {
			continue
		}
		h := hosted{Cluster: m.cfg.LocalCluster, Shard: ShardID(m.cfg.LocalCluster), Replica: self,
			BootstrappedAt: info.BootstrappedAt, Initial: info.Initial}
		if err := m.startReplica(h, info.Initial, false); err != nil {
			m.log.Error().Err(err).Msg("start bootstrap replica")
			return false
		}
		m.log.Info().Str("cluster", h.Cluster).Str("peer", p.Name).Msg("started this node's replica of the group a peer bootstrapped")
		return true
	}
	return false
}

// setCandidates records the bootstrap candidate set; it reports whether the
// set is unchanged.
func (m *Manager) setCandidates(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.candidates == key {
		return true
	}
	m.candidates, m.stableSince = key, time.Now()
	return false
}

type infoReq struct {
	Cluster string `json:"cluster"`
}

type infoResp struct {
	Hosts          bool              `json:"hosts"`
	Replica        uint64            `json:"replica,omitempty"`
	BootstrappedAt time.Time         `json:"bootstrapped_at,omitzero"`
	Initial        map[uint64]string `json:"initial,omitempty"`
}

// bootstrapWindow: a peer that created the group by bootstrap within this
// window is taken to be part of the same bootstrap round.
const bootstrapWindow = time.Minute

func (m *Manager) info(ctx context.Context, addr, cluster string) (infoResp, error) {
	body, _ := json.Marshal(infoReq{Cluster: cluster})
	resp, err := m.rpc.Call(ctx, addr, methodInfo, body)
	if err != nil {
		return infoResp{}, err
	}
	var out infoResp
	err = json.Unmarshal(resp, &out)
	return out, err
}

func (m *Manager) serveInfo(ctx context.Context, r *transport.Request) ([]byte, error) {
	var req infoReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	h, ok := m.hostedShard(req.Cluster)
	return json.Marshal(infoResp{Hosts: ok, Replica: h.Replica, BootstrappedAt: h.BootstrappedAt, Initial: h.Initial})
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
	var req joinReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if req.Shard != ShardID(req.Cluster) || req.Replica == 0 {
		return nil, transport.Errorf(codeBad, "shard %d is not cluster %q's", req.Shard, req.Cluster)
	}
	if old, ok := m.hostedShard(req.Cluster); ok {
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
	h := hosted{Cluster: req.Cluster, Shard: req.Shard, Replica: req.Replica, NonVoting: req.NonVoting}
	if err := m.startReplica(h, nil, true); err != nil {
		return nil, fmt.Errorf("join cluster %s: %w", req.Cluster, err)
	}
	m.log.Info().Str("cluster", req.Cluster).Uint64("replica", req.Replica).Bool("non_voting", req.NonVoting).
		Str("by", r.Peer).Msg("joined the cluster's Raft group")
	return json.Marshal(joinResp{})
}
