package node

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The quorum watch is silent through an ordinary election, logs a loss
// once it has lasted the grace period (naming the missing voters), again
// only every logEvery, and logs the quorum regained with how long it was
// gone.
func TestQuorumWatchLogsLossOnceThenSlowlyThenRegain(t *testing.T) {
	var buf bytes.Buffer
	w := newQuorumWatch(zerolog.New(&buf), 30*time.Second)
	voters := func(st2, st3 string) []voterView {
		return []voterView{{Node: "n1", ID: 1, Status: "alive"}, {Node: "n2", ID: 2, Status: st2},
			{Node: "n3", ID: 3, Status: st3, Addr: "10.0.0.3:7948"}}
	}
	t0 := time.Unix(1000, 0)
	g := groupView{Cluster: "default", ElectionTimeout: 200 * time.Millisecond}
	take := func() string { s := buf.String(); buf.Reset(); return s }

	// An election: no leader for less than the grace period.
	g.Voters = voters("alive", "alive")
	w.observe(t0, []groupView{g})
	w.observe(t0.Add(time.Second), []groupView{g})
	g.Leader, g.LeaderKnown = "n2", true
	w.observe(t0.Add(1500*time.Millisecond), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("an election was logged: %s", out)
	}

	// n2 and n3 die: the leader is still known for a while (CheckQuorum
	// steps it down later), gossip already says two voters are gone.
	g.Voters = voters("failed", "")
	g.Voters[2].Node = ""
	w.observe(t0.Add(10*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("logged before the grace period: %s", out)
	}
	g.Leader, g.LeaderKnown = "", false
	w.observe(t0.Add(12*time.Second), []groupView{g})
	out := take()
	for _, want := range []string{`"level":"warn"`, "no quorum for the group of cluster default",
		"n2 (failed)", "replica 3 at 10.0.0.3:7948 (not in gossip)", "1 of 3 voters reachable, 2 needed"} {
		if !strings.Contains(out, want) {
			t.Errorf("loss log lacks %q: %s", want, out)
		}
	}
	for s := 13; s < 42; s++ {
		w.observe(t0.Add(time.Duration(s)*time.Second), []groupView{g})
	}
	if out := take(); out != "" {
		t.Fatalf("logged again within logEvery: %s", out)
	}
	w.observe(t0.Add(42*time.Second), []groupView{g})
	if out := take(); !strings.Contains(out, "no quorum for the group of cluster default for 32s") {
		t.Fatalf("no repeat after logEvery, or without how long: %s", out)
	}

	// n2 comes back but is not yet elected: the change is logged soon
	// (quorumChangeEvery after the last log), a flap of it not again.
	g.Voters = voters("alive", "failed")
	w.observe(t0.Add(43*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("a change logged within quorumChangeEvery of the last log: %s", out)
	}
	w.observe(t0.Add(45*time.Second), []groupView{g})
	if out := take(); !strings.Contains(out, "waiting for voters n3 (failed) (2 of 3 voters reachable") {
		t.Fatalf("a change of the missing voters is not logged: %s", out)
	}
	g.Voters = voters("suspect", "failed")
	w.observe(t0.Add(46*time.Second), []groupView{g})
	g.Voters = voters("alive", "failed")
	w.observe(t0.Add(47*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("a flapping voter logged within quorumChangeEvery: %s", out)
	}
	w.observe(t0.Add(48*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("an unchanged loss logged again within logEvery: %s", out)
	}

	// n2 is elected.
	g.Voters = voters("alive", "failed")
	g.Leader, g.LeaderKnown = "n2", true
	w.observe(t0.Add(50*time.Second), []groupView{g})
	out = take()
	if !strings.Contains(out, "quorum regained for the group of cluster default: leader n2, after 40s") ||
		!strings.Contains(out, `"lasted":40000`) {
		t.Fatalf("regain log: %s", out)
	}
	w.observe(t0.Add(51*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("regain logged twice: %s", out)
	}

	// All voters alive but no leader for long: says what to check, but
	// only after gossip had the time to declare a dead voter failed.
	g.Voters = voters("alive", "alive")
	g.Leader, g.LeaderKnown = "", false
	w.observe(t0.Add(60*time.Second), []groupView{g})
	w.observe(t0.Add(63*time.Second), []groupView{g})
	if out := take(); out != "" {
		t.Fatalf("no leader with all voters alive logged within 3s: %s", out)
	}
	w.observe(t0.Add(70*time.Second), []groupView{g})
	if out := take(); !strings.Contains(out, "all 3 voters are alive in gossip but no leader") {
		t.Fatalf("no-leader log: %s", out)
	}
	// A group no longer hosted is forgotten, without a log.
	w.observe(t0.Add(71*time.Second), nil)
	if out := take(); out != "" || len(w.groups) != 0 {
		t.Fatalf("dropped group: %q %v", out, w.groups)
	}
}
