package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory Store: one map per cluster, one revision counter
// per cluster, CAS as the contract says.
type memStore struct {
	mu       sync.Mutex
	data     map[string]map[string]memItem
	rev      map[string]uint64
	leader   map[string]bool
	failPuts error // when set, every write fails with it
	// lyingPuts: the next this many writes apply but report errUnavailable
	// (an unknown outcome, as when the leader dies after committing).
	lyingPuts int
	writes    int
	// failingGets: after a conflict, the next this many reads fail with
	// errUnavailable (the election that made a write's outcome unknown is
	// not over yet when the writer looks).
	failingGets int
	armGets     bool
	// replayedPuts: the next this many writes apply and then answer a
	// conflict, as when a forwarding layer re-sent a compare-and-set that
	// had already applied.
	replayedPuts int
	// limitWrites: only writesLeft more writes (puts or deletes) apply;
	// later ones fail with errUnavailable (the leader died between two
	// commands).
	limitWrites bool
	writesLeft  int
	// maxValue, when set, refuses values over it instead of over
	// memMaxValueLen (a store that measures differently from dispatch).
	maxValue int
}

// spend takes one write from the budget; the caller holds mu.
func (m *memStore) spend() error {
	if !m.limitWrites {
		return nil
	}
	if m.writesLeft <= 0 {
		return errUnavailable
	}
	m.writesLeft--
	return nil
}

type memItem struct {
	value   []byte
	version uint64
}

var errUnavailable = errors.New("memstore: no quorum")

// memMaxValueLen and errBadCommand mirror consensus/fsm (MaxValueLen,
// ErrBadCommand): the real store refuses a value over 4 MiB as a bad
// command, which node's adapter classifies as ErrTooLarge, and so must the
// fake, or tests hide records that never land.
const memMaxValueLen = MaxRecordSize

var errBadCommand = errors.New("fsm: bad command")

func newMemStore() *memStore {
	return &memStore{data: map[string]map[string]memItem{}, rev: map[string]uint64{}, leader: map[string]bool{}}
}

func (m *memStore) Get(ctx context.Context, cluster, key string) ([]byte, uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, false, err // a cancelled call never reaches the real store either
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.armGets && m.failingGets > 0 {
		m.failingGets--
		return nil, 0, false, errUnavailable
	}
	it, ok := m.data[cluster][key]
	if !ok {
		return nil, 0, false, nil
	}
	return append([]byte(nil), it.value...), it.version, true, nil
}

func (m *memStore) checkCAS(cluster, key string, cas *uint64) error {
	if cas == nil {
		return nil
	}
	it, ok := m.data[cluster][key]
	if *cas == 0 && ok || *cas != 0 && (!ok || it.version != *cas) {
		m.armGets = true
		return &ConflictError{Key: key}
	}
	return nil
}

func (m *memStore) Put(ctx context.Context, cluster, key string, value []byte, cas *uint64) (uint64, error) {
	v, err := m.PutMulti(ctx, cluster, []KV{{Key: key, Value: value, CAS: cas}})
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

func (m *memStore) PutMulti(ctx context.Context, cluster string, kvs []KV) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPuts != nil {
		return nil, m.failPuts
	}
	limit := memMaxValueLen
	if m.maxValue > 0 {
		limit = m.maxValue
	}
	for _, kv := range kvs {
		if len(kv.Value) > limit {
			return nil, fmt.Errorf("%w: %w: value of %d bytes", ErrTooLarge, errBadCommand, len(kv.Value))
		}
	}
	for _, kv := range kvs {
		if err := m.checkCAS(cluster, kv.Key, kv.CAS); err != nil {
			return nil, err
		}
	}
	if err := m.spend(); err != nil {
		return nil, err
	}
	if m.data[cluster] == nil {
		m.data[cluster] = map[string]memItem{}
	}
	m.rev[cluster]++
	vers := make([]uint64, len(kvs))
	for i, kv := range kvs {
		m.data[cluster][kv.Key] = memItem{value: append([]byte(nil), kv.Value...), version: m.rev[cluster]}
		vers[i] = m.rev[cluster]
	}
	m.writes++
	if m.replayedPuts > 0 {
		m.replayedPuts--
		return nil, &ConflictError{Key: kvs[0].Key}
	}
	if m.lyingPuts > 0 {
		m.lyingPuts--
		return nil, errUnavailable
	}
	return vers, nil
}

func (m *memStore) Delete(ctx context.Context, cluster, key string, cas *uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPuts != nil {
		return m.failPuts
	}
	if err := m.checkCAS(cluster, key, cas); err != nil {
		return err
	}
	if err := m.spend(); err != nil {
		return err
	}
	delete(m.data[cluster], key)
	m.rev[cluster]++
	return nil
}

func (m *memStore) DeleteMulti(ctx context.Context, cluster string, kvs []KV) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPuts != nil {
		return m.failPuts
	}
	for _, kv := range kvs {
		if err := m.checkCAS(cluster, kv.Key, kv.CAS); err != nil {
			return err
		}
	}
	if err := m.spend(); err != nil {
		return err
	}
	for _, kv := range kvs {
		delete(m.data[cluster], kv.Key)
	}
	m.rev[cluster]++
	m.writes++
	return nil
}

func (m *memStore) List(ctx context.Context, cluster, prefix string, o ListOptions) ([]Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for k := range m.data[cluster] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if o.Reverse {
		for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	limit := o.Limit
	if limit <= 0 {
		limit = 1000
	}
	var out []Entry
	size := 0
	for _, k := range keys {
		if o.After != "" && (!o.Reverse && k <= o.After || o.Reverse && k >= o.After) {
			continue
		}
		it := m.data[cluster][k]
		if len(o.Match) > 0 {
			var top map[string]any
			if json.Unmarshal(it.value, &top) != nil {
				continue
			}
			ok := true
			for f, want := range o.Match {
				if s, isStr := top[f].(string); !isStr || s != want {
					ok = false
				}
			}
			if !ok {
				continue
			}
		}
		if o.MaxBytes > 0 && len(out) > 0 && size+len(it.value) > o.MaxBytes {
			break // as consensus/fsm's ListQuery.MaxBytes
		}
		size += len(it.value)
		out = append(out, Entry{Key: k, Value: append([]byte(nil), it.value...), Version: it.version})
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

func (m *memStore) IsLeader(cluster string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader[cluster]
}

func (m *memStore) setLeader(cluster string, v bool) {
	m.mu.Lock()
	m.leader[cluster] = v
	m.mu.Unlock()
}

func (m *memStore) count(cluster, prefix string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k := range m.data[cluster] {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

var _ Store = (*memStore)(nil)

// memRunners is a settable membership view.
type memRunners struct {
	mu      sync.Mutex
	runners map[string]Runner
	cluster map[string]string
	status  map[string]string // extra nodes (non-runners)
}

func newMemRunners() *memRunners {
	return &memRunners{runners: map[string]Runner{}, cluster: map[string]string{}, status: map[string]string{}}
}

func (m *memRunners) set(cluster string, r Runner) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Status == "" {
		r.Status = MemberAlive
	}
	if r.Roles == nil {
		r.Roles = []string{"gateway", RoleRunner}
	}
	m.runners[r.Name] = r
	m.cluster[r.Name] = cluster
}

func (m *memRunners) setStatus(name, status string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.runners[name]; ok {
		r.Status = status
		m.runners[name] = r
		return
	}
	m.status[name] = status
}

func (m *memRunners) Runners(cluster string) []Runner {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Runner
	for n, r := range m.runners {
		if m.cluster[n] == cluster {
			out = append(out, r)
		}
	}
	return out
}

func (m *memRunners) Lookup(name string) (Runner, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.runners[name]; ok {
		return r, true
	}
	s, ok := m.status[name]
	return Runner{Name: name, Status: s}, ok
}

var _ Runners = (*memRunners)(nil)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
