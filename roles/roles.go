package roles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Role names of the contract. Only roles with an implementation are
// registered with a Manager; the rest are named here for the next ones.
const (
	Retention       = "retention"
	ThrottleManager = "throttle-manager"
	CentralLogger   = "central-logger"
	CacheCleanup    = "cache-cleanup"
)

// FenceKey is the key in a cluster's group holding the Record of role.
func FenceKey(role string) string { return "roles/" + role }

// Record is the value of a role's fence key: the last activation.
type Record struct {
	Role string `json:"role"`
	Node string `json:"node"`
	// Term is the fence: the Raft term the activation belongs to.
	Term uint64 `json:"term"`
	// Since is when the activation started (after its lease).
	Since time.Time `json:"since"`
	// Standbys are the group's other voters when the activation started,
	// for nodes that hold no replica and so cannot ask Raft.
	Standbys []string `json:"standbys,omitempty"`
}

// DecodeRecord decodes a fence key's value.
func DecodeRecord(v []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, fmt.Errorf("roles: decode fence record: %w", err)
	}
	return r, nil
}

// State is this node's view of one group's leadership.
type State struct {
	Leader bool
	Term   uint64
}

// Leadership is what the manager needs of consensus. Methods must not
// block and must be safe for concurrent use.
type Leadership interface {
	// Leadership reports this node's view of cluster's group (the zero
	// State when it hosts no replica).
	Leadership(cluster string) State
	// LeaderChanged returns a channel closed at the next leadership change
	// of cluster's group as this node sees it. The manager takes it before
	// reading Leadership.
	LeaderChanged(cluster string) <-chan struct{}
}

// Store is the cluster's replicated key/value store as roles needs it.
// Put writes key with a compare-and-set on its version (0: must not
// exist); conflict reports a failed compare, not an error.
type Store interface {
	Get(ctx context.Context, cluster, key string) (value []byte, version uint64, found bool, err error)
	Put(ctx context.Context, cluster, key string, value []byte, cas uint64) (version uint64, conflict bool, err error)
}

// Clock is the manager's time (tests use a fake one).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Role is one singleton's work.
type Role struct {
	Name string
	// Run does the role's work on the active instance until ctx ends (this
	// node lost the leadership of f.Term, or the manager stops). A Run that
	// returns while the activation lasts is started again after
	// Config.Retry.
	Run func(ctx context.Context, f *Fence) error
}

// Config configures a Manager.
type Config struct {
	// Node is this node's name, written into fence records.
	Node string
	// Clusters are the clusters whose roles this node may run.
	Clusters []string
	// Lease is how long a new leader waits before it starts its roles: at
	// least twice the election timeout (see the package doc).
	Lease time.Duration
	// Poll is the period of the leadership re-check under the
	// notifications. Default Lease/4.
	Poll time.Duration
	// Retry is the delay before a failed fence write or a returned Run is
	// tried again. Default 200ms.
	Retry time.Duration
	// Verify is the period at which an active instance re-reads its fence
	// key, so one replaced under it (a snapshot restore) stops the
	// activation even when the role writes nothing. Default 10×Lease.
	Verify time.Duration
	// StoreTimeout bounds one store call. Default 5s.
	StoreTimeout time.Duration
	// Clock defaults to the real one.
	Clock Clock
	// Voters, when set, names the voters of cluster's group: the ones
	// other than this node are written into fence records as standbys.
	Voters func(cluster string) []string
}

// Active is one role active on this node.
type Active struct {
	Cluster, Role string
	Term          uint64
	Since         time.Time
}

// Manager runs the registered roles of every configured cluster while this
// node leads the cluster's group.
type Manager struct {
	cfg   Config
	lead  Leadership
	store Store
	log   zerolog.Logger
	roles []Role

	mu     sync.Mutex
	active map[string]Active // cluster/role →
	phase  map[string]string // cluster → what its loop does now (tests)
	start  bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks cfg and the roles and wires a Manager; Start runs it.
func New(cfg Config, lead Leadership, store Store, log zerolog.Logger, rs ...Role) (*Manager, error) {
	if cfg.Node == "" || lead == nil || store == nil {
		return nil, errors.New("roles: node name, leadership and store are required")
	}
	if cfg.Lease <= 0 {
		return nil, errors.New("roles: Lease must be positive")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = cfg.Lease / 4
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 200 * time.Millisecond
	}
	if cfg.Verify <= 0 {
		cfg.Verify = 10 * cfg.Lease
	}
	if cfg.StoreTimeout <= 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Name == "" || strings.ContainsAny(r.Name, "/ ") || r.Run == nil || seen[r.Name] {
			return nil, fmt.Errorf("roles: bad or duplicate role %q", r.Name)
		}
		seen[r.Name] = true
	}
	rs = append([]Role(nil), rs...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return &Manager{cfg: cfg, lead: lead, store: store, roles: rs,
		log:    log.With().Str("component", "roles").Logger(),
		active: map[string]Active{}, phase: map[string]string{}}, nil
}

// Names returns the registered roles, sorted.
func (m *Manager) Names() []string {
	out := make([]string, len(m.roles))
	for i, r := range m.roles {
		out[i] = r.Name
	}
	return out
}

// Lease is the wait of a new leader before it starts its roles.
func (m *Manager) Lease() time.Duration { return m.cfg.Lease }

// Start launches one loop per cluster. Stop ends them.
func (m *Manager) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.start {
		return
	}
	m.start = true
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, c := range m.cfg.Clusters {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.runCluster(ctx, c)
		}()
	}
}

// Stop cancels every role and waits for every goroutine of the manager.
func (m *Manager) Stop() {
	m.mu.Lock()
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
}

// Active returns the roles active on this node, sorted.
func (m *Manager) Active() []Active {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Active, 0, len(m.active))
	for _, a := range m.active {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Cluster != out[j].Cluster {
			return out[i].Cluster < out[j].Cluster
		}
		return out[i].Role < out[j].Role
	})
	return out
}

func (m *Manager) setPhase(cluster, p string) {
	m.mu.Lock()
	m.phase[cluster] = p
	m.mu.Unlock()
}

func (m *Manager) phaseOf(cluster string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.phase[cluster]
}

// runCluster follows cluster's leadership until ctx ends.
func (m *Manager) runCluster(ctx context.Context, cluster string) {
	for ctx.Err() == nil {
		changed := m.lead.LeaderChanged(cluster)
		st := m.lead.Leadership(cluster)
		if st.Leader {
			m.lead1(ctx, cluster, st.Term, changed)
			continue
		}
		m.setPhase(cluster, "standby")
		select {
		case <-ctx.Done():
		case <-changed:
		case <-m.cfg.Clock.After(m.cfg.Poll):
		}
	}
}

// lead1 is one leadership of cluster in term: the lease, then every role,
// until the leadership ends. It returns after every role has returned.
func (m *Manager) lead1(ctx context.Context, cluster string, term uint64, changed <-chan struct{}) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // ends the leadership's context at its end
		defer wg.Done()
		defer cancel()
		for {
			select {
			case <-lctx.Done():
				return
			case <-changed:
				return
			case <-m.cfg.Clock.After(m.cfg.Poll):
				if st := m.lead.Leadership(cluster); !st.Leader || st.Term != term {
					return
				}
			}
		}
	}()
	leaseOver := m.cfg.Clock.After(m.cfg.Lease)
	m.setPhase(cluster, fmt.Sprintf("lease %d", term))
	m.log.Info().Str("cluster", cluster).Uint64("term", term).Dur("lease", m.cfg.Lease).
		Msg("leader: waiting out the lease before starting roles")
	select {
	case <-lctx.Done():
		return
	case <-leaseOver:
	}
	m.setPhase(cluster, fmt.Sprintf("active %d", term))
	for _, r := range m.roles {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.activate(lctx, cluster, term, r)
		}()
	}
	<-lctx.Done()
}

// activate claims r's fence for term and runs r until ctx (the
// leadership) ends. An activation fenced out while the leadership lasts
// claims again: the fence key may have been replaced by a snapshot restore
// (see node), not by a later leader; a later leader's record is never
// overwritten, and a stale one's leadership ends soon.
func (m *Manager) activate(ctx context.Context, cluster string, term uint64, r Role) {
	for ctx.Err() == nil {
		f, err := m.claim(ctx, cluster, term, r.Name)
		if err != nil {
			return // ctx ended
		}
		m.run(ctx, cluster, r, f)
		if ctx.Err() == nil {
			m.log.Warn().Str("cluster", cluster).Str("role", r.Name).Uint64("fence", term).
				Msg("fenced out while leading; claiming the role again")
		}
	}
}

// run runs r under fence f until ctx ends or f is fenced out.
func (m *Manager) run(ctx context.Context, cluster string, r Role, f *Fence) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.onLost = cancel
	log := m.log.With().Str("cluster", cluster).Str("role", r.Name).Uint64("fence", f.Term).Logger()
	key := cluster + "/" + r.Name
	m.mu.Lock()
	m.active[key] = Active{Cluster: cluster, Role: r.Name, Term: f.Term, Since: f.Since}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.active, key)
		m.mu.Unlock()
		log.Info().Msg("role stopped")
	}()
	log.Info().Msg("role active")
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { // the fence key still ours?
		defer wg.Done()
		for {
			select {
			case <-rctx.Done():
				return
			case <-m.cfg.Clock.After(m.cfg.Verify):
				if err := f.verify(rctx); errors.Is(err, ErrFenced) {
					log.Warn().Msg("fence key no longer holds this activation")
					return
				}
			}
		}
	}()
	for {
		err := r.Run(rctx, f)
		if rctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Dur("retry", m.cfg.Retry).Msg("role returned while active; restarting it")
		select {
		case <-rctx.Done():
			return
		case <-m.cfg.Clock.After(m.cfg.Retry):
		}
	}
}

// errSuperseded: the fence key holds a later term than ours.
var errSuperseded = errors.New("roles: the fence key holds a later term")

// claim writes role's fence record for term, retrying every Config.Retry
// until it is written or ctx ends. A record of a later term is not
// overwritten: a later leader holds the role, and this node's leadership
// is about to end (or the record came from a restore and is about to go).
func (m *Manager) claim(ctx context.Context, cluster string, term uint64, role string) (*Fence, error) {
	key := FenceKey(role)
	warned := false
	for {
		f, err := m.claimOnce(ctx, cluster, term, role, key)
		if err == nil {
			return f, nil
		}
		ev := m.log.Debug()
		if errors.Is(err, errSuperseded) && !warned {
			ev, warned = m.log.Warn(), true
		}
		ev.Err(err).Str("cluster", cluster).Str("role", role).Uint64("term", term).Msg("role not claimed; retrying")
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-m.cfg.Clock.After(m.cfg.Retry):
		}
	}
}

func (m *Manager) claimOnce(ctx context.Context, cluster string, term uint64, role, key string) (*Fence, error) {
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	v, ver, found, err := m.store.Get(sctx, cluster, key)
	if err != nil {
		return nil, fmt.Errorf("read fence key: %w", err)
	}
	if found {
		rec, err := DecodeRecord(v)
		switch {
		case err != nil: // overwrite a record we cannot read
		case rec.Term > term:
			return nil, fmt.Errorf("%w: %d > %d", errSuperseded, rec.Term, term)
		case rec.Term == term && rec.Node == m.cfg.Node:
			// Ours: a write whose outcome we did not learn, or a Run that
			// restarted in the same term.
			return m.newFence(cluster, role, rec, v, ver), nil
		}
	}
	rec := Record{Role: role, Node: m.cfg.Node, Term: term, Since: m.cfg.Clock.Now().UTC()}
	if m.cfg.Voters != nil {
		for _, v := range m.cfg.Voters(cluster) {
			if v != m.cfg.Node {
				rec.Standbys = append(rec.Standbys, v)
			}
		}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	nv, conflict, err := m.store.Put(sctx, cluster, key, val, ver)
	if err != nil {
		return nil, fmt.Errorf("write fence key: %w", err)
	}
	if conflict {
		return nil, errors.New("fence key changed meanwhile")
	}
	return m.newFence(cluster, role, rec, val, nv), nil
}

func (m *Manager) newFence(cluster, role string, rec Record, val []byte, ver uint64) *Fence {
	return &Fence{Cluster: cluster, Role: role, Node: rec.Node, Term: rec.Term, Since: rec.Since,
		store: m.store, timeout: m.cfg.StoreTimeout, value: val, version: ver}
}
