package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// apFixture is a mesh of nodes n1..n5 on made-up addresses: n1..n3 are
// the group's voters, n1 leads, n4 and n5 are spares.
type apFixture struct {
	now   time.Time
	peers map[string]Peer
}

func newAPFixture() *apFixture {
	f := &apFixture{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), peers: map[string]Peer{}}
	for _, n := range []string{"n1", "n2", "n3", "n4", "n5"} {
		f.peers[n] = Peer{Name: n, Cluster: "default", RaftAddr: n + ":7000", RPCAddr: n + ":7947", Status: "alive"}
	}
	return f
}

func (f *apFixture) status(name, st string) { p := f.peers[name]; p.Status = st; f.peers[name] = p }

func (f *apFixture) view(voters ...string) apView {
	v := apView{
		Cluster: "default", Self: replicaID("n1", 0), Voters: map[uint64]string{}, NonVoters: map[uint64]string{},
		Pending: map[uint64]pendingJoin{}, FailedSince: map[string]time.Time{},
		UnknownSince: map[uint64]time.Time{}, CaughtUp: map[uint64]bool{},
		Now: f.now, Target: 3, DeadAfter: 30 * time.Second,
		JoinTimeout: 2 * time.Minute, CCID: 7,
	}
	for _, n := range voters {
		v.Voters[replicaID(n, 0)] = n + ":7000"
	}
	for _, p := range f.peers {
		v.Peers = append(v.Peers, p)
	}
	return v
}

func wantAction(t *testing.T, step string, got apAction, kind apKind, rid uint64) {
	t.Helper()
	if got.Kind != kind || got.Replica != rid {
		t.Fatalf("%s: got %s of replica %d (%s), want %s of replica %d",
			step, got.Kind, got.Replica, got.Why, kind, rid)
	}
}

// Defect 4: a voter whose Raft address gossip does not know (yet) is only
// dead once it has been unknown for the dead-voter timeout.
func TestAutopilotUnknownVoterWaitsForDeadVoterTimeout(t *testing.T) {
	f := newAPFixture()
	delete(f.peers, "n3") // gossip has not heard of n3's address
	v := f.view("n1", "n2", "n3")
	n3 := replicaID("n3", 0)
	v.UnknownSince[n3] = f.now.Add(-5 * time.Second)
	wantAction(t, "unknown for 5 s of 30", decide(v), apNone, 0)

	// Above the target size an unknown voter is not removed early either.
	v4 := f.view("n1", "n2", "n3", "n4")
	v4.UnknownSince[n3] = f.now.Add(-5 * time.Second)
	wantAction(t, "4 voters, one unknown for 5 s", decide(v4), apNone, 0)

	// Past the timeout it is replaced (through a non-voter) or removed.
	v.UnknownSince[n3] = f.now.Add(-31 * time.Second)
	wantAction(t, "unknown for 31 s", decide(v), apAddNonVoter, replicaID("n4", v.CCID+1))
	v4.UnknownSince[n3] = f.now.Add(-31 * time.Second)
	wantAction(t, "4 voters, one unknown for 31 s", decide(v4), apRemove, n3)
}

func TestAutopilotTracksUnknownSince(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	const gap = 3 * time.Second // three reconcile intervals
	voters := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	known := map[string]Peer{"a:1": {Name: "a"}, "b:1": {Name: "b"}}
	var u unknownVoters
	u.track(voters, known, 1, at(0), gap)
	u.track(voters, known, 1, at(1), gap) // keeps the first time
	if len(u.since) != 1 || !u.since[3].Equal(at(0)) {
		t.Fatalf("after two ticks: %v", u.since)
	}
	known["c:1"] = Peer{Name: "c"}
	u.track(voters, known, 1, at(2), gap)
	if len(u.since) != 0 {
		t.Fatalf("known again: %v", u.since)
	}
	delete(known, "c:1")
	u.track(voters, known, 1, at(3), gap) // the clock restarts
	if !u.since[3].Equal(at(3)) {
		t.Fatalf("unknown again: %v", u.since)
	}
	// Not leading for a while: what gossip said meanwhile is unknown, so
	// the clock starts over rather than count the time away.
	u.track(voters, known, 1, at(60), gap)
	if !u.since[3].Equal(at(60)) {
		t.Fatalf("after a gap: %v", u.since)
	}
	delete(voters, 3)
	u.track(voters, known, 1, at(61), gap)
	if len(u.since) != 0 {
		t.Fatalf("removed from the group: %v", u.since)
	}
}

// Defect 1: a dead voter is replaced through a non-voter, promoted only
// once it has caught up; the dead voter goes only after the promotion.
func TestAutopilotReplacesDeadVoterThroughNonVoter(t *testing.T) {
	f := newAPFixture()
	f.status("n3", "failed")
	v := f.view("n1", "n2", "n3")
	n3 := replicaID("n3", 0)
	v.FailedSince["n3"] = f.now.Add(-10 * time.Second)
	wantAction(t, "failed for 10 s of 30", decide(v), apNone, 0)

	v.FailedSince["n3"] = f.now.Add(-31 * time.Second)
	add := decide(v)
	n4 := replicaID("n4", v.CCID+1)
	wantAction(t, "failed for 31 s", add, apAddNonVoter, n4)
	if add.Peer.Name != "n4" || add.Addr != "n4:7000" {
		t.Fatalf("adds %+v, want n4 (smallest live name outside the group)", add)
	}

	// n4 is a non-voter with its record; it has not caught up yet.
	v.NonVoters[n4] = "n4:7000"
	v.Pending[n4] = pendingJoin{Node: "n4", Replica: n4, RaftAddr: "n4:7000", Since: f.now.Add(-time.Second)}
	wantAction(t, "non-voter still catching up", decide(v), apNone, 0)
	v.CaughtUp[n4] = true
	f.status("n4", "suspect")
	v.Peers = f.view().Peers
	wantAction(t, "caught up but suspect", decide(v), apNone, 0)
	f.status("n4", "alive")
	v.Peers = f.view().Peers
	wantAction(t, "caught up", decide(v), apPromote, n4)

	// Promoted: 4 voters, the record still there.
	delete(v.NonVoters, n4)
	v.Voters[n4] = "n4:7000"
	wantAction(t, "promoted, record left", decide(v), apDropRecord, n4)
	delete(v.Pending, n4)
	wantAction(t, "promoted", decide(v), apRemove, n3)
	delete(v.Voters, n3)
	wantAction(t, "replaced", decide(v), apNone, 0)
}

// A pending join that has not caught up within the join timeout is
// removed; records and non-voters that lost each other are reconciled.
func TestAutopilotExpiresPendingJoin(t *testing.T) {
	f := newAPFixture()
	f.status("n3", "failed")
	v := f.view("n1", "n2", "n3")
	v.FailedSince["n3"] = f.now.Add(-time.Hour)
	n4 := replicaID("n4", 3)
	v.NonVoters[n4] = "n4:7000"
	pj := pendingJoin{Node: "n4", Replica: n4, RaftAddr: "n4:7000"}
	pj.Since = f.now.Add(-v.JoinTimeout + time.Second)
	v.Pending[n4] = pj
	wantAction(t, "within the join timeout", decide(v), apNone, 0)
	pj.Since = f.now.Add(-v.JoinTimeout - time.Second)
	v.Pending[n4] = pj
	wantAction(t, "past the join timeout", decide(v), apRemove, n4)
	// Expired even when its node is gone from gossip.
	delete(f.peers, "n4")
	v.Peers = f.view().Peers
	wantAction(t, "past the join timeout, node unknown", decide(v), apRemove, n4)

	// A leader died between the record and the add: the record goes.
	delete(v.NonVoters, n4)
	wantAction(t, "record without a non-voter", decide(v), apDropRecord, n4)
	// Or between the add and the record (or a restore replaced the
	// state): the non-voter gets a record, so it can expire.
	delete(v.Pending, n4)
	v.NonVoters[n4] = "n4:7000"
	wantAction(t, "non-voter without a record", decide(v), apAdopt, n4)
}

// A voter that left is removed at once, even while a join is pending.
func TestAutopilotRemovesLeftVoterAtOnce(t *testing.T) {
	f := newAPFixture()
	f.status("n2", "left")
	v := f.view("n1", "n2", "n3")
	wantAction(t, "left", decide(v), apRemove, replicaID("n2", 0))
	n4 := replicaID("n4", 3)
	v.NonVoters[n4] = "n4:7000"
	v.Pending[n4] = pendingJoin{Node: "n4", Replica: n4, Since: f.now}
	wantAction(t, "left, join pending", decide(v), apRemove, replicaID("n2", 0))
	// A small group grows, through a non-voter too, never with a node
	// that left (n2).
	g := f.view("n1")
	wantAction(t, "one voter", decide(g), apAddNonVoter, replicaID("n3", g.CCID+1))
}

// Callers can neither write nor list the keys autopilot keeps.
func TestReservedKeysAreHidden(t *testing.T) {
	err := checkReserved(fsm.Command{Ops: []fsm.Op{
		{Type: fsm.OpPut, Key: "svc/a"}, {Type: fsm.OpDelete, Key: pendingKey(1)}}})
	if !errors.Is(err, fsm.ErrBadCommand) {
		t.Fatalf("write of a reserved key: %v", err)
	}
	if err := checkReserved(fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: "svc/a"}}}); err != nil {
		t.Fatal(err)
	}
	items := dropReserved([]fsm.Item{{Key: pendingKey(2)}, {Key: "exec/1"}})
	if len(items) != 1 || items[0].Key != "exec/1" {
		t.Fatalf("list: %+v", items)
	}
	for _, p := range []string{"svc/", "exec/", "idem/", "acl/"} {
		if strings.HasPrefix(reservedPrefix, p) || strings.HasPrefix(p, reservedPrefix) {
			t.Fatalf("reserved prefix overlaps %q", p)
		}
	}
}

// A dead voter that comes back after its replacement was promoted, before
// it was removed, leaves 4 live voters: one goes, the largest name but the
// leader's, and only once every voter is alive.
func TestAutopilotShrinksLiveSurplusToTarget(t *testing.T) {
	f := newAPFixture()
	v := f.view("n1", "n2", "n3", "n4")
	wantAction(t, "4 live voters", decide(v), apRemove, replicaID("n4", 0))

	f.status("n2", "suspect")
	v = f.view("n1", "n2", "n3", "n4")
	wantAction(t, "4 voters, one suspect", decide(v), apNone, 0)

	f = newAPFixture()
	v = f.view("n1", "n2", "n3", "n4")
	v.Self = replicaID("n4", 0) // n4 leads: it stays
	wantAction(t, "4 live voters, n4 leading", decide(v), apRemove, replicaID("n3", 0))

	v = f.view("n1", "n2", "n3")
	wantAction(t, "3 live voters", decide(v), apNone, 0)
}

// A group created larger than the target (bootstrap-expect 5, raft-voters
// 3) is not shrunk below its creation size.
func TestAutopilotKeepsCreatedSize(t *testing.T) {
	f := newAPFixture()
	v := f.view("n1", "n2", "n3", "n4", "n5")
	v.Created = 5
	wantAction(t, "5 live voters created as 5", decide(v), apNone, 0)
}
