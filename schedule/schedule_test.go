package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestParseNamesTheField(t *testing.T) {
	for _, c := range []struct{ body, field string }{
		{`{"name":"a","service":"s","cron":"* * *"}`, "cron"},
		{`{"name":"a","service":"s","cron":""}`, "cron"},
		{`{"name":"a","service":"s","cron":"TZ=UTC * * * * *"}`, "cron"},
		{`{"name":"a","service":"s","cron":"@every 100ms"}`, "cron"},
		{`{"name":"a","service":"s","cron":"0 0 30 2 *"}`, "cron"},
		{`{"name":"a","service":"","cron":"* * * * *"}`, "service"},
		{`{"name":"-a","service":"s","cron":"* * * * *"}`, "name"},
		{`{"name":"a","service":"s","cron":"* * * * *","overlap":"never"}`, "overlap"},
		{`{"name":"a","service":"s","cron":"* * * * *","timezone":"Mars/Olympus"}`, "timezone"},
		{`{"name":"a","service":"s","cron":"* * * * *","timezone":"Local"}`, "timezone"},
		{`{"name":"a","service":"s","cron":"* * * * *","input":{"x":1},"bogus":1}`, "bogus"},
		{`{"name":"a","service":"s","cron":5}`, "cron"},
	} {
		_, err := Parse([]byte(c.body))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("%s: %v, want an error naming %q", c.body, err, c.field)
		}
	}
	s, err := Parse([]byte(`{"name":"a","service":"s","cron":"*/5 * * * * *","timezone":"Europe/Paris","input":{"x":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	s.Normalize()
	if s.Overlap != OverlapAllow {
		t.Errorf("overlap default: %q", s.Overlap)
	}
}

func TestSpecSecondsOptionalAndTimezone(t *testing.T) {
	at := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	five := Schedule{Cron: "30 9 * * *", Timezone: "Europe/Paris"} // 09:30 Paris = 08:30 UTC in winter
	sp, err := five.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sp.Next(at), time.Date(2026, 1, 2, 8, 30, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("5 fields in Paris: next %v, want %v", got, want)
	}
	six := Schedule{Cron: "*/10 * * * * *"}
	sp, err = six.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if got := sp.Next(at.Add(time.Second)); !got.Equal(at.Add(10 * time.Second)) {
		t.Errorf("6 fields: next %v", got)
	}
}

// memStore is a versioned map with atomic multi-key compare-and-set, as
// the group's state machine.
type memStore struct {
	mu   sync.Mutex
	rev  uint64
	data map[string]Item
}

func newMem() *memStore { return &memStore{data: map[string]Item{}} }

type op struct {
	key   string
	value []byte // nil: delete
	cas   *uint64
}

func (m *memStore) apply(ops ...op) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range ops {
		if o.cas != nil && m.data[o.key].Version != *o.cas {
			return nil, fmt.Errorf("%w: %s", ErrConflict, o.key)
		}
	}
	m.rev++
	vs := make([]uint64, len(ops))
	for i, o := range ops {
		if o.value == nil {
			delete(m.data, o.key)
			continue
		}
		m.data[o.key] = Item{Key: o.key, Value: o.value, Version: m.rev}
		vs[i] = m.rev
	}
	return vs, nil
}

func (m *memStore) List(_ context.Context, _, prefix string) ([]Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Item
	for k, it := range m.data {
		if strings.HasPrefix(k, prefix) {
			out = append(out, it)
		}
	}
	return out, nil
}

func (m *memStore) Put(_ context.Context, _, key string, value []byte, version uint64) (uint64, error) {
	vs, err := m.apply(op{key, value, &version})
	if err != nil {
		return 0, err
	}
	return vs[0], nil
}

func (m *memStore) Delete(_ context.Context, _, key string, version uint64) error {
	_, err := m.apply(op{key, nil, &version})
	return err
}

// memFirer writes an execution record and the state in one apply, as the
// dispatcher's create does with RunOptions.With.
type memFirer struct {
	m        *memStore
	mu       sync.Mutex
	n        int
	running  map[string]bool // executions not terminal
	fail     error
	services map[string]bool
}

func (f *memFirer) Fire(_ context.Context, _ string, fr Firing) (string, error) {
	if f.fail != nil {
		return "", f.fail
	}
	if !f.services[fr.Schedule.Service] {
		return "", fmt.Errorf("%w: service %q does not exist", ErrPermanent, fr.Schedule.Service)
	}
	f.mu.Lock()
	f.n++
	id := fmt.Sprintf("x%04d", f.n)
	f.mu.Unlock()
	rec, _ := json.Marshal(map[string]any{"schedule": fr.Schedule.Name, "tick": fr.Tick})
	zero := uint64(0)
	ver := fr.StateVersion
	if _, err := f.m.apply(op{"exec/" + id, rec, &zero}, op{StateKey(fr.Schedule.Name), fr.State(id), &ver}); err != nil {
		return "", err
	}
	f.mu.Lock()
	f.running[id] = true
	f.mu.Unlock()
	return id, nil
}

func (f *memFirer) Terminal(_ context.Context, _, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.running[id], nil
}

// ticksFired returns, per tick, how many executions name it.
func (m *memStore) ticksFired(t *testing.T, name string) map[time.Time]int {
	out := map[time.Time]int{}
	items, _ := m.List(context.Background(), "", "exec/")
	for _, it := range items {
		var r struct {
			Schedule string    `json:"schedule"`
			Tick     time.Time `json:"tick"`
		}
		if err := json.Unmarshal(it.Value, &r); err != nil {
			t.Fatal(err)
		}
		if r.Schedule == name {
			out[r.Tick]++
		}
	}
	return out
}

func putDef(t *testing.T, m *memStore, s Schedule) {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	s.Normalize()
	b, _ := json.Marshal(s)
	if _, err := m.apply(op{Key(s.Name), b, nil}); err != nil {
		t.Fatal(err)
	}
}

func state(t *testing.T, m *memStore, name string) State {
	t.Helper()
	m.mu.Lock()
	it, ok := m.data[StateKey(name)]
	m.mu.Unlock()
	var st State
	if ok {
		if err := json.Unmarshal(it.Value, &st); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// drain runs passes at now until nothing more is due then.
func drain(s *Scheduler, now time.Time) {
	s.cfg.Now = func() time.Time { return now }
	for i := 0; i < 1000; i++ {
		if s.pass(context.Background(), "c", map[string]string{}).After(now) {
			return
		}
	}
}

// TestTwoSchedulersFireEachTickOnce: two schedulers over one store (an old
// and a new active that overlap) fire each tick exactly once, and a new one
// catches up the ticks missed while none ran.
func TestTwoSchedulersFireEachTickOnce(t *testing.T) {
	m := newMem()
	f := &memFirer{m: m, running: map[string]bool{}, services: map[string]bool{"svc": true}}
	putDef(t, m, Schedule{Name: "every", Service: "svc", Cron: "* * * * * *", UpdatedAt: t0})
	a := New(Config{}, m, f, zerolog.Nop())
	b := New(Config{}, m, f, zerolog.Nop())
	for i := 1; i <= 10; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		drain(a, now)
		drain(b, now)
	}
	// Nobody runs for 20 s, then b catches up.
	drain(b, t0.Add(30*time.Second))
	got := m.ticksFired(t, "every")
	for i := 1; i <= 30; i++ {
		if n := got[t0.Add(time.Duration(i)*time.Second)]; n != 1 {
			t.Errorf("tick %d fired %d times", i, n)
		}
	}
	if len(got) != 30 {
		t.Errorf("%d ticks fired, want 30", len(got))
	}
	if st := state(t, m, "every"); st.Fired != 30 || !st.Last.Equal(t0.Add(30*time.Second)) || st.LastExecution == "" {
		t.Errorf("state %+v", st)
	}
}

// TestCatchUpWindow: ticks older than CatchUp are missed, not fired.
func TestCatchUpWindow(t *testing.T) {
	m := newMem()
	f := &memFirer{m: m, running: map[string]bool{}, services: map[string]bool{"svc": true}}
	putDef(t, m, Schedule{Name: "min", Service: "svc", Cron: "* * * * *", UpdatedAt: t0})
	s := New(Config{CatchUp: 5 * time.Minute}, m, f, zerolog.Nop())
	drain(s, t0.Add(time.Hour))
	got := m.ticksFired(t, "min")
	if len(got) != 6 {
		t.Errorf("fired %d ticks, want the 6 of the window (both ends in): %v", len(got), got)
	}
	st := state(t, m, "min")
	if st.Missed != 54 || st.Fired != 6 || !strings.Contains(st.LastError, "catch-up window") {
		t.Errorf("state %+v", st)
	}
}

// TestOverlapForbid: while the previous firing runs, ticks are skipped and
// recorded so; once it ends, the next tick fires.
func TestOverlapForbid(t *testing.T) {
	m := newMem()
	f := &memFirer{m: m, running: map[string]bool{}, services: map[string]bool{"svc": true}}
	putDef(t, m, Schedule{Name: "f", Service: "svc", Cron: "* * * * * *", Overlap: OverlapForbid, UpdatedAt: t0})
	s := New(Config{}, m, f, zerolog.Nop())
	for i := 1; i <= 3; i++ {
		drain(s, t0.Add(time.Duration(i)*time.Second))
	}
	if got := m.ticksFired(t, "f"); len(got) != 1 {
		t.Fatalf("fired %v, want tick 1 only", got)
	}
	st := state(t, m, "f")
	if st.Skipped != 2 || !st.LastSkipped.Equal(t0.Add(3*time.Second)) {
		t.Errorf("state %+v, want 2 skipped", st)
	}
	f.mu.Lock()
	for id := range f.running {
		delete(f.running, id)
	}
	f.mu.Unlock()
	drain(s, t0.Add(4*time.Second))
	if got := m.ticksFired(t, "f"); got[t0.Add(4*time.Second)] != 1 {
		t.Errorf("tick 4 not fired after the previous ended: %v", got)
	}
}

// TestTemporaryAndPermanentFailures: a temporary failure leaves the tick
// due (fired later); a permanent one is recorded as missed with the reason.
func TestTemporaryAndPermanentFailures(t *testing.T) {
	m := newMem()
	f := &memFirer{m: m, running: map[string]bool{}, services: map[string]bool{"svc": true}}
	putDef(t, m, Schedule{Name: "t", Service: "svc", Cron: "* * * * * *", UpdatedAt: t0})
	putDef(t, m, Schedule{Name: "gone", Service: "nosuch", Cron: "* * * * * *", UpdatedAt: t0})
	s := New(Config{}, m, f, zerolog.Nop())
	f.fail = errors.New("no quorum")
	drain(s, t0.Add(time.Second))
	if got := m.ticksFired(t, "t"); len(got) != 0 {
		t.Fatalf("fired during a failure: %v", got)
	}
	f.fail = nil
	drain(s, t0.Add(2*time.Second))
	if got := m.ticksFired(t, "t"); got[t0.Add(time.Second)] != 1 || got[t0.Add(2*time.Second)] != 1 {
		t.Errorf("ticks after the failure: %v", got)
	}
	if st := state(t, m, "gone"); st.Missed != 2 || !strings.Contains(st.LastError, "does not exist") {
		t.Errorf("gone: %+v", st)
	}
	// A state whose definition is gone is removed.
	m.apply(op{Key("t"), nil, nil})
	drain(s, t0.Add(3*time.Second))
	if _, ok := m.data[StateKey("t")]; ok {
		t.Error("orphan state kept")
	}
}

func TestStatusNext(t *testing.T) {
	def := Schedule{Name: "a", Service: "s", Cron: "0 * * * *"}
	st, _ := json.Marshal(State{Last: t0, LastFired: t0, LastExecution: "x1"})
	s := StatusOf(def, st, t0.Add(time.Minute))
	if !s.Next.Equal(t0.Add(time.Hour)) || s.LastExecution != "x1" || !s.LastFired.Equal(t0) {
		t.Errorf("status %+v", s)
	}
}
