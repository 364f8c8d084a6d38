package consensus

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func peer(name, status string) Peer {
	return Peer{Name: name, Cluster: "default", RaftAddr: "raft-" + name, RPCAddr: "rpc-" + name, Status: status}
}

// roundOf is the info answer of a replica of the round voters created at
// at, as the node named from reports it.
func roundOf(from string, at time.Time, voters ...string) infoResp {
	init := map[uint64]string{}
	for _, v := range voters {
		init[replicaID(v, 0)] = "raft-" + v
	}
	return infoResp{Hosts: true, Replica: replicaID(from, 0), BootstrappedAt: at, Initial: init}
}

// view is self's view of members n1..nN, all alive and answering "not
// hosting", with a candidate set stable for long enough.
func view(self string, n int) bootView {
	v := bootView{Self: self, Cluster: "default", SelfRaft: "raft-" + self, SelfReplica: replicaID(self, 0),
		Expect: 3, Answers: map[string]infoResp{}, Now: t0, Stable: 2 * time.Second, Window: bootstrapWindow}
	var names []string
	for i := 1; i <= n; i++ {
		name := "n" + string(rune('0'+i))
		v.Members = append(v.Members, peer(name, "alive"))
		if name != self {
			v.Answers[name] = infoResp{}
		}
		names = append(names, name)
	}
	v.Candidates = strings.Join(names[:min(3, n)], ",")
	v.CandidatesSince = t0.Add(-time.Minute)
	return v
}

func setStatus(v *bootView, name, status string) {
	for i := range v.Members {
		if v.Members[i].Name == name {
			v.Members[i].Status = status
		}
	}
	if status != "alive" {
		delete(v.Answers, name)
	}
}

func expect(t *testing.T, d bootDecision, act bootAction, reason string) {
	t.Helper()
	if d.Action != act || !strings.Contains(d.Reason, reason) {
		t.Fatalf("decision %s (%q); want %s with a reason containing %q", d.Action, d.Reason, act, reason)
	}
}

// Defect 0: n1 (a voter) failed, n2 and n3 host the round {n1,n2,n3}; n4
// must never create, whatever else it sees.
func TestDecideVoterFailedNeverCreates(t *testing.T) {
	v := view("n4", 5)
	setStatus(&v, "n1", "failed")
	// n1 failed and nobody probed (nothing tagged): wait, naming n1.
	expect(t, decideBootstrap(v), actWait, "n1 is failed; it may host the group")

	// n2 and n3 answer that they host the round: the group exists.
	v.Answers["n2"] = roundOf("n2", t0.Add(-10*time.Second), "n1", "n2", "n3")
	v.Answers["n3"] = roundOf("n3", t0.Add(-10*time.Second), "n1", "n2", "n3")
	expect(t, decideBootstrap(v), actSeen, "n2 hosts the group")

	// Even once n1 is gone from gossip altogether and n4 is among the
	// three smallest names, hosts decide.
	v.Members = v.Members[1:]
	v.Candidates = "n2,n3,n4"
	expect(t, decideBootstrap(v), actSeen, "hosts the group")

	// And once seen, nothing else matters.
	v.Seen = true
	v.Answers = nil
	expect(t, decideBootstrap(v), actWait, "the group exists")
}

func TestDecideWaitsForEveryMember(t *testing.T) {
	for _, status := range []string{"suspect", "failed", "left"} {
		v := view("n1", 4)
		setStatus(&v, "n4", status)
		expect(t, decideBootstrap(v), actWait, "n4 is "+status)
	}
	v := view("n1", 4)
	delete(v.Answers, "n3")
	expect(t, decideBootstrap(v), actWait, "n3 did not answer")

	v = view("n1", 2)
	expect(t, decideBootstrap(v), actWait, "waiting for 1 more nodes of cluster default (bootstrap-expect 3)")
}

func TestDecideOnlyInitiatorCreates(t *testing.T) {
	d := decideBootstrap(view("n1", 4))
	expect(t, d, actCreate, "initiator")
	if got := peerNames(d.Chosen); got != "n1,n2,n3" {
		t.Fatalf("chosen %s", got)
	}
	expect(t, decideBootstrap(view("n2", 4)), actWait, "waiting for n1 to create the group")
	expect(t, decideBootstrap(view("n4", 4)), actWait, "waiting for n1")

	// The candidate set must be stable for BootstrapStable.
	v := view("n1", 4)
	v.CandidatesSince = t0.Add(-time.Second)
	expect(t, decideBootstrap(v), actWait, "must stay the same")
	v.Candidates = "n1,n2,n4"
	d = decideBootstrap(v)
	expect(t, d, actWait, "changed to n1,n2,n3")
	if d.Candidates != "n1,n2,n3" {
		t.Fatalf("candidates %q", d.Candidates)
	}
	// A single node (-dev) creates at once.
	v = view("n1", 1)
	v.Expect, v.Candidates, v.CandidatesSince = 1, "", time.Time{}
	expect(t, decideBootstrap(v), actWait, "changed")
	v.Candidates, v.CandidatesSince = "n1", t0
	expect(t, decideBootstrap(v), actCreate, "initiator")
}

func TestDecideJoinsOnlyItsOwnRecentRound(t *testing.T) {
	at := t0.Add(-5 * time.Second)
	v := view("n2", 4)
	v.Answers["n1"] = roundOf("n1", at, "n1", "n2", "n3")
	d := decideBootstrap(v)
	expect(t, d, actJoin, "n1 bootstrapped")
	if d.Peer != "n1" || !sameRound(d.Round, v.Answers["n1"]) {
		t.Fatalf("join %s %+v", d.Peer, d.Round)
	}
	// A joinable round is taken even while another member is suspect:
	// joining creates nothing.
	setStatus(&v, "n4", "suspect")
	expect(t, decideBootstrap(v), actJoin, "n1")

	// Not a first voter of the round: seen.
	v = view("n4", 4)
	v.Answers["n1"] = roundOf("n1", at, "n1", "n2", "n3")
	expect(t, decideBootstrap(v), actSeen, "n1 hosts the group")

	// Window expiry, by this node's clock or by the host's.
	v = view("n2", 4)
	v.Answers["n1"] = roundOf("n1", t0.Add(-bootstrapWindow), "n1", "n2", "n3")
	expect(t, decideBootstrap(v), actSeen, "n1 hosts the group")
	r := roundOf("n1", t0, "n1", "n2", "n3")
	r.AgeMs = bootstrapWindow.Milliseconds()
	v.Answers["n1"] = r
	expect(t, decideBootstrap(v), actSeen, "n1 hosts the group")

	// A replica that joined (no bootstrap time) shows the group exists.
	v.Answers["n1"] = infoResp{Hosts: true, Replica: replicaID("n1", 7)}
	expect(t, decideBootstrap(v), actSeen, "n1 hosts the group")

	// This node's entry at another address (a new node under an old
	// name): not its round.
	v = view("n2", 4)
	r = roundOf("n1", at, "n1", "n2", "n3")
	r.Initial[replicaID("n2", 0)] = "elsewhere"
	v.Answers["n1"] = r
	expect(t, decideBootstrap(v), actSeen, "n1 hosts the group")
}

// Defect 3: two rounds with different initial maps are not one round.
func TestDecideDifferentInitialMapsAreDifferentRounds(t *testing.T) {
	at := t0.Add(-5 * time.Second)
	a := roundOf("n1", at, "n1", "n2", "n3")
	b := roundOf("n3", at, "n2", "n3", "n4")
	if sameRound(a, b) {
		t.Fatal("rounds with different initial maps count as one")
	}
	if !sameRound(a, roundOf("n3", at, "n1", "n2", "n3")) {
		t.Fatal("two replicas of one round are not the same round")
	}
	if sameRound(a, roundOf("n3", at.Add(time.Millisecond), "n1", "n2", "n3")) {
		t.Fatal("rounds created at different times count as one")
	}
	// n2 is a first voter of both: it must join neither.
	v := view("n2", 4)
	v.Answers["n1"], v.Answers["n3"] = a, b
	expect(t, decideBootstrap(v), actSeen, "n1 and n3 host different bootstrap rounds")
}

func TestCheckConflicts(t *testing.T) {
	start := t0
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	probe := func(peer string, sent int, resp infoResp) probeRec {
		return probeRec{Peer: peer, Sent: at(sent), Answered: at(sent + 1), Resp: resp}
	}
	jProp := bootProposal{Initiator: "n4", Members: []string{"n4", "n5", "n6"}}
	own := bootProposal{Initiator: "n1", Members: []string{"n1", "n2", "n3"}, At: at(0)}

	// No other initiator known: fine.
	reg := map[string]bootProposal{"n1": own}
	probes := []probeRec{probe("n2", 1, infoResp{}), probe("n3", 3, infoResp{})}
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err != nil {
		t.Fatal(err)
	}
	// The pass took too long.
	if err := checkConflicts("n1", reg, probes, start, at(2000), time.Second); err == nil {
		t.Fatal("a pass longer than the bound passed")
	}

	// n4's proposal recorded here at 5 ms; n4 probed at 2 ms only: abort.
	j := jProp
	j.At = at(5)
	reg = map[string]bootProposal{"n1": own, "n4": j}
	probes = []probeRec{probe("n2", 1, infoResp{}), probe("n4", 2, infoResp{})}
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err == nil ||
		!strings.Contains(err.Error(), "n4 also proposed") {
		t.Fatalf("known initiator not probed after learning: %v", err)
	}
	if got := unmet("n1", reg, probes); len(got) != 1 || got[0] != "n4" {
		t.Fatalf("unmet %v", got)
	}
	// Probed again after learning, not hosting: fine.
	probes = append(probes, probe("n4", 6, infoResp{}))
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err != nil {
		t.Fatal(err)
	}
	// ... unless it answered that it hosts.
	probes[len(probes)-1].Resp.Hosts = true
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err == nil {
		t.Fatal("an initiator hosting the group passed the check")
	}

	// Learnt from n2's answer (at 2 ms), n4 probed at 1 ms: abort; probed at
	// 3 ms: fine.
	reg = map[string]bootProposal{"n1": own}
	reported := infoResp{Proposals: []bootProposal{jProp}}
	probes = []probeRec{probe("n4", 0, infoResp{}), probe("n2", 1, reported)}
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err == nil {
		t.Fatal("initiator reported by a probed node, probed before the report, passed")
	}
	probes = append(probes, probe("n4", 3, infoResp{}))
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err != nil {
		t.Fatal(err)
	}
	// Not probed at all (not in this node's view): abort.
	probes = []probeRec{probe("n2", 1, reported)}
	if err := checkConflicts("n1", reg, probes, start, at(10), time.Second); err == nil {
		t.Fatal("an initiator never probed passed")
	}
}

func TestProposalValidate(t *testing.T) {
	ok := bootProposal{Initiator: "a", Members: []string{"a", "b", "c"}}
	if err := ok.validate("a"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		p    bootProposal
		from string
	}{
		{ok, "b"},
		{bootProposal{Initiator: "a", Members: []string{"b", "a"}}, "a"},
		{bootProposal{Initiator: "a", Members: []string{"a", "a"}}, "a"},
		{bootProposal{Initiator: "a"}, "a"},
		{bootProposal{Initiator: "a", Members: make([]string, maxProposalMembers+1)}, "a"},
	} {
		if bad.p.validate(bad.from) == nil {
			t.Errorf("%+v from %s validated", bad.p, bad.from)
		}
	}
}

func TestOrderTargetsPrefersHostsAndPutsSlowLast(t *testing.T) {
	now := t0
	slow := map[string]time.Time{"n2": now.Add(time.Second), "n9": now.Add(-time.Second)}
	for rr := uint64(0); rr < 6; rr++ {
		var ps []Peer
		for _, n := range []string{"n1", "n2", "n3", "n4", "n5", "n9"} {
			p := peer(n, "alive")
			p.Hosting = n == "n1" || n == "n2" || n == "n3"
			ps = append(ps, p)
		}
		got := orderTargets(ps, rr, slow, now)
		// n1 and n3 (hosting, not slow) first, then n4, n5, n9, then n2
		// (hosting but hung recently).
		if !(got[0].Hosting && got[1].Hosting && got[0].Name != "n2" && got[1].Name != "n2") {
			t.Fatalf("rr %d: hosts not first: %s", rr, peerNames(got))
		}
		if got[5].Name != "n2" {
			t.Fatalf("rr %d: slow host not last: %s", rr, peerNames(got))
		}
	}
	// Round robin still spreads the first try over the hosts.
	first := map[string]bool{}
	for rr := uint64(0); rr < 6; rr++ {
		ps := []Peer{peer("a", "alive"), peer("b", "alive"), peer("c", "alive")}
		for i := range ps {
			ps[i].Hosting = true
		}
		first[orderTargets(ps, rr, nil, now)[0].Name] = true
	}
	if len(first) != 3 {
		t.Fatalf("first tries went to %v only", first)
	}
}
