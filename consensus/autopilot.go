package consensus

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// Autopilot replaces a voter in steps that never cost the group its
// quorum, each of them one Raft change the next leader can pick up:
//
//  1. record the pending join in the group's own state (pendingPrefix),
//     then add the new node as a non-voter: it counts for no quorum, so a
//     join that never happens costs nothing but the record;
//  2. tell the node to start its replica (retried every tick, by whichever
//     node leads), until it answers that it has caught up;
//  3. promote it to voter with the same replica ID and drop the record;
//  4. only then remove the dead voter (the group is above its size).
//
// A dead voter that comes back between steps 3 and 4 leaves the group a
// voter above its size with every voter alive: the voter with the largest
// name other than the leader's is then removed (surplusVoter).
//
// A non-voter that has not caught up within JoinTimeout of its record is
// removed; a record without a non-voter is dropped, and a non-voter
// without a record (a leader died between the two writes, or a restore
// replaced the state) gets one, so it expires like any other.

// reservedPrefix starts every key consensus keeps for itself in a group.
// Callers cannot write under it (Apply refuses them) and List hides it. It
// starts with a NUL byte, which no caller's key space (svc/, exec/, idem/,
// acl/) does, so no caller's prefix can reach it either.
const reservedPrefix = "\x00meshgw/consensus/"

// pendingPrefix + replica ID (decimal) holds a pendingJoin.
const pendingPrefix = reservedPrefix + "join/"

// pendingJoin is a non-voter autopilot added and has not promoted yet.
type pendingJoin struct {
	Node     string `json:"node"`
	Replica  uint64 `json:"replica"`
	RaftAddr string `json:"raft_addr"`
	// Since is when the leader that wrote the record added the node (its
	// clock: a new leader's may differ by the clocks' skew).
	Since time.Time `json:"since"`
}

func pendingKey(rid uint64) string { return pendingPrefix + strconv.FormatUint(rid, 10) }

// checkReserved refuses a caller's command that touches a reserved key.
func checkReserved(cmd fsm.Command) error {
	for _, op := range cmd.Ops {
		if strings.HasPrefix(op.Key, reservedPrefix) {
			return fmt.Errorf("%w: key %q is reserved", fsm.ErrBadCommand, op.Key)
		}
	}
	return nil
}

// dropReserved removes reserved keys from a caller's list.
func dropReserved(items []fsm.Item) []fsm.Item {
	out := items[:0]
	for _, it := range items {
		if !strings.HasPrefix(it.Key, reservedPrefix) {
			out = append(out, it)
		}
	}
	return out
}

// apView is everything one autopilot decision depends on: the group's
// membership, its pending joins, the gossip view and the clock.
type apView struct {
	Cluster   string
	Self      uint64            // the leader's replica
	Voters    map[uint64]string // replica → Raft address
	NonVoters map[uint64]string
	Pending   map[uint64]pendingJoin
	Peers     []Peer
	// FailedSince: since when gossip has said a node is failed.
	FailedSince map[string]time.Time
	// UnknownSince: since when gossip has known no node at a replica's
	// Raft address (right after restarts it may just not have heard yet).
	UnknownSince map[uint64]time.Time
	// CaughtUp: non-voters that answered this tick that they have applied
	// everything the leader had committed.
	CaughtUp map[uint64]bool
	Now      time.Time
	Target   int
	// Created is the size the group was created with (bootstrap-expect):
	// a live surplus is removed only above max(Target, Created).
	Created     int
	DeadAfter   time.Duration
	JoinTimeout time.Duration
	// CCID is the membership's config change ID (new replica IDs derive
	// from it, so a node's next placement never reuses a removed ID).
	CCID uint64
}

type apKind int

const (
	apNone        apKind = iota
	apRemove             // remove Replica (voter or non-voter) and its record
	apDropRecord         // delete Replica's pending record
	apAdopt              // write a record for non-voter Replica
	apAddNonVoter        // add Peer as a non-voter
	apPromote            // make non-voter Replica a voter
)

var apKindNames = [...]string{"none", "remove", "drop-record", "adopt", "add-non-voter", "promote"}

func (k apKind) String() string { return apKindNames[k] }

// apAction is one change autopilot makes.
type apAction struct {
	Kind    apKind
	Replica uint64
	Addr    string // Replica's Raft address
	Peer    Peer   // the node to add, or the replica's node when known
	Why     string
}

func sortedIDs(m map[uint64]string) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// decide picks autopilot's next change: one per tick, the first that
// applies of: drop a stale record, adopt an unrecorded non-voter, remove
// a voter that left, remove a dead voter when the group is above its
// size, expire or promote a pending non-voter, add a non-voter to replace
// a dead voter or grow the group. While a join is pending nothing is
// added. It is pure: no I/O, no clock.
func decide(v apView) apAction {
	byAddr := map[string]Peer{}
	for _, p := range v.Peers {
		if p.RaftAddr != "" {
			byAddr[p.RaftAddr] = p
		}
	}
	for _, rid := range sortedPending(v.Pending) {
		if _, ok := v.NonVoters[rid]; !ok {
			why := "its replica is not a non-voter of the group"
			if _, voter := v.Voters[rid]; voter {
				why = "promoted"
			}
			return apAction{Kind: apDropRecord, Replica: rid, Why: why}
		}
	}
	for _, rid := range sortedIDs(v.NonVoters) {
		if _, ok := v.Pending[rid]; !ok {
			return apAction{Kind: apAdopt, Replica: rid, Addr: v.NonVoters[rid], Peer: byAddr[v.NonVoters[rid]],
				Why: "a non-voter without a pending record"}
		}
	}
	inGroup := map[string]bool{}
	var dead, left []uint64
	for _, rid := range sortedIDs(v.Voters) {
		p, known := byAddr[v.Voters[rid]]
		if known {
			inGroup[p.Name] = true
		}
		switch {
		case rid == v.Self:
		case known && p.Status == "left":
			left = append(left, rid)
		case known && p.Status == "failed":
			if since, ok := v.FailedSince[p.Name]; ok && v.Now.Sub(since) > v.DeadAfter {
				dead = append(dead, rid)
			}
		case !known:
			// Gossip may not have heard of a restarted node yet: only a
			// voter unknown for the whole timeout is dead.
			if since, ok := v.UnknownSince[rid]; ok && v.Now.Sub(since) > v.DeadAfter {
				dead = append(dead, rid)
			}
		}
	}
	if len(left) > 0 {
		return apAction{Kind: apRemove, Replica: left[0], Addr: v.Voters[left[0]], Peer: byAddr[v.Voters[left[0]]],
			Why: "left the mesh"}
	}
	voters := len(v.Voters)
	if len(dead) > 0 && voters > v.Target {
		return apAction{Kind: apRemove, Replica: dead[0], Addr: v.Voters[dead[0]], Peer: byAddr[v.Voters[dead[0]]],
			Why: "failed longer than the dead-voter timeout"}
	}
	for _, rid := range sortedIDs(v.NonVoters) {
		p, known := byAddr[v.NonVoters[rid]]
		if known {
			inGroup[p.Name] = true
		}
		pj, addr := v.Pending[rid], v.NonVoters[rid]
		switch {
		case known && p.Status == "left":
			return apAction{Kind: apRemove, Replica: rid, Addr: addr, Peer: p,
				Why: "the joining node left the mesh"}
		case v.Now.Sub(pj.Since) > v.JoinTimeout:
			return apAction{Kind: apRemove, Replica: rid, Addr: addr, Peer: p,
				Why: "did not catch up within the join timeout"}
		case known && p.Status == "alive" && v.CaughtUp[rid]:
			return apAction{Kind: apPromote, Replica: rid, Addr: addr, Peer: p, Why: "caught up"}
		}
	}
	if len(v.NonVoters) > 0 {
		return apAction{Kind: apNone, Why: "a join is pending"}
	}
	if surplus, ok := surplusVoter(v, byAddr); ok {
		return apAction{Kind: apRemove, Replica: surplus, Addr: v.Voters[surplus], Peer: byAddr[v.Voters[surplus]],
			Why: "the group is above its size with every voter alive"}
	}
	var candidate *Peer
	for _, p := range v.Peers {
		if p.Cluster == v.Cluster && p.Status == "alive" && p.RaftAddr != "" && !inGroup[p.Name] {
			p := p
			if candidate == nil || p.Name < candidate.Name {
				candidate = &p
			}
		}
	}
	if candidate != nil && (voters < v.Target || len(dead) > 0) {
		why := "grow the group"
		if len(dead) > 0 {
			why = "replace a dead voter"
		}
		return apAction{Kind: apAddNonVoter, Replica: replicaID(candidate.Name, v.CCID+1), Addr: candidate.RaftAddr,
			Peer: *candidate, Why: why}
	}
	return apAction{Kind: apNone}
}

// surplusVoter picks the voter to remove when the group has more voters
// than its target (or than it was created with, when larger) and every
// one of them is alive: a dead voter that came
// back after its replacement was promoted, before it was removed. The
// largest name other than the leader's goes, so the group keeps the
// smallest names, as a bootstrap picks them. A voter that is not alive is
// left to the dead-voter rule: it may be restarting.
func surplusVoter(v apView, byAddr map[string]Peer) (uint64, bool) {
	if len(v.Voters) <= max(v.Target, v.Created) {
		return 0, false
	}
	var pick uint64
	var pickName string
	for _, rid := range sortedIDs(v.Voters) {
		p, known := byAddr[v.Voters[rid]]
		if rid != v.Self && (!known || p.Status != "alive") {
			return 0, false
		}
		if rid != v.Self && p.Name > pickName {
			pick, pickName = rid, p.Name
		}
	}
	return pick, pickName != ""
}

func sortedPending(m map[uint64]pendingJoin) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// autopilot keeps the group's voters on live nodes (see the steps above).
// It runs on the leader only, one change per tick.
func (m *Manager) autopilot(ctx context.Context, h hosted, peers []Peer) {
	mem, err := m.nh.SyncGetShardMembership(ctx, h.Shard)
	if err != nil {
		return
	}
	pending, err := m.pendingJoins(ctx, h)
	if err != nil {
		m.log.Debug().Err(err).Msg("autopilot: read pending joins")
		return
	}
	now := time.Now()
	byAddr := map[string]Peer{}
	for _, p := range peers {
		if p.RaftAddr != "" {
			byAddr[p.RaftAddr] = p
		}
	}
	v := apView{
		Cluster: h.Cluster, Self: h.Replica, Voters: mem.Nodes, NonVoters: mem.NonVotings,
		Pending: pending, Peers: peers, CaughtUp: map[uint64]bool{}, Now: now,
		Target: m.cfg.Voters, Created: m.cfg.BootstrapExpect, DeadAfter: m.cfg.DeadVoterTimeout, JoinTimeout: m.joinTimeout(),
		FailedSince: map[string]time.Time{}, UnknownSince: map[uint64]time.Time{},
		CCID: mem.ConfigChangeID,
	}
	m.mu.Lock()
	m.unknownSince.track(mem.Nodes, byAddr, h.Replica, now, 3*m.cfg.ReconcileInterval)
	for k, t := range m.failedSince {
		v.FailedSince[k] = t
	}
	for k, t := range m.unknownSince.since {
		v.UnknownSince[k] = t
	}
	m.mu.Unlock()
	// Tell every non-voter to join (again: the call is idempotent) and
	// hear whether it has caught up.
	for rid, addr := range mem.NonVotings {
		p, ok := byAddr[addr]
		if !ok || p.Status != "alive" || p.RPCAddr == "" {
			continue
		}
		ready, err := m.tellJoin(ctx, h, p, rid, true)
		if err != nil {
			m.log.Warn().Err(err).Str("node", p.Name).Uint64("replica", rid).
				Msg("autopilot: tell non-voter to join; will retry")
			continue
		}
		v.CaughtUp[rid] = ready
	}
	a := decide(v)
	if a.Kind == apNone {
		return
	}
	log := m.log.With().Str("cluster", h.Cluster).Stringer("action", a.Kind).Uint64("replica", a.Replica).
		Str("addr", a.Addr).Str("node", a.Peer.Name).Str("why", a.Why).Logger()
	err = m.act(ctx, h, mem.ConfigChangeID, a, now)
	m.countAutopilot(h.Cluster, a.Kind, err)
	if err != nil {
		log.Warn().Err(err).Msg("autopilot: change failed; will retry")
		return
	}
	log.Info().Msg("autopilot changed the group")
}

// unknownVoters keeps, by replica, since when each voter's Raft address
// has been unknown to gossip. Only a leader keeps it, tick by tick: after
// a gap longer than maxGap (this node was not leading, or stalled) it
// starts afresh, as it cannot know what gossip said meanwhile, so a
// voter is never found unknown for longer than this node has watched.
type unknownVoters struct {
	since map[uint64]time.Time
	last  time.Time
}

// track updates the clocks from voters and the gossip view byAddr; the
// clock of a voter gossip knows again restarts.
func (u *unknownVoters) track(voters map[uint64]string, byAddr map[string]Peer, self uint64, now time.Time,
	maxGap time.Duration) {
	if u.since == nil || now.Sub(u.last) > maxGap {
		u.since = map[uint64]time.Time{}
	}
	u.last = now
	for rid, addr := range voters {
		if _, known := byAddr[addr]; known || rid == self {
			delete(u.since, rid)
		} else if _, ok := u.since[rid]; !ok {
			u.since[rid] = now
		}
	}
	for rid := range u.since {
		if _, ok := voters[rid]; !ok {
			delete(u.since, rid)
		}
	}
}

// defaultJoinTimeout bounds how long a non-voter may take to catch up when
// Config.JoinTimeout is not set.
const defaultJoinTimeout = 2 * time.Minute

func (m *Manager) joinTimeout() time.Duration {
	if m.cfg.JoinTimeout > 0 {
		return m.cfg.JoinTimeout
	}
	return defaultJoinTimeout
}

// act carries out one decision.
func (m *Manager) act(ctx context.Context, h hosted, ccid uint64, a apAction, now time.Time) error {
	switch a.Kind {
	case apDropRecord:
		return m.writePending(ctx, h, a.Replica, nil)
	case apAdopt:
		pj := pendingJoin{Node: a.Peer.Name, Replica: a.Replica, RaftAddr: a.Addr, Since: now}
		return m.writePending(ctx, h, a.Replica, &pj)
	case apRemove:
		if err := m.nh.SyncRequestDeleteReplica(ctx, h.Shard, a.Replica, ccid); err != nil {
			return fmt.Errorf("remove replica: %w", err)
		}
		return m.writePending(ctx, h, a.Replica, nil)
	case apAddNonVoter:
		rid := a.Replica
		// The record goes first: if this leader dies before the node is
		// told, the next leader finds it and tells the node, or expires it.
		pj := pendingJoin{Node: a.Peer.Name, Replica: rid, RaftAddr: a.Peer.RaftAddr, Since: now}
		if err := m.writePending(ctx, h, rid, &pj); err != nil {
			return err
		}
		if err := m.nh.SyncRequestAddNonVoting(ctx, h.Shard, rid, a.Peer.RaftAddr, ccid); err != nil {
			return fmt.Errorf("add non-voter: %w", err) // the next tick drops the record
		}
		if _, err := m.tellJoin(ctx, h, a.Peer, rid, true); err != nil {
			m.log.Warn().Err(err).Str("node", a.Peer.Name).Msg("autopilot: tell non-voter to join; will retry")
		}
		return nil
	case apPromote:
		if err := m.nh.SyncRequestAddReplica(ctx, h.Shard, a.Replica, a.Addr, ccid); err != nil {
			return fmt.Errorf("promote non-voter: %w", err)
		}
		if err := m.writePending(ctx, h, a.Replica, nil); err != nil {
			return err // a promoted replica's record is dropped next tick
		}
		// Let the node record that it is a voter now (it restarts as one);
		// if it does not hear, a restart as non-voter is promoted again by
		// the membership it replays.
		if _, err := m.tellJoin(ctx, h, a.Peer, a.Replica, false); err != nil {
			m.log.Debug().Err(err).Str("node", a.Peer.Name).Msg("autopilot: tell promoted voter")
		}
		return nil
	}
	return nil
}

// pendingJoins reads the group's pending-join records.
func (m *Manager) pendingJoins(ctx context.Context, h hosted) (map[uint64]pendingJoin, error) {
	r, err := m.readLocal(ctx, h, fsm.Query{List: &fsm.ListQuery{Prefix: pendingPrefix}})
	if err != nil {
		return nil, err
	}
	out := map[uint64]pendingJoin{}
	for _, it := range r.Items {
		var pj pendingJoin
		if err := json.Unmarshal(it.Value, &pj); err != nil || pendingKey(pj.Replica) != it.Key {
			// Not ours to understand: drop it rather than stall on it.
			m.log.Warn().Str("key", it.Key).Msg("autopilot: bad pending-join record; dropping it")
			_, _ = m.applyLocal(ctx, h, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpDelete, Key: it.Key}}})
			continue
		}
		out[pj.Replica] = pj
	}
	return out, nil
}

// writePending puts (pj != nil) or deletes rid's pending record.
func (m *Manager) writePending(ctx context.Context, h hosted, rid uint64, pj *pendingJoin) error {
	op := fsm.Op{Type: fsm.OpDelete, Key: pendingKey(rid)}
	if pj != nil {
		val, err := json.Marshal(pj)
		if err != nil {
			return err
		}
		op = fsm.Op{Type: fsm.OpPut, Key: pendingKey(rid), Value: val}
	}
	if _, err := m.applyLocal(ctx, h, fsm.Command{Ops: []fsm.Op{op}}); err != nil {
		return fmt.Errorf("write pending join of replica %d: %w", rid, err)
	}
	return nil
}

// methodJoinNonVoting is the join call autopilot makes. It is not
// methodJoin, whose handler in older versions would start any replica as
// a voter: a replica the membership holds as a non-voter then panics
// dragonboat on every start. An older node answers this method unknown
// instead, and its join expires like any that fails.
const methodJoinNonVoting = "consensus.join-non-voting"

type joinResp struct {
	// Ready: the replica runs and has applied everything the leader had
	// committed when the node asked (a linearizable read succeeded).
	Ready bool `json:"ready,omitempty"`
}

// tellJoin asks p to run replica rid of h's group (as a non-voter or,
// after promotion, a voter) and reports whether it has caught up.
func (m *Manager) tellJoin(ctx context.Context, h hosted, p Peer, rid uint64, nonVoting bool) (bool, error) {
	body, _ := json.Marshal(joinReq{Cluster: h.Cluster, Shard: h.Shard, Replica: rid, NonVoting: nonVoting})
	cctx, cancel := boundedCtx(ctx, 2*m.cfg.ProposalTimeout)
	defer cancel()
	resp, err := m.rpc.Call(cctx, p.RPCAddr, methodJoinNonVoting, body)
	if err != nil {
		return false, fmt.Errorf("join call to %s: %w", p.Name, err)
	}
	var jr joinResp
	if err := json.Unmarshal(resp, &jr); err != nil {
		return false, fmt.Errorf("join answer from %s: %w", p.Name, err)
	}
	return jr.Ready, nil
}

// caughtUp reports whether the local replica of shard has applied what
// the leader has committed: a linearizable read (ReadIndex) completes only
// then. Bounded by ProposalTimeout.
func (m *Manager) caughtUp(ctx context.Context, shard uint64) bool {
	rctx, cancel := boundedCtx(ctx, m.cfg.ProposalTimeout)
	defer cancel()
	_, err := m.nh.SyncRead(rctx, shard, fsm.AppliedQuery{})
	return err == nil
}
