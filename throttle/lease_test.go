package throttle

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

// drifting is a clock that runs rate times as fast as c, from c's now.
func drifting(c *clock, rate float64) func() time.Time {
	base := c.now()
	return func() time.Time { return base.Add(time.Duration(float64(c.now().Sub(base)) * rate)) }
}

// tally counts admitted requests per window, each node counting in its own
// clock's windows: what the package doc bounds by Cap.
type tally map[int64]int64

// offer tries n requests of s on node and adds what passed to tl.
func (r *rig) offer(node string, s Spec, n int, tl tally) int {
	ok := 0
	for i := 0; i < n; i++ {
		now := r.clockOf(node)()
		req := Request{Service: s.Service, Limits: []Spec{s}, Keys: []string{""}}
		if r.nodes[node].Admit(context.Background(), req).OK {
			ok++
			tl[Window(now, s.Per)]++
		}
	}
	return ok
}

func (r *rig) setCut(node string, cut bool) {
	r.mu.Lock()
	r.cut[node] = cut
	r.mu.Unlock()
}

// The manager's wait covers the longest a lease can run in real time: the
// node's clock at its slowest, the manager's at its fastest.
func TestLeaseWaitCoversDrift(t *testing.T) {
	for _, drift := range []float64{0.0001, 0.01, 0.1} {
		cfg := ManagerConfig{Lease: time.Second, MaxDrift: drift}
		cfg.defaults()
		for _, lease := range []time.Duration{MinLease, DefaultLease, time.Hour, MaxLease} {
			nodeReal := float64(lease) / (1 - drift)          // a slow node counts its lease out
			mgrReal := float64(cfg.wait(lease)) / (1 + drift) // a fast manager waits
			if mgrReal-nodeReal < float64(leaseMargin)/2 {
				t.Errorf("drift %v, lease %s: the manager reclaims %.3fs of real time after the answer, "+
					"the node may spend its share for %.3fs", drift, lease, mgrReal/1e9, nodeReal/1e9)
			}
		}
	}
}

// A node cut from the manager spends its share only while its lease runs,
// with its clock slow and the manager's fast by the drift bound; then the
// manager gives the share to the others. Coming back once and being cut
// again (its share was given away meanwhile), or for good: no window of
// any node's clock ever admits more than the cap over all nodes.
func TestLeaseReclaimsTheShareOfACutNode(t *testing.T) {
	const lease = 3 * time.Second
	r := newRigWith(t, func(c *ManagerConfig) {
		c.Lease, c.MaxSkew, c.MaxDrift = lease, time.Second, 0.01
	}, func(c *clock) map[string]func() time.Time {
		return map[string]func() time.Time{"mgr": drifting(c, 1.01), "c": drifting(c, 0.99)}
	}, "a", "b", "c")
	r.activate(1)
	s := spec(time.Second, 60, true)
	r.clk.add(4 * time.Second) // past the activation's first window
	r.pump(8)
	for _, n := range []string{"a", "b", "c"} {
		if st := r.nodes[n].Status(); st.Share != 3 || st.LeaseLeft <= 0 {
			t.Fatalf("%s: roster %d, lease left %s; want 3 and a lease", n, st.Share, st.LeaseLeft)
		}
	}
	tl := tally{}
	ab := tally{} // what a and b admitted, by a's windows (the real clock)
	var cLast, cFirst time.Time
	run := func(d time.Duration) {
		for end := r.clk.now().Add(d); r.clk.now().Before(end); r.clk.add(20 * time.Millisecond) {
			for _, n := range []string{"a", "b", "c"} {
				r.nodes[n].step(context.Background())
			}
			w := Window(r.clk.now(), s.Per)
			ab[w] += int64(r.offer("a", s, 3, tl) + r.offer("b", s, 2, tl))
			if r.offer("c", s, 2, tl) > 0 {
				if cFirst.IsZero() {
					cFirst = r.clk.now()
				}
				cLast = r.clk.now()
			}
		}
	}
	run(2 * time.Second)
	r.setCut("c", true)
	cutAt := r.clk.now()
	cFirst = time.Time{}
	run(10 * time.Second)
	if cFirst.IsZero() {
		t.Fatal("the cut node never spent its share")
	}
	// Its lease began before its last answered ask, within 20ms of the cut.
	if got := cLast.Sub(cutAt); got > lease*101/100 {
		t.Fatalf("the cut node admitted %s after the cut, past its %s lease", got, lease)
	}
	if st := r.nodes["c"].Status(); st.LeaseLeft != 0 {
		t.Fatalf("lease left %s on the cut node at the end", st.LeaseLeft)
	}
	// Reclaimed within wait(lease) on the manager's fast clock, then the
	// window after that plus the skew: from cut+7s a and b get all of it.
	for w := Window(cutAt.Add(7*time.Second), s.Per); w < Window(r.clk.now(), s.Per); w++ {
		if ab[w] < 57 {
			t.Fatalf("window %d (%s after the cut): a and b admitted %d of 60; "+
				"the dead share is still held back (%v)", w, WindowStart(w, s.Per).Sub(cutAt), ab[w], ab)
		}
	}
	u, err := r.mgr.Usage("s")
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, ns := range u.Nodes {
		states[ns.Node] = ns.State
	}
	if states["c"] != ShareReclaimed || states["a"] != ShareReserved || u.Lease != lease.String() {
		t.Fatalf("usage shows shares %v, lease %q; want c reclaimed, a reserved, %s", states, u.Lease, lease)
	}
	if res, recl, _ := r.mgr.ShareCounts(); res != 2 || recl != 1 {
		t.Fatalf("share counts %d reserved, %d reclaimed; want 2 and 1", res, recl)
	}
	// Back for one ask only, then cut again: it must not spend its share
	// in the windows where the manager gave it away.
	r.setCut("c", false)
	r.nodes["c"].step(context.Background())
	if st := r.nodes["c"].Status(); !st.Healthy || st.LeaseLeft <= 0 {
		t.Fatalf("c back: %+v", st)
	}
	r.setCut("c", true)
	run(6 * time.Second)
	// Back for good.
	r.setCut("c", false)
	run(4 * time.Second)
	// Dead again, past its lease, then restarted: a new process, a new
	// first reply; it takes its share without a burst.
	r.setCut("c", true)
	run(6 * time.Second)
	r.restart("c")
	r.setCut("c", false)
	run(3 * time.Second)
	for w, n := range tl {
		if n > 60 {
			t.Errorf("window %d (%s after the cut) admitted %d over all nodes, over the cap 60",
				w, WindowStart(w, s.Per).Sub(cutAt), n)
		}
	}
	if res, recl, _ := r.mgr.ShareCounts(); res != 3 || recl != 0 {
		t.Fatalf("after c came back: %d reserved, %d reclaimed; want 3 and 0", res, recl)
	}
}

// A member that left gets its share reclaimed at the next sweep, without
// waiting out its lease, from the window after the current one (it may
// have spent in that one); a node still shown as left after it came back
// is not reclaimed while it asks.
func TestDepartedNodeReclaimedAtOnce(t *testing.T) {
	left := map[string]bool{}
	var lmu sync.Mutex
	r := newRigWith(t, func(c *ManagerConfig) {
		c.Departed = func(n string) bool { lmu.Lock(); defer lmu.Unlock(); return left[n] }
	}, nil, "a", "b", "c")
	r.activate(1)
	s := spec(time.Second, 60, true)
	r.clk.add(3 * time.Second)
	r.pump(8)
	r.setCut("c", true) // stopped
	lmu.Lock()
	left["c"] = true
	lmu.Unlock()
	r.clk.add(300 * time.Millisecond)
	r.pump(2)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 1 {
		t.Fatalf("%d shares reclaimed right after c left, want 1", recl)
	}
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now.Add(250*time.Millisecond), s.Per)+1, s.Per).Sub(now))
	tl := tally{}
	for i := 0; i < 40; i++ {
		r.offer("a", s, 2, tl)
		r.offer("b", s, 2, tl)
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if n := tl[Window(r.clk.now(), s.Per)]; n < 57 || n > 60 {
		t.Fatalf("the window after c left admitted %d of 60 on a and b", n)
	}
	// c restarts and asks while gossip still shows it left.
	r.setCut("c", false)
	r.pump(3)
	r.clk.add(time.Second)
	r.pump(3)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 0 {
		t.Fatalf("c asks again but %d shares stay reclaimed", recl)
	}
	if st := r.nodes["c"].Status(); st.LeaseLeft <= 0 {
		t.Fatalf("c back without a lease: %+v", st)
	}
}

// What one activation reclaimed, the next knows from the group (no wait
// again); and a node not heard in an activation is waited out with the
// longest lease a former one told.
func TestLapsedSharesSurviveAFailover(t *testing.T) {
	lease := 10 * time.Second
	r := newRigWith(t, func(c *ManagerConfig) { c.Lease = lease }, nil, "a", "b", "c")
	r.activate(1)
	r.clk.add(3 * time.Second)
	r.pump(8)
	r.setCut("c", true)
	r.clk.add(11 * time.Second)
	r.pump(12) // a sweep sees c over: wait(10s) = 11.2s
	r.clk.add(time.Second)
	r.pump(3)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 1 {
		t.Fatalf("c not reclaimed after its lease")
	}
	var rec rosterRec
	err := json.Unmarshal(r.store.data[rosterKey], &rec)
	if err != nil || len(rec.Lapsed) != 1 || rec.Lease != lease {
		t.Fatalf("roster record %+v (%v): want c lapsed and lease 10s", rec, err)
	}
	lease = 3 * time.Second
	r.activate(2)
	r.pump(3)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 1 {
		t.Fatalf("the new activation reserves c's share again")
	}
	// b goes silent: not heard in this activation, it is waited out with
	// the former activation's 10s lease, not this one's 3s.
	r.setCut("b", true)
	r.clk.add(6 * time.Second)
	r.pump(3)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 1 {
		t.Fatal("b reclaimed before the former activation's lease was waited out")
	}
	r.clk.add(6 * time.Second)
	r.pump(3)
	if _, recl, _ := r.mgr.ShareCounts(); recl != 2 {
		t.Fatal("b not reclaimed after the former activation's lease")
	}
	if err := json.Unmarshal(r.store.data[rosterKey], &rec); err != nil || rec.Lease != 3*time.Second {
		t.Fatalf("recorded lease %s (%v), want lowered to 3s once the 10s leases are over", rec.Lease, err)
	}
}

// After its lease, a node without the manager fails closed whatever
// on_manager_loss says, and says why (NoManager, retry within a second).
func TestCutNodeFailsClosedAfterItsLease(t *testing.T) {
	r := newRigWith(t, func(c *ManagerConfig) { c.Lease = 4 * time.Second }, nil, "a")
	r.activate(1)
	s := spec(time.Second, 50, true)
	r.clk.add(3 * time.Second)
	r.pump(3)
	r.deactivate()
	r.pump(1)
	a := r.nodes["a"]
	left := a.Status().LeaseLeft
	now := r.clk.now()
	// To a window it never committed to.
	jump := WindowStart(Window(now, s.Per)+2, s.Per).Sub(now) + 10*time.Millisecond
	if jump >= left {
		t.Fatalf("lease left %s, less than the %s to an uncommitted window", left, jump)
	}
	r.clk.add(jump)
	req := Request{Service: "s", Limits: []Spec{s}, Keys: []string{""}}
	if !a.Admit(context.Background(), req).OK {
		t.Fatal("the cut node refuses within its lease")
	}
	r.clk.add(left - jump + 10*time.Millisecond)
	d := a.Admit(context.Background(), req)
	if d.OK || !d.NoManager || d.Reset > time.Second {
		t.Fatalf("after its lease: %+v, want a refusal for the lost manager, reset within 1s", d)
	}
	if st := a.Status(); st.LeaseLeft != 0 {
		t.Fatalf("lease left %s after it ended", st.LeaseLeft)
	}
}

// A share is reclaimed only in windows after the one the lease ended in
// (plus the skew): with 1m windows and a 60s lease, the cut node spends its
// share at the start of a minute, and the others get only the rest of
// that minute; all of the next one.
func TestReclaimSparesTheWindowTheLeaseEndedIn(t *testing.T) {
	r := newRigWith(t, func(c *ManagerConfig) { c.Lease = time.Minute }, nil, "a", "b", "c")
	r.activate(1)
	s := spec(time.Minute, 60, true)
	r.clk.add(3 * time.Second)
	r.pump(8)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + 10*time.Second) // 10s into a minute
	tl := tally{}
	r.offer("c", s, 1, tl) // c serves s: it would commit ahead if it could
	r.pump(2)
	r.setCut("c", true)
	cutAt := r.clk.now()
	m := Window(cutAt, s.Per) + 1 // c has not committed to it; its lease runs 10s into it
	for end := cutAt.Add(125 * time.Second); r.clk.now().Before(end); r.clk.add(250 * time.Millisecond) {
		r.pump(1)
		r.offer("a", s, 1, tl)
		r.offer("b", s, 1, tl)
		r.offer("c", s, 1, tl)
	}
	if tl[m] > 60 {
		t.Fatalf("the minute the cut node's lease ended in admitted %d over all nodes, over 60", tl[m])
	}
	if tl[m+1] < 57 {
		t.Fatalf("the next minute admitted %d of 60: the share was not reclaimed", tl[m+1])
	}
}
