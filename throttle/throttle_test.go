package throttle

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// clock is a manual clock shared by a test's manager and limiters.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// memStore is the group: Save is refused once a later activation wrote
// (the fence), as roles.Fence.Guard does.
type memStore struct {
	mu    sync.Mutex
	data  map[string][]byte
	fence uint64 // the latest activation
	fail  bool
}

type fenced struct {
	s    *memStore
	term uint64
}

func (f fenced) Load(_ context.Context, key string) ([]byte, bool, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	v, ok := f.s.data[key]
	return v, ok, nil
}

func (f fenced) Keys(_ context.Context, prefix string) ([]string, error) {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	var out []string
	for k := range f.s.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

func (f fenced) Save(_ context.Context, puts map[string][]byte, dels []string) error {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	if f.s.fail {
		return errors.New("store down")
	}
	if f.term < f.s.fence {
		return errors.New("fenced")
	}
	for k, v := range puts {
		f.s.data[k] = v
	}
	for _, k := range dels {
		delete(f.s.data, k)
	}
	return nil
}

// rig is a manager (or none) and nodes whose asks reach it unless cut.
type rig struct {
	t     *testing.T
	clk   *clock
	store *memStore
	mgr   *Manager
	stop  context.CancelFunc
	done  chan struct{}
	nodes map[string]*Limiter
	cut   map[string]bool
	mu    sync.Mutex
	// mcfg and clocks, when set, shape the manager's config and give nodes
	// (and "mgr") clocks of their own (newRigWith).
	mcfg   func(*ManagerConfig)
	clocks map[string]func() time.Time
	dir    string // the nodes' data dirs
}

func newRig(t *testing.T, names ...string) *rig { return newRigWith(t, nil, nil, names...) }

// newRigWith is newRig with the manager's config shaped by mcfg and
// clocks of their own for the nodes named in clocks ("mgr": the manager).
func newRigWith(t *testing.T, mcfg func(*ManagerConfig), clocks func(*clock) map[string]func() time.Time,
	names ...string) *rig {
	r := &rig{t: t, clk: &clock{t: time.Unix(1_700_000_000, 0)}, store: &memStore{data: map[string][]byte{}},
		nodes: map[string]*Limiter{}, cut: map[string]bool{}, mcfg: mcfg,
		clocks: map[string]func() time.Time{}, dir: t.TempDir()}
	if clocks != nil {
		r.clocks = clocks(r.clk)
	}
	for _, n := range names {
		r.restart(n)
	}
	t.Cleanup(r.deactivate)
	return r
}

// restart gives node n a fresh limiter, as a new process would have.
func (r *rig) restart(n string) {
	now := r.clockOf(n)
	l := NewLimiter(LimiterConfig{Node: n, Clock: now, MaxWait: time.Millisecond,
		SpendFile: filepath.Join(r.dir, n+"-"+SpendFileName),
		Call: func(ctx context.Context, body []byte) ([]byte, error) {
			r.mu.Lock()
			m, cut := r.mgr, r.cut[n]
			r.mu.Unlock()
			if cut || m == nil {
				return nil, errors.New("unreachable")
			}
			return m.Handle(ctx, n, body)
		}}, zerolog.Nop())
	l.used = now() // asks as a node in use
	r.nodes[n] = l
}

func (r *rig) clockOf(name string) func() time.Time {
	if c := r.clocks[name]; c != nil {
		return c
	}
	return r.clk.now
}

// activate starts a manager activation under term at the clock's now.
func (r *rig) activate(term uint64) {
	r.deactivate()
	r.store.mu.Lock()
	r.store.fence = term
	r.store.mu.Unlock()
	cfg := ManagerConfig{Node: "mgr", Clock: r.clockOf("mgr")}
	if r.mcfg != nil {
		r.mcfg(&cfg)
	}
	m := NewManager(cfg, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Activate(ctx, term, cfg.Clock(), fenced{r.store, term})
	}()
	for m.Active() != term {
		time.Sleep(time.Millisecond)
	}
	r.mu.Lock()
	r.mgr, r.stop, r.done = m, cancel, done
	r.mu.Unlock()
}

func (r *rig) deactivate() {
	r.mu.Lock()
	stop, done := r.stop, r.done
	r.mgr, r.stop = nil, nil
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// pump runs rounds of every node's ask loop, synchronously.
func (r *rig) pump(rounds int) {
	for i := 0; i < rounds; i++ {
		for _, l := range r.nodes {
			l.step(context.Background())
		}
		r.clk.add(time.Millisecond)
	}
}

// step is one iteration of Run's loop, for tests.
func (m *Limiter) step(ctx context.Context) {
	m.mu.Lock()
	m.lastTry = time.Time{} // probe now
	m.mu.Unlock()
	ask, commits, sent := m.build()
	if ask == nil {
		return
	}
	body, _ := jsonMarshal(ask)
	resp, err := m.cfg.Call(ctx, body)
	m.apply(ask, commits, sent, resp, err)
}

// admitN tries n requests on node under key and reports how many passed,
// pumping the asks in between.
func (r *rig) admitN(node string, s Spec, key string, n int) int {
	ok := 0
	for i := 0; i < n; i++ {
		d := r.nodes[node].Admit(context.Background(), Request{Service: s.Service, Limits: []Spec{s}, Keys: []string{key}})
		if d.OK {
			ok++
		} else {
			r.nodes[node].step(context.Background())
			if d2 := r.nodes[node].Admit(context.Background(), Request{Service: s.Service, Limits: []Spec{s}, Keys: []string{key}}); d2.OK {
				ok++
			}
		}
	}
	return ok
}

func TestWindow(t *testing.T) {
	per := time.Second
	at := time.Unix(100, 999_999_999)
	if w := Window(at, per); w != 100 {
		t.Fatalf("window %d, want 100", w)
	}
	if !WindowStart(101, per).Equal(time.Unix(101, 0)) {
		t.Fatal("window start")
	}
	if w := Window(time.Unix(-1, 0), per); w != -1 {
		t.Fatalf("negative window %d", w)
	}
	day := 24 * time.Hour
	if Window(time.Unix(86399, 0), day) != 0 || Window(time.Unix(86400, 0), day) != 1 {
		t.Fatal("day windows not aligned to the epoch")
	}
	since := time.Unix(10, 900_000_000)
	if f := FirstWindow(since, 250*time.Millisecond, per); f != 13 {
		t.Fatalf("first window %d, want 13 (skew pushes 10.9 into 11, then two ahead)", f)
	}
}

func spec(per time.Duration, rate int64, share bool) Spec {
	return Spec{Service: "s", Rate: rate, Per: per, By: ByService, Share: share}
}

// Uneven load over three nodes: the sum admitted per window is the cap.
func TestGrantsHoldCapAcrossNodes(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(5)
	s := spec(time.Second, 50, true)
	r.clk.add(3 * time.Second) // past the activation's first window
	r.pump(3)
	for w := 0; w < 3; w++ {
		// align to a window start
		now := r.clk.now()
		r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now))
		total := 0
		for round := 0; round < 40; round++ {
			total += r.admitN("a", s, "", 3)
			total += r.admitN("b", s, "", 1)
			if round%2 == 0 {
				total += r.admitN("c", s, "", 1)
			}
			r.pump(1)
			r.clk.add(10 * time.Millisecond)
		}
		if total > 50 {
			t.Fatalf("window %d: %d admitted, over the cap 50", w, total)
		}
		if total < 45 {
			t.Fatalf("window %d: only %d admitted of 50 (demand was 180)", w, total)
		}
	}
}

// A node cut from the manager spends only its share; the manager reserves
// it; together they stay within the cap.
func TestFallbackShareUnderPartition(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Second, 60, true)
	r.clk.add(3 * time.Second)
	r.pump(8) // all in the roster, told N=3 (Σ1/3 = 1) once each acknowledged it
	for _, n := range []string{"a", "b", "c"} {
		if st := r.nodes[n].Status(); st.Share != 3 {
			t.Fatalf("%s told roster %d, want 3", n, st.Share)
		}
	}
	r.mu.Lock()
	r.cut["c"] = true
	r.mu.Unlock()
	r.pump(2) // c notices
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+2, s.Per).Sub(now)) // a window c never committed to
	total := 0
	for round := 0; round < 30; round++ {
		c := r.admitN("c", s, "", 5)
		if round == 0 && c == 0 {
			t.Fatal("the cut node admits nothing: it should spend its share")
		}
		total += c + r.admitN("a", s, "", 5) + r.admitN("b", s, "", 5)
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if total > 60 {
		t.Fatalf("%d admitted in one window with c cut off, over the cap 60", total)
	}
	if total < 55 {
		t.Fatalf("only %d admitted of 60", total)
	}
}

// deny: a node that loses the manager admits nothing beyond its grants.
func TestDenyOnManagerLoss(t *testing.T) {
	r := newRig(t, "a")
	r.activate(1)
	s := spec(time.Second, 10, false)
	r.clk.add(3 * time.Second)
	r.pump(2)
	r.deactivate()
	r.pump(2)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+2, s.Per).Sub(now))
	if n := r.admitN("a", s, "", 5); n != 0 {
		t.Fatalf("deny mode admitted %d without a manager", n)
	}
}

// A new activation grants nothing in windows the former one may have
// granted in; nodes refuse replies under the highest fence they saw.
func TestManagerChangeAndFence(t *testing.T) {
	r := newRig(t, "a", "b")
	s := spec(time.Second, 20, false)
	r.activate(1)
	r.clk.add(3 * time.Second)
	r.pump(2)
	old := r.mgr
	r.activate(2) // at now: first window = Window(now+skew)+2
	first := FirstWindow(r.clk.now(), 250*time.Millisecond, s.Per)
	r.pump(3)
	if st := r.nodes["a"].Status(); st.Fence != 2 {
		t.Fatalf("node fence %d, want 2", st.Fence)
	}
	for w := Window(r.clk.now(), s.Per); w < first; w++ {
		l := r.mgr.act.limit(s, w)
		k, _ := r.mgr.keyOf(context.Background(), r.mgr.act, l, "")
		if k.total != 0 {
			t.Fatalf("window %d granted before the first window %d", w, first)
		}
	}
	// A reply of the old activation is refused.
	old.mu.Lock()
	old.act = &activation{term: 1, since: r.clk.now(), store: fenced{r.store, 1}, roster: map[string]int{"a": 2},
		limits: map[lkey]*mlimit{}, slots: map[string]*mslots{}, seen: map[string]time.Time{}, demand: map[string]demandOf{}}
	old.mu.Unlock()
	body, _ := jsonMarshal(&Ask{Node: "a", Fence: 1, Probe: true})
	resp, err := old.Handle(context.Background(), "a", body)
	if err != nil {
		t.Fatal(err)
	}
	a := r.nodes["a"]
	a.apply(&Ask{}, nil, r.clk.now(), resp, nil)
	if st := a.Status(); st.Fence != 2 || st.Healthy {
		t.Fatalf("after a stale reply: fence %d healthy %v, want 2 and unhealthy", st.Fence, st.Healthy)
	}
	// The old activation's writes are fenced.
	if err := (fenced{r.store, 1}).Save(context.Background(), map[string][]byte{"x": nil}, nil); err == nil {
		t.Fatal("a write under the old fence went through")
	}
	// From the first window on, grants resume.
	now := r.clk.now()
	r.clk.add(WindowStart(first, s.Per).Sub(now))
	r.pump(2)
	if n := r.admitN("a", s, "", 25) + r.admitN("b", s, "", 25); n != 20 {
		t.Fatalf("first window of the new activation admitted %d, want 20", n)
	}
}

// The roster hands out shares only while they add up to one budget.
func TestRosterSharesNeverExceedTheBudget(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	r.nodes["a"].step(context.Background())
	if n := r.nodes["a"].Status().Share; n != 1 {
		t.Fatalf("first node told %d, want 1", n)
	}
	r.nodes["b"].step(context.Background())
	if n := r.nodes["b"].Status().Share; n != 0 {
		t.Fatalf("second node told %d while the first still counts on the whole budget, want 0", n)
	}
	r.pump(3) // a learns 2 and acknowledges it; b gets its share
	if n := r.nodes["b"].Status().Share; n < 2 {
		t.Fatalf("second node told %d after the first acknowledged 2", n)
	}
	r.pump(4)
	r.mgr.mu.Lock()
	var sum float64
	for _, c := range r.mgr.act.roster {
		if c > 0 {
			sum += 1 / float64(c)
		}
	}
	r.mgr.mu.Unlock()
	if sum > 1.0000001 {
		t.Fatalf("shares add up to %.3f budgets", sum)
	}
}

// Durable windows: a new activation (every node restarted) continues from
// what the group says was allocated.
func TestDurableWindowSurvivesRestart(t *testing.T) {
	r := newRig(t, "a")
	s := spec(24*time.Hour, 30, false)
	r.activate(1)
	r.pump(1)
	got := r.admitN("a", s, "", 20)
	if got != 20 {
		t.Fatalf("admitted %d of 20", got)
	}
	// Every node restarts: fresh limiters, a fresh activation.
	r2 := newRig(t, "a", "b")
	r2.clk, r2.store = r.clk, r.store
	r.deactivate()
	for n := range r2.nodes {
		r2.nodes[n].cfg.Clock = r.clk.now
	}
	r2.activate(2)
	r2.pump(2)
	total := r2.admitN("a", s, "", 10) + r2.admitN("b", s, "", 10)
	if total+got > 30 {
		t.Fatalf("after the restart %d more admitted: %d in the day, over 30", total, total+got)
	}
	if total == 0 {
		t.Fatal("nothing admitted after the restart")
	}
}

// max_in_flight: never more slots in use than the maximum over all nodes.
func TestSlotsCapInFlight(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	r.pump(2)
	var held []Decision
	inflight := 0
	for round := 0; round < 10; round++ {
		for _, n := range []string{"a", "b", "c"} {
			req := Request{Service: "slow", MaxInFlight: 4}
			d := r.nodes[n].Admit(context.Background(), req)
			if !d.OK {
				r.nodes[n].step(context.Background())
				d = r.nodes[n].Admit(context.Background(), req)
			}
			if d.OK {
				inflight++
				held = append(held, d)
			}
			if inflight > 4 {
				t.Fatalf("%d in flight, over 4", inflight)
			}
		}
		if round%3 == 2 && len(held) > 0 { // one ends
			held[0].Release()
			held = held[1:]
			inflight--
		}
		r.pump(1)
	}
	r.mgr.mu.Lock()
	total := r.mgr.act.slots["slow"].total()
	r.mgr.mu.Unlock()
	if total > 4 {
		t.Fatalf("manager holds %d slots out, over 4", total)
	}
	if inflight < 3 {
		t.Fatalf("only %d in flight", inflight)
	}
}

func TestDecodeAskBounds(t *testing.T) {
	for _, b := range []string{`{`, `{"limits":[{"spec":{"service":"s","rate":0,"per":1,"by":"service"}}]}`,
		`{"slots":[{"service":"","max":1}]}`} {
		if _, err := DecodeAsk([]byte(b)); err == nil {
			t.Fatalf("ask %s accepted", b)
		}
	}
	m := NewManager(ManagerConfig{Node: "m"}, zerolog.Nop())
	body, _ := jsonMarshal(&Ask{Node: "x"})
	if _, err := m.Handle(context.Background(), "y", body); err == nil {
		t.Fatal("an ask naming another node than its caller was answered")
	}
	if _, err := m.Handle(context.Background(), "x", body); !errors.Is(err, ErrNotManager) {
		t.Fatalf("inactive manager answered: %v", err)
	}
}

// Nodes commit to the windows of every limit in use in the cluster
// (Reply.Active), traffic or not, so all of the budget goes where the
// requests are.
func TestIdleNodesReleaseTheirShares(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Second, 60, true)
	r.clk.add(3 * time.Second)
	r.pump(8)
	r.admitN("a", s, "", 1) // b and c never serve s: they learn of it from the manager
	r.pump(2)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + 600*time.Millisecond) // second half: next window committed
	r.pump(3)
	now = r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now))
	total := 0
	for round := 0; round < 30; round++ {
		total += r.admitN("a", s, "", 5) // all the traffic on a
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if total < 57 || total > 60 {
		t.Fatalf("one busy node of three admitted %d of 60: idle nodes kept their shares reserved", total)
	}
}
