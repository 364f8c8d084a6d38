package throttle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// ErrNotManager: this node holds no activation of the throttle-manager
// role (or a later one exists); the caller looks the manager up again.
var ErrNotManager = errors.New("throttle: this node is not the active throttle manager")

// Store is the cluster's group as the manager needs it. Save applies puts
// and deletes in one command fenced by the activation (roles.Fence.Guard):
// it fails once a later activation holds the role.
type Store interface {
	Load(ctx context.Context, key string) ([]byte, bool, error)
	Keys(ctx context.Context, prefix string) ([]string, error)
	Save(ctx context.Context, puts map[string][]byte, deletes []string) error
}

// Key prefixes in the group.
const (
	keyPrefix = "throttle/"
	rosterKey = keyPrefix + "roster"
	slotsKey  = keyPrefix + "slots/"  // + service: the slot holdings
	allocKey  = keyPrefix + "window/" // + limit/window/key: the durable allocation
)

// ManagerConfig configures a Manager.
type ManagerConfig struct {
	Node string
	// MaxSkew bounds the difference between any two nodes' clocks.
	// Default 250ms.
	MaxSkew time.Duration
	// SlotLease is how long a node may start requests on slots it holds
	// after it sent the ask that last confirmed them. Default 3s.
	SlotLease time.Duration
	// Reclaim is how long after SlotLease the slots of a node that is not
	// heard from come back: the longest a request may stay in flight.
	// Default 5m.
	Reclaim time.Duration
	// StoreTimeout bounds one store call. Default 5s.
	StoreTimeout time.Duration
	// Lease is how long a node cut from the manager may spend its fallback
	// shares, from the moment it sent the ask of its last reply (replies
	// carry it). Default DefaultLease.
	Lease time.Duration
	// MaxDrift bounds how much faster or slower than real time any node's
	// monotonic clock runs, as a fraction: the manager waits a lease
	// stretched by it before it reclaims a share. Default 0.01.
	MaxDrift float64
	// Departed reports whether node has left the cluster (a graceful leave,
	// or an operator's force-leave): it admits nothing any more, so its
	// share comes back without waiting out its lease. It is called with the
	// manager's lock held and must not block; nil: never.
	Departed func(node string) bool
	Clock    func() time.Time
}

// Lease bounds, and the default (see the package doc, "Leases").
const (
	DefaultLease = 30 * time.Second
	MinLease     = 2 * time.Second
	MaxLease     = 24 * time.Hour
)

// leaseMargin is added to the drift-stretched lease before a share is
// reclaimed: room for what the drift bound does not model (scheduling).
const leaseMargin = time.Second

// sweepEvery is how often, at most, the manager looks for leases that are
// over (it looks while it answers asks).
const sweepEvery = 200 * time.Millisecond

func (c *ManagerConfig) defaults() {
	if c.MaxSkew <= 0 {
		c.MaxSkew = 250 * time.Millisecond
	}
	if c.SlotLease <= 0 {
		c.SlotLease = 3 * time.Second
	}
	if c.Reclaim <= 0 {
		c.Reclaim = 5 * time.Minute
	}
	if c.StoreTimeout <= 0 {
		c.StoreTimeout = 5 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = DefaultLease
	}
	if c.MaxDrift <= 0 || c.MaxDrift >= 0.5 {
		c.MaxDrift = 0.01
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
}

// wait is how long, on the manager's clock, a lease of d told to a node
// may still run after the manager answered it: the node counts d on its
// own clock from before that answer, and either clock may be off in rate
// by MaxDrift.
func (c *ManagerConfig) wait(d time.Duration) time.Duration {
	r := c.MaxDrift
	return time.Duration(float64(d)*(1+r)/(1-r)) + leaseMargin
}

// FirstWindow is the first window of length per an activation that
// started at since grants in, for windows shorter than DurableFrom: the
// previous manager granted at most one window ahead of its clock, and it
// stopped before since (see the package doc).
func FirstWindow(since time.Time, skew, per time.Duration) int64 {
	return Window(since.Add(skew), per) + 2
}

// Manager is the active side: it answers asks while an activation runs
// (Activate), and refuses them otherwise.
type Manager struct {
	cfg ManagerConfig
	log zerolog.Logger

	mu  sync.Mutex // serializes asks, and the store calls they make
	act *activation
}

type activation struct {
	term  uint64
	since time.Time
	// start is the activation's first clock reading (monotonic): every
	// reply of a former activation was sent before it.
	start time.Time
	hwm   time.Time // the latest wall reading seen (grants never go past Window(hwm)+1)
	skew  time.Duration
	store Store
	// roster: every node that ever asked, with the roster size its
	// fallback share is at most Cap/N of (0: no fallback yet).
	roster map[string]int
	limits map[lkey]*mlimit
	slots  map[string]*mslots
	seen   map[string]time.Time // node → last ask
	demand map[string]demandOf  // limit → when a node last asked tokens of it
	shares map[string]*share    // roster node → its lease as the manager sees it
	// recLease is the longest lease a former activation may have told
	// (rosterRec.Lease), at least this one's: the leases of nodes not heard
	// in this activation are waited out with it.
	recLease  time.Duration
	lastSweep time.Time
}

// share is what the manager knows of a roster node's lease.
type share struct {
	// lapsed: its lease is over (or it left), written to the group: none
	// of its share is reserved in windows after lapsedAt.
	lapsed bool
	// lapsedAt is when this activation saw the lease over (zero: a former
	// activation did): the node may have spent its share in windows up to
	// Window(lapsedAt + skew).
	lapsedAt time.Time
	// from: the node came back after a lapse at from; it falls back only in
	// windows from Window(from)+2 on (the manager granted its share away at
	// most one window ahead of from).
	from time.Time
	// leftSeen is the first sweep that saw it departed (zero: not departed).
	leftSeen time.Time
}

type demandOf struct {
	spec Spec
	at   time.Time
}

// activeFor is how long a limit nobody asked tokens of stays in
// Reply.Active; maxActive bounds the list.
const (
	activeFor = time.Minute
	maxActive = 256
)

type lkey struct {
	id  string
	win int64
}

type mlimit struct {
	spec      Spec
	win       int64
	committed map[string]bool
	keys      map[string]*mkey
}

type mkey struct {
	granted map[string]int64 // node → granted (and fallback it reported)
	used    map[string]int64
	total   int64
	// base is what former activations allocated (durable windows), alloc
	// what is allocated in the group: grants stay within it.
	base, alloc int64
	loaded      bool
}

type mslots struct {
	max      int
	held     map[string]int
	inflight map[string]int
	// adopted: holdings loaded from the group, not yet confirmed by
	// their node; they come back SlotLease+Reclaim after the activation.
	adopted map[string]bool
	shortAt time.Time // a node got fewer slots than it wanted
}

// NewManager wires a manager; it answers nothing until Activate.
func NewManager(cfg ManagerConfig, log zerolog.Logger) *Manager {
	cfg.defaults()
	return &Manager{cfg: cfg, log: log.With().Str("component", "throttle").Logger()}
}

// Skew is the configured clock-skew bound.
func (m *Manager) Skew() time.Duration { return m.cfg.MaxSkew }

type rosterRec struct {
	Nodes map[string]int `json:"nodes"`
	// Lapsed are the nodes whose lease is over: their shares are not
	// reserved (a node is taken out before it is answered again).
	Lapsed []string `json:"lapsed,omitempty"`
	// Lease is the longest lease an activation told the nodes.
	Lease time.Duration `json:"lease,omitempty"`
}

type slotRec struct {
	Max  int            `json:"max"`
	Held map[string]int `json:"held"`
}

type allocRec struct {
	Alloc int64 `json:"alloc"`
}

// Activate runs one activation under fence term until ctx ends: it loads
// the roster and the slot holdings, drops durable windows that are over,
// and answers asks. It returns ctx's error, or a store error before it
// started answering.
func (m *Manager) Activate(ctx context.Context, term uint64, since time.Time, store Store) error {
	now := m.cfg.Clock()
	a := &activation{term: term, since: since, start: now, hwm: now, skew: m.cfg.MaxSkew,
		store: store, roster: map[string]int{}, limits: map[lkey]*mlimit{}, slots: map[string]*mslots{},
		seen: map[string]time.Time{}, demand: map[string]demandOf{}, shares: map[string]*share{}}
	sctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	err := m.load(sctx, a)
	cancel()
	if err != nil {
		return fmt.Errorf("throttle manager: load state: %w", err)
	}
	m.log.Info().Uint64("fence", term).Int("roster", len(a.roster)).Msg("throttle manager active")
	m.mu.Lock()
	m.act = a
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	if m.act == a {
		m.act = nil
	}
	m.mu.Unlock()
	return ctx.Err()
}

func (m *Manager) load(ctx context.Context, a *activation) error {
	if v, ok, err := a.store.Load(ctx, rosterKey); err != nil {
		return err
	} else if ok {
		var r rosterRec
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode roster: %w", err)
		}
		for n, c := range r.Nodes {
			a.roster[n] = c
		}
		for _, n := range r.Lapsed {
			if _, ok := a.roster[n]; ok {
				a.share(n).lapsed = true
			}
		}
		a.recLease = r.Lease
	}
	if a.recLease < m.cfg.Lease {
		// Told from now on: a later activation must wait it out too.
		a.recLease = m.cfg.Lease
		if err := a.saveRoster(ctx); err != nil {
			return err
		}
	}
	keys, err := a.store.Keys(ctx, keyPrefix)
	if err != nil {
		return err
	}
	now := m.cfg.Clock()
	var dead []string
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, slotsKey):
			v, ok, err := a.store.Load(ctx, k)
			if err != nil {
				return err
			}
			var r slotRec
			if !ok || json.Unmarshal(v, &r) != nil {
				continue
			}
			svc := strings.TrimPrefix(k, slotsKey)
			ms := &mslots{max: r.Max, held: map[string]int{}, adopted: map[string]bool{}}
			for n, h := range r.Held {
				if h > 0 {
					ms.held[n], ms.adopted[n] = h, true
				}
			}
			a.slots[svc] = ms
		case strings.HasPrefix(k, allocKey):
			if windowOver(k, now) {
				dead = append(dead, k)
			}
		}
	}
	if len(dead) > 0 {
		if err := a.store.Save(ctx, nil, dead); err != nil {
			m.log.Warn().Err(err).Int("keys", len(dead)).Msg("old throttle windows not dropped; next activation retries")
		}
	}
	return nil
}

// durable allocation keys: allocKey + escaped limit id / per ns / window / escaped key
func allocKeyOf(s Spec, win int64, key string) string {
	return allocKey + url.PathEscape(s.id()) + "/" + strconv.FormatInt(int64(s.Per), 10) + "/" +
		strconv.FormatInt(win, 10) + "/" + url.PathEscape(key)
}

func windowOver(k string, now time.Time) bool {
	parts := strings.Split(strings.TrimPrefix(k, allocKey), "/")
	if len(parts) != 4 {
		return true
	}
	per, err1 := strconv.ParseInt(parts[1], 10, 64)
	win, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || per <= 0 {
		return true
	}
	return win < Window(now, time.Duration(per))
}

// Active reports the activation's fence, or 0.
func (m *Manager) Active() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.act == nil {
		return 0
	}
	return m.act.term
}

// Handle answers one ask from peer (the caller's verified name).
func (m *Manager) Handle(ctx context.Context, peer string, body []byte) ([]byte, error) {
	ask, err := DecodeAsk(body)
	if err != nil {
		return nil, err
	}
	if ask.Node != peer {
		return nil, fmt.Errorf("throttle: ask names node %q but comes from %q", ask.Node, peer)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.act
	if a == nil || ask.Fence > a.term {
		return nil, ErrNotManager
	}
	rep, err := m.answer(ctx, a, ask)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep)
}

func (m *Manager) answer(ctx context.Context, a *activation, ask Ask) (Reply, error) {
	now := m.cfg.Clock()
	if now.After(a.hwm) {
		a.hwm = now
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	// Heard before the reply: the node counts its lease from before it sent
	// the ask, so the manager's reading is the later one.
	a.seen[ask.Node] = now
	n, err := m.admitToRoster(ctx, a, ask.Node, ask.N)
	if err != nil {
		return Reply{}, err
	}
	m.sweep(ctx, a, now)
	rep := Reply{Fence: a.term, Since: a.since, Skew: m.cfg.MaxSkew, N: n, Lease: m.cfg.Lease}
	if sh := a.shares[ask.Node]; sh != nil {
		rep.ShareFrom = sh.from
	}
	if ask.Fence != a.term {
		rep.Refused = "stale fence: the active throttle manager changed"
		return rep, nil
	}
	if ask.Probe {
		return rep, nil
	}
	m.prune(ctx, a, now)
	puts := map[string][]byte{}
	type pending struct {
		l    *mlimit
		k    *mkey
		key  string
		want int64
	}
	var todo []pending
	for _, la := range ask.Limits {
		s := la.Spec
		if la.Window > Window(now, s.Per)+1 || la.Window < Window(now, s.Per) ||
			(!s.Durable() && la.Window < FirstWindow(a.since, m.cfg.MaxSkew, s.Per)) {
			continue // out of what this activation grants in: nothing recorded
		}
		l := a.limit(s, la.Window)
		if len(la.Want) > 0 {
			a.demand[s.id()] = demandOf{spec: s, at: now}
		}
		if !l.committed[ask.Node] {
			l.committed[ask.Node] = true
			for key, f := range la.Fallback {
				k, err := m.keyOf(ctx, a, l, key)
				if err != nil {
					return Reply{}, err
				}
				k.granted[ask.Node] += f
				k.total += f
			}
		}
		for key, u := range la.Used {
			if k, ok := l.keys[key]; ok {
				k.used[ask.Node] = max(k.used[ask.Node], u)
			}
		}
		for key, want := range la.Want {
			if want <= 0 {
				continue
			}
			k, err := m.keyOf(ctx, a, l, key)
			if err != nil {
				return Reply{}, err
			}
			x := min(want, a.headroom(l, k))
			if x <= 0 {
				rep.Grants = append(rep.Grants, Grant{Limit: s.id(), Window: l.win, Key: key, N: 0, Remaining: 0})
				continue
			}
			if s.Durable() && k.base+k.total+x > k.alloc {
				block := max(s.Cap()/16, 1)
				k.alloc = min(s.Cap(), k.base+k.total+x+block)
				v, _ := json.Marshal(allocRec{Alloc: k.alloc})
				puts[allocKeyOf(s, l.win, key)] = v
			}
			todo = append(todo, pending{l: l, k: k, key: key, want: x})
		}
	}
	type slotTodo struct {
		svc       string
		ms        *mslots
		want      int
		contended bool
	}
	var slotWork []slotTodo
	for _, sa := range ask.Slots {
		ms := a.slots[sa.Service]
		if ms == nil {
			ms = &mslots{held: map[string]int{}, adopted: map[string]bool{}}
			a.slots[sa.Service] = ms
		}
		if ms.inflight == nil {
			ms.inflight = map[string]int{}
		}
		ms.inflight[ask.Node] = sa.InFlight
		ms.max = sa.Max
		// The node lowered what it holds before it sent the ask, and
		// asks one at a time: what it reports is what it holds.
		// Never more than it was given (a later activation adopted it).
		old := ms.held[ask.Node]
		sa.Held = min(sa.Held, old)
		ms.held[ask.Node] = sa.Held
		delete(ms.adopted, ask.Node)
		give := 0
		if sa.Want > sa.Held {
			give = max(0, min(sa.Want-sa.Held, ms.max-ms.total()))
			if give < sa.Want-sa.Held {
				ms.shortAt = now
			}
		}
		contended := now.Sub(ms.shortAt) < time.Second
		if give > 0 || sa.Held != old {
			slotWork = append(slotWork, slotTodo{svc: sa.Service, ms: ms, want: sa.Held + give, contended: contended})
			rec := slotRec{Max: ms.max, Held: map[string]int{}}
			for nd, h := range ms.held {
				rec.Held[nd] = h
			}
			rec.Held[ask.Node] = sa.Held + give
			v, _ := json.Marshal(rec)
			puts[slotsKey+sa.Service] = v
		} else {
			rep.Slots = append(rep.Slots, SlotGrant{Service: sa.Service, Held: sa.Held, Contended: contended})
		}
	}
	for id, d := range a.demand {
		if now.Sub(d.at) > activeFor {
			delete(a.demand, id)
		} else if len(rep.Active) < maxActive {
			rep.Active = append(rep.Active, d.spec)
		}
	}
	if len(puts) > 0 {
		if err := a.store.Save(ctx, puts, nil); err != nil {
			// Nothing new is handed out: what was asked is granted as if
			// the budget were spent, and the node asks again.
			m.log.Warn().Err(err).Msg("throttle allocations not written; granting nothing new in this ask")
			for _, p := range todo {
				if p.l.spec.Durable() {
					p.k.alloc = p.k.base + p.k.total // unknown: never above what was written
					continue
				}
				m.grant(&rep, a, p.l, p.k, p.key, ask.Node, p.want)
			}
			for _, sw := range slotWork {
				rep.Slots = append(rep.Slots, SlotGrant{Service: sw.svc, Held: sw.ms.held[ask.Node]})
			}
			return rep, nil
		}
	}
	for _, p := range todo {
		m.grant(&rep, a, p.l, p.k, p.key, ask.Node, p.want)
	}
	for _, sw := range slotWork {
		sw.ms.held[ask.Node] = sw.want
		rep.Slots = append(rep.Slots, SlotGrant{Service: sw.svc, Held: sw.want, Contended: sw.contended})
	}
	return rep, nil
}

func (m *Manager) grant(rep *Reply, a *activation, l *mlimit, k *mkey, key, node string, x int64) {
	k.granted[node] += x
	k.total += x
	rep.Grants = append(rep.Grants, Grant{Limit: l.spec.id(), Window: l.win, Key: key, N: x,
		Remaining: max(0, a.headroom(l, k))})
}

func (ms *mslots) total() int {
	t := 0
	for _, h := range ms.held {
		t += h
	}
	return t
}

func (a *activation) limit(s Spec, win int64) *mlimit {
	k := lkey{s.id(), win}
	l := a.limits[k]
	if l == nil {
		l = &mlimit{spec: s, win: win, committed: map[string]bool{}, keys: map[string]*mkey{}}
		a.limits[k] = l
	}
	return l
}

// keyOf returns the key's state, loading what former activations
// allocated for a durable window.
func (m *Manager) keyOf(ctx context.Context, a *activation, l *mlimit, key string) (*mkey, error) {
	k := l.keys[key]
	if k == nil {
		k = &mkey{granted: map[string]int64{}, used: map[string]int64{}}
		l.keys[key] = k
	}
	if l.spec.Durable() && !k.loaded {
		v, ok, err := a.store.Load(ctx, allocKeyOf(l.spec, l.win, key))
		if err != nil {
			return nil, fmt.Errorf("throttle manager: read allocation: %w", err)
		}
		if ok {
			var r allocRec
			if err := json.Unmarshal(v, &r); err != nil {
				r.Alloc = l.spec.Cap() // unreadable: assume all of it allocated
			}
			k.base = r.Alloc
		}
		k.alloc, k.loaded = k.base, true
	}
	return k, nil
}

// reserved is what the nodes of the roster that have not committed to the
// limit's window may spend on their fallback share; reclaimed is the
// shares of the others that did not commit, whose lease rules it out.
func (a *activation) reserved(l *mlimit) (reserved, reclaimed int64) {
	if !l.spec.Share {
		return 0, 0
	}
	for n, c := range a.roster {
		if c <= 0 || l.committed[n] {
			continue
		}
		if a.mayFallBack(n, l.spec.Per, l.win) {
			reserved += l.spec.Cap() / int64(c)
		} else {
			reclaimed += l.spec.Cap() / int64(c)
		}
	}
	return reserved, reclaimed
}

// mayFallBack reports whether node may spend its share in window win of
// windows of length per, as far as its lease goes (the package doc,
// "Leases").
func (a *activation) mayFallBack(node string, per time.Duration, win int64) bool {
	sh := a.shares[node]
	if sh == nil {
		return true
	}
	if !sh.lapsedAt.IsZero() && win <= Window(sh.lapsedAt.Add(a.skew), per) {
		return true // it may have spent there before its lease ended
	}
	if sh.lapsed {
		return false
	}
	return sh.from.IsZero() || win >= Window(sh.from, per)+2
}

func (a *activation) headroom(l *mlimit, k *mkey) int64 {
	r, _ := a.reserved(l)
	return l.spec.Cap() - k.base - k.total - r
}

func (a *activation) share(node string) *share {
	sh := a.shares[node]
	if sh == nil {
		if a.shares == nil {
			a.shares = map[string]*share{}
		}
		sh = &share{}
		a.shares[node] = sh
	}
	return sh
}

// saveRoster writes the roster, the lapsed nodes and the lease told.
func (a *activation) saveRoster(ctx context.Context) error {
	rec := rosterRec{Nodes: a.roster, Lease: a.recLease}
	for n, sh := range a.shares {
		if sh.lapsed {
			rec.Lapsed = append(rec.Lapsed, n)
		}
	}
	sort.Strings(rec.Lapsed)
	v, _ := json.Marshal(rec)
	return a.store.Save(ctx, map[string][]byte{rosterKey: v}, nil)
}

// leaseOver reports whether node's lease is provably over at now: the
// manager's last answer to it, or (not heard in this activation) any
// former activation's, is more than the drift-stretched lease ago.
func (m *Manager) leaseOver(a *activation, node string, now time.Time) bool {
	if now.Sub(a.start) < m.cfg.wait(a.recLease) {
		// A reply of this activation may have been lost, and a former
		// one's lease run on.
		return false
	}
	last, ok := a.seen[node]
	return !ok || now.Sub(last) >= m.cfg.wait(m.cfg.Lease)
}

// sweep reclaims the shares of nodes whose lease is over or that left,
// writing them down as lapsed before any grant spends their share, and
// lowers the recorded lease once the longer ones told are over.
func (m *Manager) sweep(ctx context.Context, a *activation, now time.Time) {
	if now.Sub(a.lastSweep) < sweepEvery {
		return
	}
	a.lastSweep = now
	var lapse []string
	for n := range a.roster {
		sh := a.share(n)
		if sh.lapsed {
			continue
		}
		left := m.cfg.Departed != nil && m.cfg.Departed(n)
		switch {
		case !left:
			sh.leftSeen = time.Time{}
		case sh.leftSeen.IsZero():
			sh.leftSeen = now
		}
		// Departed counts only for a node not heard from since it was seen
		// gone: a node that came back may still be shown as left for a while.
		last, heard := a.seen[n]
		if left && (!heard || last.Before(sh.leftSeen)) || m.leaseOver(a, n, now) {
			lapse = append(lapse, n)
		}
	}
	old := a.recLease
	lower := old > m.cfg.Lease && now.Sub(a.start) >= m.cfg.wait(old)
	if len(lapse) == 0 && !lower {
		return
	}
	for _, n := range lapse {
		a.shares[n].lapsed = true
	}
	if lower {
		a.recLease = m.cfg.Lease
	}
	if err := a.saveRoster(ctx); err != nil {
		for _, n := range lapse {
			a.shares[n].lapsed = false
		}
		a.recLease = old
		m.log.Warn().Err(err).Strs("nodes", lapse).
			Msg("throttle: lapsed leases not written; their shares stay reserved")
		return
	}
	for _, n := range lapse {
		a.shares[n].lapsedAt = now
	}
	if len(lapse) > 0 {
		sort.Strings(lapse)
		m.log.Info().Strs("nodes", lapse).Dur("lease", m.cfg.Lease).
			Msg("throttle: nodes silent for their lease, or gone: their fallback shares go to the others")
	}
}

// admitToRoster records node (and the roster size it acknowledged) and
// returns the roster size to tell it: its fallback share is Cap/N. A node
// gets a share only while the shares of all nodes add up to at most one
// whole budget (Σ 1/N ≤ 1), written ahead to the group.
func (m *Manager) admitToRoster(ctx context.Context, a *activation, node string, ack int) (int, error) {
	cur, known := a.roster[node]
	changed := !known
	sh := a.share(node)
	back := sh.lapsed // its lease was over: it is written back in before it is answered
	sh.lapsed = false
	if cur > 0 && ack > cur {
		a.roster[node], changed = ack, true // lower bound of what it uses: monotone
	}
	if !known {
		a.roster[node] = 0
	}
	size := len(a.roster)
	if a.roster[node] == 0 {
		sum := new(big.Rat)
		for n, c := range a.roster {
			if n != node && c > 0 {
				sum.Add(sum, big.NewRat(1, int64(c)))
			}
		}
		sum.Add(sum, big.NewRat(1, int64(size)))
		if sum.Cmp(big.NewRat(1, 1)) <= 0 {
			a.roster[node], changed = size, true
		}
	}
	if changed || back {
		if err := a.saveRoster(ctx); err != nil {
			if !known {
				delete(a.roster, node)
			} else {
				a.roster[node] = cur
			}
			sh.lapsed = back
			return 0, fmt.Errorf("throttle manager: write roster: %w", err)
		}
	}
	if back {
		// Its share went to the others in windows up to one ahead of now.
		sh.from, sh.leftSeen = a.hwm, time.Time{}
		m.log.Info().Str("peer", node).
			Msg("throttle: a node whose lease was over is back; it takes its share two windows on")
	}
	if a.roster[node] == 0 {
		return 0, nil
	}
	return max(size, a.roster[node]), nil
}

// prune drops windows that are over (and their durable records), and
// reclaims the slots of nodes not heard from for SlotLease+Reclaim.
func (m *Manager) prune(ctx context.Context, a *activation, now time.Time) {
	var dead []string
	for k, l := range a.limits {
		if l.win < Window(now, l.spec.Per)-1 {
			delete(a.limits, k)
			if l.spec.Durable() {
				for key := range l.keys {
					dead = append(dead, allocKeyOf(l.spec, l.win, key))
				}
			}
		}
	}
	gone := m.cfg.SlotLease + m.cfg.Reclaim
	puts := map[string][]byte{}
	for svc, ms := range a.slots {
		changed := false
		for n := range ms.held {
			last, ok := a.seen[n]
			if !ok || ms.adopted[n] {
				last = a.since
			}
			if now.Sub(last) > gone {
				delete(ms.held, n)
				delete(ms.adopted, n)
				delete(ms.inflight, n)
				changed = true
			}
		}
		if changed {
			v, _ := json.Marshal(slotRec{Max: ms.max, Held: ms.held})
			puts[slotsKey+svc] = v
		}
	}
	if len(dead) > 0 || len(puts) > 0 {
		if err := a.store.Save(ctx, puts, dead); err != nil {
			m.log.Debug().Err(err).Msg("throttle: pruning not written; retried next ask")
		}
	}
}

// Usage reports the current windows of service's limits ("" for all) and
// its slots.
func (m *Manager) Usage(service string) (UsageReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.act
	if a == nil {
		return UsageReport{}, ErrNotManager
	}
	now := m.cfg.Clock()
	rep := UsageReport{Manager: m.cfg.Node, Fence: a.term, Limits: []Usage{}}
	for _, l := range a.limits {
		s := l.spec
		if (service != "" && s.Service != service) || l.win != Window(now, s.Per) {
			continue
		}
		res, recl := a.reserved(l)
		for key, k := range l.keys {
			var used int64
			for _, u := range k.used {
				used += u
			}
			rep.Limits = append(rep.Limits, Usage{Service: s.Service, Limit: s.Index, Rate: s.Rate, Per: perName(s.Per),
				By: s.By, Burst: s.Burst, Key: key, Window: WindowStart(l.win, s.Per), Granted: k.base + k.total,
				Used: used, Reserved: res, Reclaimed: recl, Remaining: max(0, a.headroom(l, k))})
		}
	}
	sort.Slice(rep.Limits, func(i, j int) bool {
		x, y := rep.Limits[i], rep.Limits[j]
		if x.Service != y.Service {
			return x.Service < y.Service
		}
		if x.Limit != y.Limit {
			return x.Limit < y.Limit
		}
		return x.Key < y.Key
	})
	for svc, ms := range a.slots {
		if service != "" && svc != service {
			continue
		}
		su := SlotUsage{Service: svc, Max: ms.max, Held: ms.total(), Nodes: map[string]int{}}
		for n, h := range ms.held {
			su.Nodes[n] = h
		}
		for _, f := range ms.inflight {
			su.InFlight += f
		}
		rep.Slots = append(rep.Slots, su)
	}
	sort.Slice(rep.Slots, func(i, j int) bool { return rep.Slots[i].Service < rep.Slots[j].Service })
	rep.Lease = m.cfg.Lease.String()
	for n, c := range a.roster {
		ns := NodeShare{Node: n, N: c, State: ShareReserved}
		if sh := a.shares[n]; sh != nil && sh.lapsed {
			ns.State, ns.Left = ShareReclaimed, !sh.leftSeen.IsZero()
		} else {
			last, ok := a.seen[n]
			if ok {
				ns.Heard = wall(last)
			} else {
				last = a.start
			}
			at := last.Add(m.cfg.wait(m.cfg.Lease))
			if s := a.start.Add(m.cfg.wait(a.recLease)); s.After(at) {
				at = s
			}
			ns.ReclaimAt = wall(at)
		}
		rep.Nodes = append(rep.Nodes, ns)
	}
	sort.Slice(rep.Nodes, func(i, j int) bool { return rep.Nodes[i].Node < rep.Nodes[j].Node })
	return rep, nil
}

// ShareCounts reports how many roster nodes have their fallback share
// reserved (their lease may run) and how many reclaimed; ok is false when
// this node is not the active manager.
func (m *Manager) ShareCounts() (reserved, reclaimed int, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.act
	if a == nil {
		return 0, 0, false
	}
	for n := range a.roster {
		if sh := a.shares[n]; sh != nil && sh.lapsed {
			reclaimed++
		} else {
			reserved++
		}
	}
	return reserved, reclaimed, true
}

// wall drops t's monotonic reading, for reports.
func wall(t time.Time) time.Time { return t.Round(0).UTC() }

func perName(d time.Duration) string {
	for n, p := range Pers {
		if p == d {
			return n
		}
	}
	return d.String()
}
