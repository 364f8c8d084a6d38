package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Item is one stored key.
type Item struct {
	Key     string
	Value   []byte
	Version uint64
}

// Store is the cluster's replicated store as the scheduler needs it. The
// agent's implementation guards every write with the scheduler role's
// fence when ctx carries one. Reads are linearizable.
type Store interface {
	List(ctx context.Context, cluster, prefix string) ([]Item, error)
	// Put writes key by compare-and-set on version (0: must not exist) and
	// returns the new version; a failed compare is an error matching
	// ErrConflict.
	Put(ctx context.Context, cluster, key string, value []byte, version uint64) (uint64, error)
	// Delete removes key by compare-and-set on version.
	Delete(ctx context.Context, cluster, key string, version uint64) error
}

// Firing is one tick to fire.
type Firing struct {
	Schedule Schedule
	Tick     time.Time
	// State returns the new value of the schedule's state key once the
	// execution's ID is known. The Firer writes it, by compare-and-set on
	// StateVersion (0: the key must not exist), in the same command as the
	// queued execution record: the tick fires exactly when the state
	// moves past it.
	State        func(execID string) []byte
	StateVersion uint64
}

// Firer starts executions (the agent adapts the dispatcher).
type Firer interface {
	// Fire starts f's async execution and returns its ID. ErrConflict:
	// the state key changed (nothing was written); ErrPermanent wraps
	// what no retry can fix (the service is gone or is not exec, the
	// input is refused); anything else is retried.
	Fire(ctx context.Context, cluster string, f Firing) (execID string, err error)
	// Terminal reports whether execution id has ended (true when its
	// record is gone).
	Terminal(ctx context.Context, cluster, id string) (bool, error)
}

// Sentinel errors.
var (
	ErrConflict  = errors.New("schedule: changed concurrently")
	ErrPermanent = errors.New("schedule: the tick cannot fire")
	ErrNotFound  = errors.New("schedule: not found")
)

// Config tunes the scheduler. Zero values take the defaults.
type Config struct {
	// CatchUp is how far back a scheduler fires the ticks it missed (no
	// active scheduler, no quorum, no runner): older ticks are counted in
	// State.Missed and never fired. Default 5m.
	CatchUp time.Duration
	// MaxCatchUp bounds the ticks of one schedule fired to catch up: the
	// latest are fired, older ones are missed. Default 60.
	MaxCatchUp int
	// MaxWait is the longest the scheduler sleeps between passes, so new
	// and changed definitions are seen within it. Default 1s.
	MaxWait time.Duration
	// Retry is the wait after a tick that could not fire for a temporary
	// reason. Default 500ms.
	Retry time.Duration
	// StoreTimeout bounds one pass's store and firing calls. Default 5s.
	StoreTimeout time.Duration
	// Now and After are the clock (tests inject one).
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time
}

func (c *Config) defaults() {
	if c.CatchUp <= 0 {
		c.CatchUp = 5 * time.Minute
	}
	if c.MaxCatchUp <= 0 {
		c.MaxCatchUp = 60
	}
	if c.MaxWait <= 0 {
		c.MaxWait = time.Second
	}
	if c.Retry <= 0 {
		c.Retry = 500 * time.Millisecond
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
}

// Scheduler fires the schedules of a cluster. Run is the work of the
// cluster's scheduler role: it runs on one node at a time.
type Scheduler struct {
	cfg   Config
	store Store
	firer Firer
	log   zerolog.Logger
}

// New wires a scheduler.
func New(cfg Config, store Store, firer Firer, log zerolog.Logger) *Scheduler {
	cfg.defaults()
	return &Scheduler{cfg: cfg, store: store, firer: firer, log: log.With().Str("component", "scheduler").Logger()}
}

// Run fires cluster's schedules until ctx ends. ctx carries the role's
// fence, which the store and firer add to their writes.
func (s *Scheduler) Run(ctx context.Context, cluster string) error {
	warned := map[string]string{} // schedule → last temporary error logged
	for {
		wake := s.pass(ctx, cluster, warned)
		d := max(wake.Sub(s.cfg.Now()), 0)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.cfg.After(min(d, s.cfg.MaxWait)):
		}
	}
}

// stateOf is a schedule's decoded state and its version (0: none yet).
type stateOf struct {
	st  State
	ver uint64
}

// pass makes at most one step per schedule (fire, skip or record a
// missed stretch) and returns when the next pass is due.
func (s *Scheduler) pass(ctx context.Context, cluster string, warned map[string]string) time.Time {
	now := s.cfg.Now()
	wake := now.Add(s.cfg.MaxWait)
	lctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
	defer cancel()
	defs, err := s.store.List(lctx, cluster, Prefix)
	if err == nil {
		var states []Item
		if states, err = s.store.List(lctx, cluster, StatePrefix); err == nil {
			return s.step(ctx, cluster, now, wake, defs, states, warned)
		}
	}
	if ctx.Err() == nil {
		s.log.Debug().Err(err).Str("cluster", cluster).Msg("schedules not read; retrying")
	}
	return now.Add(s.cfg.Retry)
}

func (s *Scheduler) step(ctx context.Context, cluster string, now, wake time.Time, defs, states []Item,
	warned map[string]string) time.Time {
	byName := map[string]stateOf{}
	for _, it := range states {
		var st State
		if json.Unmarshal(it.Value, &st) != nil {
			st = State{} // rewritten at the next firing
		}
		byName[strings.TrimPrefix(it.Key, StatePrefix)] = stateOf{st, it.Version}
	}
	seen := map[string]bool{}
	for _, it := range defs {
		var def Schedule
		if err := json.Unmarshal(it.Value, &def); err != nil {
			continue
		}
		seen[def.Name] = true
		spec, err := def.Spec()
		if err != nil {
			continue // validated on write; a definition this binary cannot read waits for one that can
		}
		sctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout) // each schedule's step has its own bound
		next, err := s.one(sctx, cluster, now, def, spec, byName[def.Name])
		cancel()
		switch {
		case err == nil:
			delete(warned, def.Name)
		case errors.Is(err, ErrConflict) || ctx.Err() != nil:
			next = now // read again at once
		default:
			if warned[def.Name] != err.Error() {
				warned[def.Name] = err.Error()
				s.log.Warn().Err(err).Str("schedule", def.Name).Msg("schedule tick not fired yet; retrying")
			}
			next = now.Add(s.cfg.Retry)
		}
		if !next.IsZero() && next.Before(wake) {
			wake = next
		}
	}
	// A state whose definition is gone (deleted while a tick fired).
	for name, so := range byName {
		if !seen[name] {
			dctx, cancel := context.WithTimeout(ctx, s.cfg.StoreTimeout)
			_ = s.store.Delete(dctx, cluster, StateKey(name), so.ver)
			cancel()
		}
	}
	return wake
}

// one makes the next step of def, if one is due, and returns when its
// next tick is.
func (s *Scheduler) one(ctx context.Context, cluster string, now time.Time, def Schedule, spec Spec, so stateOf) (time.Time, error) {
	from := so.st.Last
	if so.ver == 0 || from.IsZero() {
		from = def.UpdatedAt
		if from.IsZero() {
			from = now
		}
	}
	ticks, missed, lastMissed := s.due(spec, from, now)
	if missed > 0 {
		st := so.st
		st.Last, st.Missed = lastMissed, st.Missed+uint64(missed)
		st.LastError = fmt.Sprintf("%d tick(s) up to %s were older than the catch-up window (%s) or beyond its %d ticks, and were not fired",
			missed, lastMissed.Format(time.RFC3339), s.cfg.CatchUp, s.cfg.MaxCatchUp)
		return now, s.putState(ctx, cluster, def.Name, st, so.ver)
	}
	if len(ticks) == 0 {
		return spec.Next(from), nil
	}
	tick := ticks[0]
	after := now // more ticks due: the next pass comes at once
	if len(ticks) == 1 {
		after = spec.Next(tick)
	}
	if def.Overlap == OverlapForbid && so.st.LastExecution != "" {
		done, err := s.firer.Terminal(ctx, cluster, so.st.LastExecution)
		if err != nil {
			return time.Time{}, fmt.Errorf("read the previous firing %s: %w", so.st.LastExecution, err)
		}
		if !done {
			st := so.st
			st.Last, st.LastSkipped, st.Skipped = tick, tick, st.Skipped+1
			return after, s.putState(ctx, cluster, def.Name, st, so.ver)
		}
	}
	st := so.st
	st.Last, st.LastFired, st.Fired = tick, tick, st.Fired+1
	_, err := s.firer.Fire(ctx, cluster, Firing{Schedule: def, Tick: tick, StateVersion: so.ver,
		State: func(id string) []byte {
			st.LastExecution = id
			b, _ := json.Marshal(st)
			return b
		}})
	if errors.Is(err, ErrPermanent) {
		st := so.st
		st.Last, st.Missed, st.LastError = tick, st.Missed+1, err.Error()
		return after, s.putState(ctx, cluster, def.Name, st, so.ver)
	}
	return after, err
}

// due returns the ticks in (from, now] within the catch-up window (the
// latest MaxCatchUp), and how many older ones are missed, with the last
// of those.
func (s *Scheduler) due(spec Spec, from, now time.Time) (ticks []time.Time, missed int, lastMissed time.Time) {
	floor := now.Add(-s.cfg.CatchUp)
	t := from
	for i := 0; ; i++ {
		n := spec.Next(t)
		if n.IsZero() || n.After(now) {
			break
		}
		if n.Before(floor) {
			missed++
			lastMissed = n
			if i > 100000 { // a long outage of a frequent schedule: jump
				t = floor.Add(-time.Nanosecond)
			} else {
				t = n
			}
			continue
		}
		ticks = append(ticks, n)
		t = n
		if len(ticks) > s.cfg.MaxCatchUp {
			missed++
			lastMissed = ticks[0]
			ticks = ticks[1:]
		}
	}
	if missed > 0 {
		return nil, missed, lastMissed
	}
	return ticks, 0, time.Time{}
}

func (s *Scheduler) putState(ctx context.Context, cluster, name string, st State, ver uint64) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.store.Put(ctx, cluster, StateKey(name), b, ver)
	return err
}

// Status is a schedule as `schedules list` shows it: its definition, its
// state, and its next tick.
type Status struct {
	Schedule
	State *State `json:"state,omitempty"`
	// Next is the next tick (omitted when none within five years).
	Next time.Time `json:"next,omitzero"`
	// LastFired and LastExecution repeat the state's, for tables.
	LastFired     time.Time `json:"last_fired,omitzero"`
	LastExecution string    `json:"last_execution,omitempty"`
}

// StatusOf builds def's Status from its state item (nil: none) at now.
func StatusOf(def Schedule, state []byte, now time.Time) Status {
	out := Status{Schedule: def}
	from := now
	if state != nil {
		var st State
		if json.Unmarshal(state, &st) == nil {
			out.State = &st
			out.LastFired, out.LastExecution = st.LastFired, st.LastExecution
			if st.Last.After(from) {
				from = st.Last
			}
		}
	}
	if spec, err := def.Spec(); err == nil {
		out.Next = spec.Next(from)
	}
	return out
}

// Sort orders statuses by name.
func Sort(ss []Status) { sort.Slice(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name }) }
