package roles

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeClock is a manual clock: After fires when Advance passes its deadline.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// pendingAt reports whether a timer is set to fire at exactly at.
func (c *fakeClock) pendingAt(at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tm := range c.timers {
		if tm.at.Equal(at) {
			return true
		}
	}
	return false
}

// Advance moves time by d in steps of at most step, firing due timers at
// each step, so a goroutine woken by one timer can set the next.
func (c *fakeClock) Advance(t *testing.T, d, step time.Duration) {
	t.Helper()
	for d > 0 {
		s := min(step, d)
		d -= s
		c.mu.Lock()
		c.now = c.now.Add(s)
		kept := c.timers[:0]
		for _, tm := range c.timers {
			if !tm.at.After(c.now) {
				tm.ch <- c.now
			} else {
				kept = append(kept, tm)
			}
		}
		c.timers = kept
		c.mu.Unlock()
		settle()
	}
}

// settle lets woken goroutines run before time moves on. The conditions
// tests need are then awaited with deadlines (waitFor).
func settle() {
	for range 20 {
		runtime.Gosched()
	}
}

// fakeLead is one node's view of the leadership of cluster "c".
type fakeLead struct {
	mu      sync.Mutex
	st      State
	changed chan struct{}
}

func newFakeLead() *fakeLead { return &fakeLead{changed: make(chan struct{})} }

func (l *fakeLead) Leadership(string) State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

func (l *fakeLead) LeaderChanged(string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *fakeLead) set(leader bool, term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st = State{Leader: leader, Term: term}
	close(l.changed)
	l.changed = make(chan struct{})
}

// memStore is a versioned map with compare-and-set, as the group's store.
type memStore struct {
	mu   sync.Mutex
	vals map[string][]byte
	vers map[string]uint64
	rev  uint64
	fail bool // answer every call with an error (no quorum)
}

func newMemStore() *memStore { return &memStore{vals: map[string][]byte{}, vers: map[string]uint64{}} }

var errNoQuorum = errors.New("no quorum")

func (s *memStore) Get(ctx context.Context, _, key string) ([]byte, uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, 0, false, errNoQuorum
	}
	v, ok := s.vals[key]
	return append([]byte(nil), v...), s.vers[key], ok, nil
}

func (s *memStore) Put(ctx context.Context, _, key string, value []byte, cas uint64) (uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(key, value, cas)
}

func (s *memStore) putLocked(key string, value []byte, cas uint64) (uint64, bool, error) {
	if s.fail {
		return 0, false, errNoQuorum
	}
	if s.vers[key] != cas {
		return 0, true, nil
	}
	s.rev++
	s.vals[key], s.vers[key] = append([]byte(nil), value...), s.rev
	return s.rev, false, nil
}

// guardedPut is a role's write: key=value and the fence's compare in one
// command, as node's store adapter makes it.
func (s *memStore) guardedPut(ctx context.Context, key, value string) error {
	f := FenceFrom(ctx)
	return f.Guard(ctx, func(fk string, fv []byte, fver uint64) (uint64, bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.vers[fk] != fver {
			return 0, true, nil
		}
		nv, _, err := s.putLocked(fk, fv, fver)
		if err != nil {
			return 0, false, err
		}
		s.rev++
		s.vals[key], s.vers[key] = []byte(value), s.rev
		return nv, false, nil
	})
}

func (s *memStore) del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vals, key)
	delete(s.vers, key)
}

// span is one activation as the role saw it, in fake time.
type span struct {
	node        string
	term        uint64
	start, stop time.Time
}

type recorder struct {
	mu    sync.Mutex
	spans []span
	open  map[string]int // node → index of its running span
}

func newRecorder() *recorder { return &recorder{open: map[string]int{}} }

func (r *recorder) role(node string, clock Clock, store *memStore, writes chan error) Role {
	return Role{Name: Retention, Run: func(ctx context.Context, f *Fence) error {
		r.mu.Lock()
		r.spans = append(r.spans, span{node: node, term: f.Term, start: clock.Now()})
		r.open[node] = len(r.spans) - 1
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.spans[r.open[node]].stop = clock.Now()
			delete(r.open, node)
			r.mu.Unlock()
		}()
		if writes != nil {
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-writes:
					writes <- store.guardedPut(WithFence(ctx, f), "work", node)
				}
			}
		}
		<-ctx.Done()
		return ctx.Err()
	}}
}

func (r *recorder) snapshot() []span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]span(nil), r.spans...)
}

func (r *recorder) running(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.open[node]
	return ok
}

const (
	et    = 200 * time.Millisecond // election timeout of the fake group
	lease = 3 * et
	poll  = 50 * time.Millisecond
	// verify is long: tests of the write fence must not see the role
	// stopped by a verification first.
	verify = time.Hour
)

func newTestManager(t *testing.T, node string, l Leadership, s Store, c Clock, rs ...Role) *Manager {
	t.Helper()
	m, err := New(Config{Node: node, Clusters: []string{"c"}, Lease: lease, Poll: poll, Retry: 20 * time.Millisecond,
		Verify: verify, Clock: c}, l, s, zerolog.Nop(), rs...)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// waitFor polls cond with a real-time deadline: goroutines of the manager
// react to fake time on their own schedule.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// advanceUntil moves fake time in small steps until cond holds: the
// timers it waits on may be set again by goroutines that run late.
func advanceUntil(t *testing.T, c *fakeClock, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		c.Advance(t, 10*time.Millisecond, 10*time.Millisecond)
		time.Sleep(time.Millisecond)
	}
}

func TestStartsOnlyAfterTheLease(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, nil))
	waitFor(t, "standby", func() bool { return m.phaseOf("c") == "standby" })
	elected := clock.Now()
	lead.set(true, 7)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 7" })
	// One step, so that a role started early would record this time.
	clock.Advance(t, lease-time.Millisecond, lease)
	if rec.running("a") || len(m.Active()) != 0 || !clock.pendingAt(elected.Add(lease)) {
		t.Fatalf("%s after election, before the lease of %s: role running %v, lease timer pending %v",
			clock.Now().Sub(elected), lease, rec.running("a"), clock.pendingAt(elected.Add(lease)))
	}
	clock.Advance(t, time.Millisecond, time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	sp := rec.snapshot()[0]
	if sp.term != 7 || sp.start.Sub(elected) < lease {
		t.Fatalf("span %+v: want fence 7, start >= %s after election", sp, lease)
	}
	act := m.Active()
	if len(act) != 1 || act[0].Term != 7 || !act[0].Since.Equal(sp.start) {
		t.Fatalf("Active() = %+v, want retention at term 7 since %s", act, sp.start)
	}
	v, _, _, _ := store.Get(context.Background(), "c", FenceKey(Retention))
	if r, err := DecodeRecord(v); err != nil || r.Term != 7 || r.Node != "a" || !r.Since.Equal(sp.start.UTC()) {
		t.Fatalf("fence record %+v (%v)", r, err)
	}
}

func TestCancelledAtOnceOnLosingLeadership(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, nil))
	lead.set(true, 3)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 3" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	lost := clock.Now()
	lead.set(false, 3)
	// No time passes: the notification alone must stop the role.
	waitFor(t, "role stopped", func() bool { return !rec.running("a") && len(m.Active()) == 0 })
	if sp := rec.snapshot()[0]; !sp.stop.Equal(lost) {
		t.Fatalf("role stopped at %s, %s after losing leadership", sp.stop, sp.stop.Sub(lost))
	}
}

// A missed notification is caught by the poll.
func TestPollCatchesAMissedChange(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, nil))
	lead.set(true, 3)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 3" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	lead.mu.Lock()
	lead.st = State{} // no close of changed
	lead.mu.Unlock()
	advanceUntil(t, clock, "role stopped", func() bool { return !rec.running("a") })
}

func TestTermChangeRestartsWithTheNewFence(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, nil))
	lead.set(true, 3)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 3" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	lead.set(true, 4) // re-elected in a new term
	waitFor(t, "old run stopped", func() bool { return !rec.running("a") })
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 4" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running again", func() bool { return rec.running("a") })
	sp := rec.snapshot()
	if len(sp) != 2 || sp[0].term != 3 || sp[1].term != 4 || sp[1].start.Before(sp[0].stop.Add(lease)) {
		t.Fatalf("spans %+v: want term 3 then term 4, a lease apart", sp)
	}
	if a := m.Active(); len(a) != 1 || a[0].Term != 4 {
		t.Fatalf("Active() = %+v", a)
	}
}

// TestNoOverlapAcrossAHandOver models a partitioned leader: B is elected
// in term 2 while A still believes it leads term 1 until CheckQuorum makes
// it step down 2 election timeouts later. B's roles start after A's
// stopped; A, paused past that (it never hears), is fenced out on its next
// write.
func TestNoOverlapAcrossAHandOver(t *testing.T) {
	for _, paused := range []bool{false, true} {
		t.Run(fmt.Sprintf("paused=%v", paused), func(t *testing.T) {
			clock, store, rec := newFakeClock(), newMemStore(), newRecorder()
			la, lb := newFakeLead(), newFakeLead()
			wa, wb := make(chan error), make(chan error)
			ma := newTestManager(t, "a", la, store, clock, rec.role("a", clock, store, wa))
			mb := newTestManager(t, "b", lb, store, clock, rec.role("b", clock, store, wb))
			la.set(true, 1)
			waitFor(t, "a's lease", func() bool { return ma.phaseOf("c") == "lease 1" })
			clock.Advance(t, lease, 10*time.Millisecond)
			waitFor(t, "a running", func() bool { return rec.running("a") })
			wa <- nil
			if err := <-wa; err != nil {
				t.Fatalf("a's guarded write while active: %v", err)
			}

			lb.set(true, 2) // B elected; A has not noticed
			waitFor(t, "b's lease", func() bool { return mb.phaseOf("c") == "lease 2" })
			if !paused {
				clock.Advance(t, 2*et, 10*time.Millisecond)
				la.set(false, 2) // CheckQuorum: A steps down
				waitFor(t, "a stopped", func() bool { return !rec.running("a") })
				clock.Advance(t, lease-2*et, 10*time.Millisecond)
			} else {
				clock.Advance(t, lease, 10*time.Millisecond)
			}
			waitFor(t, "b running", func() bool { return rec.running("b") })
			if paused {
				if !rec.running("a") {
					t.Fatal("a stopped without hearing anything")
				}
				wa <- nil
				if err := <-wa; !errors.Is(err, ErrFenced) {
					t.Fatalf("a's write after b claimed the fence: %v, want ErrFenced", err)
				}
				waitFor(t, "a cancelled by the fence", func() bool { return !rec.running("a") })
			}
			wb <- nil
			if err := <-wb; err != nil {
				t.Fatalf("b's guarded write: %v", err)
			}
			v, _, _, _ := store.Get(context.Background(), "c", "work")
			if string(v) != "b" {
				t.Fatalf("work = %q, want b's write last", v)
			}
			sp := rec.snapshot()
			sort.Slice(sp, func(i, j int) bool { return sp[i].term < sp[j].term })
			if len(sp) != 2 || sp[0].node != "a" || sp[1].node != "b" || sp[1].term <= sp[0].term {
				t.Fatalf("spans %+v", sp)
			}
			if !paused && sp[1].start.Before(sp[0].stop) {
				t.Fatalf("b started at %s, before a stopped at %s", sp[1].start, sp[0].stop)
			}
		})
	}
}

// A leader whose fence key holds a later term (it lags behind a newer
// leader) does not start, and a fence write that cannot be made (no
// quorum) is retried until it succeeds.
func TestClaimRefusesALaterTermAndRetries(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	val := []byte(`{"role":"retention","node":"z","term":9}`)
	if _, _, err := store.Put(context.Background(), "c", FenceKey(Retention), val, 0); err != nil {
		t.Fatal(err)
	}
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, nil))
	lead.set(true, 5)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 5" })
	clock.Advance(t, lease+100*time.Millisecond, 10*time.Millisecond)
	if rec.running("a") {
		t.Fatal("started under a fence key holding a later term")
	}
	// The record goes (node drops restored fence keys): the claim, retried
	// all along, succeeds in the same term.
	store.del(FenceKey(Retention))
	advanceUntil(t, clock, "role running once the record is gone", func() bool { return rec.running("a") })
	if a := m.Active(); len(a) != 1 || a[0].Term != 5 {
		t.Fatalf("Active() = %+v", a)
	}
	store.mu.Lock()
	store.fail = true
	store.mu.Unlock()
	lead.set(true, 10)
	waitFor(t, "old run stopped", func() bool { return !rec.running("a") })
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 10" })
	clock.Advance(t, lease+100*time.Millisecond, 10*time.Millisecond)
	if rec.running("a") {
		t.Fatal("started without writing its fence")
	}
	store.mu.Lock()
	store.fail = false
	store.mu.Unlock()
	advanceUntil(t, clock, "role running", func() bool { return rec.running("a") })
	if a := m.Active(); len(a) != 1 || a[0].Term != 10 {
		t.Fatalf("Active() = %+v", a)
	}
}

// A restore replaces the fence key under the active instance: its next
// guarded write is fenced out, and once the restored record is dropped it
// claims the role again in the same term.
func TestFencedOutByARestoreClaimsAgain(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	writes := make(chan error)
	m := newTestManager(t, "a", lead, store, clock, rec.role("a", clock, store, writes))
	lead.set(true, 5)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 5" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	_, ver, _, _ := store.Get(context.Background(), "c", FenceKey(Retention))
	foreign := []byte(`{"role":"retention","node":"old-mesh","term":57}`)
	if _, conflict, err := store.Put(context.Background(), "c", FenceKey(Retention), foreign, ver); err != nil || conflict {
		t.Fatalf("restore: %v %v", conflict, err)
	}
	writes <- nil
	if err := <-writes; !errors.Is(err, ErrFenced) {
		t.Fatalf("write after the restore: %v, want ErrFenced", err)
	}
	waitFor(t, "role stopped", func() bool { return !rec.running("a") })
	store.del(FenceKey(Retention))
	advanceUntil(t, clock, "role claimed again", func() bool { return rec.running("a") })
	writes <- nil
	if err := <-writes; err != nil {
		t.Fatalf("write after claiming again: %v", err)
	}
	if sp := rec.snapshot(); len(sp) != 2 || sp[1].term != 5 {
		t.Fatalf("spans %+v: want a second activation in term 5", sp)
	}
}

// An active instance that writes nothing still notices that its fence key
// was replaced (a restore) within Config.Verify, and claims the role again
// once the replaced record is dropped.
func TestVerifyNoticesAReplacedFenceKey(t *testing.T) {
	clock, lead, store, rec := newFakeClock(), newFakeLead(), newMemStore(), newRecorder()
	m, err := New(Config{Node: "a", Clusters: []string{"c"}, Lease: lease, Poll: poll, Retry: 20 * time.Millisecond,
		Verify: 300 * time.Millisecond, Clock: clock}, lead, store, zerolog.Nop(), rec.role("a", clock, store, nil))
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	lead.set(true, 5)
	waitFor(t, "lease wait", func() bool { return m.phaseOf("c") == "lease 5" })
	clock.Advance(t, lease, 10*time.Millisecond)
	waitFor(t, "role running", func() bool { return rec.running("a") })
	_, ver, _, _ := store.Get(context.Background(), "c", FenceKey(Retention))
	foreign := []byte(`{"role":"retention","node":"old-mesh","term":57}`)
	if _, conflict, err := store.Put(context.Background(), "c", FenceKey(Retention), foreign, ver); err != nil || conflict {
		t.Fatalf("restore: %v %v", conflict, err)
	}
	advanceUntil(t, clock, "role stopped by the verification", func() bool { return !rec.running("a") })
	store.del(FenceKey(Retention))
	advanceUntil(t, clock, "role claimed again", func() bool { return rec.running("a") })
	if a := m.Active(); len(a) != 1 || a[0].Term != 5 {
		t.Fatalf("Active() = %+v", a)
	}
}
