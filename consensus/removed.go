package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// A voter cut off from its group long enough is removed by autopilot on
// the majority side. It never hears of it: a removed replica gets no more
// messages. After the heal it would keep a replica with the old
// membership and no leader, and time out every call it serves instead of
// forwarding it. So a replica that has known no leader for
// removedCheckAfter asks peers that host the group whether it is still a
// member; each answers from a linearizable read of the membership (only a
// side with quorum can answer), and dragonboat keeps removed replica IDs
// for good. When peers say it was removed, the node drops its replica and
// its data and forwards from then on; autopilot may add it back later as a
// fresh replica. It stays `seen`: it never bootstraps.
const methodMembership = "consensus.membership"

type membershipReq struct {
	Cluster string `json:"cluster"`
	Replica uint64 `json:"replica"`
	// Also, when set, asks whether that replica is a member too (a join
	// being verified: the replica that replaces Replica).
	Also uint64 `json:"also,omitempty"`
}

type membershipResp struct {
	// Member: the replica is a voter, non-voter or witness of the group.
	Member bool `json:"member"`
	// Removed: the group removed the replica; it may never rejoin with it.
	Removed bool `json:"removed"`
	// AlsoMember: the request's Also replica is a member.
	AlsoMember bool `json:"also_member,omitempty"`
}

// removedCheckAfter is how long a replica knows no leader before it asks.
func (m *Manager) removedCheckAfter() time.Duration {
	election := time.Duration(m.cfg.ElectionRTT*m.cfg.RTTMillisecond) * time.Millisecond
	return max(5*election, 2*time.Second)
}

// serveMembership answers whether a replica is still in the group, from a
// linearizable read of the membership. A node of the group's cluster may
// ask (only those host its replicas); the answer is what every member of
// the group could read.
func (m *Manager) serveMembership(ctx context.Context, r *transport.Request) ([]byte, error) {
	if !m.started.Load() {
		return nil, transport.Errorf(codeNotBootstrapped, "%s is starting", m.cfg.NodeName)
	}
	caller, err := m.callerOf(r)
	if err != nil {
		return nil, err
	}
	var req membershipReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if caller.Cluster != req.Cluster {
		// Only the group's own nodes host its replicas and ask.
		return nil, transport.Errorf(codeForbidden, "membership of cluster %s asked by %s, a node of cluster %s",
			req.Cluster, caller.Name, caller.Cluster)
	}
	h, ok := m.hostedShard(req.Cluster)
	if !ok {
		return nil, transport.Errorf(codeNotHosting, "%s hosts no replica of cluster %s", m.cfg.NodeName, req.Cluster)
	}
	rctx, cancel := boundedCtx(ctx, m.cfg.ProposalTimeout)
	defer cancel()
	mem, err := m.nh.SyncGetShardMembership(rctx, h.Shard)
	if err != nil {
		return nil, remoteErr(m.mapErr(h.Shard, err))
	}
	var resp membershipResp
	_, resp.Removed = mem.Removed[req.Replica]
	for _, set := range []map[uint64]string{mem.Nodes, mem.NonVotings, mem.Witnesses} {
		if _, in := set[req.Replica]; in {
			resp.Member = true
		}
		if _, in := set[req.Also]; in && req.Also != 0 {
			resp.AlsoMember = true
		}
	}
	return json.Marshal(resp)
}

// checkRemoved drops h when it has known no leader for removedCheckAfter
// and the hosting peers that can read the membership say it was removed
// (two of them when two answer; one when only one hosts). It runs on the
// reconcile loop.
func (m *Manager) checkRemoved(ctx context.Context, h hosted, peers []Peer) {
	lid, _, valid, err := m.nh.GetLeaderID(h.Shard)
	if err == nil && valid && lid != 0 {
		m.mu.Lock()
		delete(m.leaderless, h.Shard)
		m.mu.Unlock()
		return
	}
	now := time.Now()
	m.mu.Lock()
	since, ok := m.leaderless[h.Shard]
	if !ok {
		m.leaderless[h.Shard] = now
	}
	m.mu.Unlock()
	if !ok || now.Sub(since) < m.removedCheckAfter() {
		return
	}
	body, err := json.Marshal(membershipReq{Cluster: h.Cluster, Replica: h.Replica})
	if err != nil {
		return
	}
	asked, removed, answered := 0, 0, 0
	for _, p := range peers {
		if p.Cluster != h.Cluster || !p.Hosting || p.Status != "alive" || p.RPCAddr == "" ||
			p.Name == m.cfg.NodeName || asked == 3 {
			continue
		}
		asked++
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		data, err := m.rpc.Call(cctx, p.RPCAddr, methodMembership, body)
		cancel()
		var resp membershipResp
		if err != nil || json.Unmarshal(data, &resp) != nil {
			continue // cut off too, no quorum there, or an older node
		}
		answered++
		if resp.Removed && !resp.Member {
			removed++
		}
	}
	if removed == 0 || removed < min(2, answered) {
		return
	}
	m.log.Warn().Str("cluster", h.Cluster).Uint64("replica", h.Replica).Int("peers_agreeing", removed).
		Msg("this node's replica was removed from the group while it was cut off; dropping it and " +
			"forwarding requests to the group until autopilot adds this node again")
	if err := m.dropReplica(h); err != nil {
		m.log.Error().Err(err).Str("cluster", h.Cluster).Msg("drop the removed replica")
	}
}

// dropReplica stops h, forgets it and removes its data.
func (m *Manager) dropReplica(h hosted) error {
	// Forgotten before it stops, so an operation that finds the replica
	// gone (ErrShardNotFound) sees it unhosted and forwards (droppedUnder).
	m.mu.Lock()
	delete(m.shards, h.Cluster)
	delete(m.leaderless, h.Shard)
	m.synced.forget(h.Shard)
	err := m.saveShards()
	m.mu.Unlock()
	if serr := m.nh.StopReplica(h.Shard, h.Replica); serr != nil {
		m.log.Debug().Err(serr).Msg("stop removed replica")
	}
	m.mu.Lock()
	if b := m.batchers[h.Shard]; b != nil {
		b.close()
		delete(m.batchers, h.Shard)
	}
	m.mu.Unlock()
	if h.Cluster == m.cfg.LocalCluster && m.cfg.OnHosting != nil {
		m.cfg.OnHosting(false)
	}
	if err != nil {
		return fmt.Errorf("save hosted groups: %w", err)
	}
	var rerr error
	for i := 0; i < 50; i++ {
		if rerr = m.nh.RemoveData(h.Shard, h.Replica); rerr == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("remove the removed replica's data: %w", rerr)
}
