package throttle

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// LimiterConfig configures a node's Limiter.
type LimiterConfig struct {
	Node string
	// Call sends an ask to the active manager (the caller finds it) and
	// returns its reply.
	Call func(ctx context.Context, body []byte) ([]byte, error)
	// Tick is the period of the background asks. Default 20ms.
	Tick time.Duration
	// CallTimeout bounds one ask. Default 1s.
	CallTimeout time.Duration
	// MaxWait is the longest a request waits for a grant it needs.
	// Default 250ms.
	MaxWait time.Duration
	// SlotLease must equal the manager's. Default 3s.
	SlotLease time.Duration
	// Lease is the fallback lease used when a reply names none (a manager
	// that predates leases). Default DefaultLease.
	Lease time.Duration
	// SpendFile, when set, is where the node records the fallback it may
	// have spent in durable windows, so that a restart reports it (package
	// doc, "Restarts"). Empty: nothing recorded (tests only).
	SpendFile string
	Clock     func() time.Time
}

// Limiter is a node's side: the hot path (Admit) spends what the manager
// granted, from memory; a background loop (Run) asks for more ahead of
// need, one batched ask at a time.
type Limiter struct {
	cfg LimiterConfig
	log zerolog.Logger

	mu      sync.Mutex
	fence   uint64
	since   time.Time
	skew    time.Duration
	n       int       // largest roster size told: the share is Cap/n
	contact time.Time // first reply of this process
	// leaseEnd: the node may spend fallback shares until then (monotonic:
	// the send time of its last reply's ask plus the lease it carried).
	leaseEnd time.Time
	// shareFrom: it falls back only in windows from Window(shareFrom)+2
	// (Reply.ShareFrom, the latest told).
	shareFrom time.Time
	healthy   bool
	lastTry   time.Time
	used      time.Time // the last Admit: an idle node asks nothing
	lims      map[lkey]*nlim
	known     map[string]knownSpec // limits this node served lately
	slots     map[string]*nslot
	wake      chan struct{} // closed and replaced at every reply or failure
	kick      chan struct{}
	start     time.Time // this process's start
	// holdBack: the spend file could not be read, so the node commits to no
	// durable window that began before start (it cannot say what it spent).
	holdBack bool
	spendErr bool // the last write of the spend file failed (logged once)
}

type nlim struct {
	spec      Spec
	win       int64
	committed bool
	keys      map[string]*nkey
}

// knownSpec is a limit this node served, and when it last did: the node
// commits to its windows while it is known, traffic or not, so the
// manager need not reserve this node's share of them.
type knownSpec struct {
	spec Spec
	last time.Time
}

type nkey struct {
	granted, used, fallback int64
	recorded                int64 // the spend file says fallback may be up to this
	asked                   int64 // in the ask in flight
	waiters                 int
	remaining               int64
	retryAt                 time.Time
}

type nslot struct {
	max                     int
	held, inflight, waiters int
	missed                  int // refused since the last ask: demand to ask for
	until                   time.Time
	lastBusy                time.Time
	contended               bool
	renewed                 time.Time
}

// NewLimiter wires a limiter; Run drives it.
func NewLimiter(cfg LimiterConfig, log zerolog.Logger) *Limiter {
	if cfg.Tick <= 0 {
		cfg.Tick = 20 * time.Millisecond
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 250 * time.Millisecond
	}
	if cfg.SlotLease <= 0 {
		cfg.SlotLease = 3 * time.Second
	}
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	m := &Limiter{cfg: cfg, log: log.With().Str("component", "throttle").Logger(),
		lims: map[lkey]*nlim{}, known: map[string]knownSpec{}, slots: map[string]*nslot{},
		wake: make(chan struct{}), kick: make(chan struct{}, 1), start: cfg.Clock()}
	m.loadSpend()
	return m
}

// loadSpend takes what a former process recorded it may have spent: the
// node reports it when it commits to those windows.
func (m *Limiter) loadSpend() {
	if m.cfg.SpendFile == "" {
		return
	}
	recs, err := readSpend(m.cfg.SpendFile, m.start)
	if err != nil {
		m.holdBack = true
		m.log.Error().Err(err).Str("file", m.cfg.SpendFile).Msg("throttle: the record of fallback " +
			"spent before this start is unreadable; limits of 1m and longer refuse requests on this " +
			"node until their current window ends, so the cluster's budget cannot be exceeded")
		return
	}
	for _, r := range recs {
		k := m.lim(r.Spec, r.Window).key(r.Key)
		k.recorded = max(k.recorded, r.Upto)
		k.fallback, k.used = k.recorded, k.recorded
	}
	if len(recs) > 0 {
		m.log.Info().Int("entries", len(recs)).Msg("throttle: fallback spent before this start " +
			"will be reported to the manager")
	}
}

// recordSpend makes sure the spend file covers one more fallback token of
// k in l before it is spent, writing ahead a chunk of the share at a time.
func (m *Limiter) recordSpend(l *nlim, k *nkey, now time.Time) error {
	if m.cfg.SpendFile == "" || !l.spec.Durable() || k.fallback < k.recorded {
		return nil
	}
	share := l.spec.Cap() / int64(m.n)
	prev := k.recorded
	k.recorded = min(share, k.fallback+max(1, share/8))
	var recs []spendRec
	for _, ol := range m.lims {
		if !ol.spec.Durable() {
			continue
		}
		for key, ok := range ol.keys {
			if ok.recorded > 0 {
				recs = append(recs, spendRec{Spec: ol.spec, Window: ol.win, Key: key, Upto: ok.recorded})
			}
		}
	}
	if err := writeSpend(m.cfg.SpendFile, recs, now); err != nil {
		k.recorded = prev
		return err
	}
	m.spendErr = false
	return nil
}

// Request is what one request is checked against: its service's limits,
// with the key each counts it under (Keys[i] for Limits[i]), and the
// service's max_in_flight (0: none).
type Request struct {
	Service     string
	Limits      []Spec
	Keys        []string
	MaxInFlight int
}

// Decision is the answer for one request.
type Decision struct {
	OK bool
	// Refused by Limit (when InFlight is false) or by max_in_flight.
	Limit    Spec
	InFlight bool
	// Reset is when the refusing limit's window ends (for max_in_flight:
	// a second).
	Reset time.Duration
	// Remaining is the budget known left on the refusing limit's key.
	Remaining int64
	// NoManager: refused because the node has lost the manager and may not
	// spend a share of this window (its lease is over, the limit says
	// "deny", or it has none yet), not because the cluster spent the budget.
	NoManager bool
	release   func()
}

// Release ends an admitted request: its max_in_flight slot is free again.
// Safe to call more than once, and on a refusal.
func (d *Decision) Release() {
	if d.release != nil {
		d.release()
		d.release = nil
	}
}

func (m *Limiter) nudge() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

func (m *Limiter) broadcast() {
	close(m.wake)
	m.wake = make(chan struct{})
}

func (m *Limiter) lim(s Spec, win int64) *nlim {
	k := lkey{s.id(), win}
	l := m.lims[k]
	if l == nil {
		l = &nlim{spec: s, win: win, keys: map[string]*nkey{}}
		m.lims[k] = l
	}
	return l
}

func (l *nlim) key(k string) *nkey {
	v := l.keys[k]
	if v == nil {
		v = &nkey{}
		l.keys[k] = v
	}
	return v
}

// mayCommit reports whether the node may commit to win of s with the
// manager it knows: that manager grants in it.
func (m *Limiter) mayCommit(s Spec, win int64) bool {
	if (m.holdBack || !s.Durable()) && WindowStart(win, s.Per).Before(m.start) {
		return false // what a former process spent there is unknown (doc: "Restarts")
	}
	return m.fence != 0 && m.healthy && (s.Durable() || win >= FirstWindow(m.since, m.skew, s.Per))
}

// mayFallBack: the node spends its share of win of s without the manager
// (it has not committed to it; win began after its first reply, so a
// restart cannot spend a share twice; its lease runs; and its share was
// not given away in win while its lease had lapsed).
func (m *Limiter) mayFallBack(l *nlim, now time.Time) bool {
	return l.spec.Share && m.n > 0 && !l.committed && !m.contact.IsZero() &&
		!WindowStart(l.win, l.spec.Per).Before(m.contact) && now.Before(m.leaseEnd) &&
		(m.shareFrom.IsZero() || l.win >= Window(m.shareFrom, l.spec.Per)+2)
}

func (m *Limiter) avail(l *nlim, k *nkey, now time.Time) int64 {
	switch {
	case l.committed:
		return k.granted + k.fallback - k.used
	case m.mayFallBack(l, now):
		return l.spec.Cap()/int64(m.n) - k.used
	}
	return 0
}

// Admit checks one request against every limit and max_in_flight and
// spends one token of each (and a slot) when all allow it. It waits (at
// most MaxWait, or ctx) only for a grant the manager is being asked for.
func (m *Limiter) Admit(ctx context.Context, r Request) Decision {
	deadline := m.cfg.Clock().Add(m.cfg.MaxWait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		m.mu.Lock()
		now := m.cfg.Clock()
		m.used = now
		var (
			bl   *nlim
			bk   *nkey
			bs   *nslot
			lims = make([]*nlim, len(r.Limits))
			keys = make([]*nkey, len(r.Limits))
		)
		for i, s := range r.Limits {
			if k := m.known[s.id()]; now.Sub(k.last) > time.Second {
				m.known[s.id()] = knownSpec{spec: s, last: now}
			}
			l := m.lim(s, Window(now, s.Per))
			k := l.key(r.Keys[i])
			lims[i], keys[i] = l, k
			if bl == nil && m.avail(l, k, now) <= 0 {
				bl, bk = l, k
			}
		}
		var sl *nslot
		if r.MaxInFlight > 0 {
			sl = m.slots[r.Service]
			if sl == nil {
				sl = &nslot{}
				m.slots[r.Service] = sl
			}
			sl.max = r.MaxInFlight
			sl.lastBusy = now
			if bl == nil && (sl.inflight >= sl.held || !now.Before(sl.until)) {
				bs = sl
			}
		}
		if bl == nil && bs == nil {
			for i, l := range lims {
				if l.committed {
					continue
				}
				if err := m.recordSpend(l, keys[i], now); err != nil {
					// Unrecorded spend could be lost with a restart: refuse.
					if !m.spendErr {
						m.log.Error().Err(err).Str("file", m.cfg.SpendFile).Msg("throttle: cannot " +
							"record fallback spent; refusing it until the data dir is writable again")
					}
					m.spendErr = true
					d := Decision{Limit: l.spec, NoManager: true, Reset: time.Second}
					m.mu.Unlock()
					return d
				}
			}
			for i, l := range lims {
				keys[i].used++
				if !l.committed {
					keys[i].fallback++
				}
			}
			d := Decision{OK: true}
			if sl != nil {
				sl.inflight++
				d.release = func() {
					m.mu.Lock()
					sl.inflight--
					sl.lastBusy = m.cfg.Clock()
					m.mu.Unlock()
					m.nudge()
				}
			}
			m.mu.Unlock()
			return d
		}
		wait := ctx.Err() == nil && now.Before(deadline)
		switch {
		case !m.healthy || m.fence == 0:
			// Waiting is worth it only when a probe is due now (a node
			// back from idle), not right after one failed.
			wait = wait && now.Sub(m.lastTry) >= probeEvery
		case bl != nil:
			wait = wait && (bl.committed || m.mayCommit(bl.spec, bl.win)) && !now.Before(bk.retryAt)
		}
		if !wait {
			d := Decision{}
			if bl != nil {
				d.Limit, d.Reset, d.Remaining = bl.spec, WindowStart(bl.win+1, bl.spec.Per).Sub(now), 0
				if !bl.committed && (!m.healthy || m.fence == 0) {
					// Cut off: the manager may be back any moment.
					d.NoManager, d.Reset = true, min(d.Reset, time.Second)
				}
			} else {
				d.InFlight, d.Reset = true, time.Second
				bs.missed++
			}
			m.mu.Unlock()
			return d
		}
		if bk != nil {
			bk.waiters++
		} else {
			bs.waiters++
		}
		wake := m.wake
		m.mu.Unlock()
		m.nudge()
		if timer == nil {
			timer = time.NewTimer(deadline.Sub(now))
		}
		select {
		case <-wake:
		case <-timer.C:
			deadline = time.Time{} // refuse at the next look unless a grant came
		case <-ctx.Done():
		}
		m.mu.Lock()
		if bk != nil {
			bk.waiters--
		} else {
			bs.waiters--
		}
		m.mu.Unlock()
	}
}

// Run asks the manager for what the node needs, every Tick or when a
// request waits, until ctx ends. One ask is in flight at a time.
func (m *Limiter) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.healthy = false
			m.leaseEnd = time.Time{} // stopped: no more shares
			m.broadcast()
			m.mu.Unlock()
			return
		case <-t.C:
		case <-m.kick:
		}
		ask, commits, sent := m.build()
		if ask == nil {
			continue
		}
		body, err := json.Marshal(ask)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
		resp, err := m.cfg.Call(cctx, body)
		cancel()
		m.apply(ask, commits, sent, resp, err)
	}
}

// probeEvery is how often an unhealthy node probes for the manager.
const probeEvery = 200 * time.Millisecond

// idleAfter: a limit neither this node nor (Reply.Active) any other
// asked tokens of for this long is no longer committed to ahead.
const idleAfter = time.Minute

// heartbeat is how often a healthy node with nothing to ask asks anyway.
const heartbeat = 500 * time.Millisecond

// build makes the next ask (nil: nothing to ask), committing the node to
// every window it asks in before it is sent.
func (m *Limiter) build() (*Ask, []*nlim, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock()
	for k, l := range m.lims {
		if WindowStart(l.win+2, l.spec.Per).Before(now) {
			delete(m.lims, k)
		}
	}
	if m.used.IsZero() {
		return nil, nil, now // never served a throttled request: nothing to ask
	}
	if !m.healthy || m.fence == 0 {
		if now.Sub(m.lastTry) < probeEvery {
			return nil, nil, now
		}
		m.lastTry = now
		return &Ask{Node: m.cfg.Node, Fence: m.fence, Probe: true, N: m.n}, nil, now
	}
	ask := &Ask{Node: m.cfg.Node, Fence: m.fence, N: m.n}
	var commits []*nlim
	keys := 0
	add := func(l *nlim, want map[string]int64) {
		if len(ask.Limits) >= maxAskLimits || keys+2*len(l.keys)+len(want) > maxAskKeys {
			return
		}
		la := LimitAsk{Spec: l.spec, Window: l.win, Want: want}
		if !l.committed {
			l.committed = true
			commits = append(commits, l)
			for key, k := range l.keys {
				if k.fallback > 0 {
					if la.Fallback == nil {
						la.Fallback = map[string]int64{}
					}
					la.Fallback[key] = k.fallback
				}
			}
		}
		for key, k := range l.keys {
			if k.used > 0 {
				if la.Used == nil {
					la.Used = map[string]int64{}
				}
				la.Used[key] = k.used
			}
			k.asked = want[key]
		}
		keys += 2*len(l.keys) + len(want)
		ask.Limits = append(ask.Limits, la)
	}
	for id, k := range m.known {
		if now.Sub(k.last) > idleAfter {
			delete(m.known, id)
			continue
		}
		if m.mayCommit(k.spec, Window(now, k.spec.Per)) {
			m.lim(k.spec, Window(now, k.spec.Per)) // committed below, without traffic
		}
	}
	var cur []*nlim
	for _, l := range m.lims {
		if l.win == Window(now, l.spec.Per) {
			cur = append(cur, l)
		}
	}
	for _, l := range cur {
		s := l.spec
		start := WindowStart(l.win, s.Per)
		frac := float64(now.Sub(start)) / float64(s.Per)
		if !l.committed && !m.mayCommit(s, l.win) {
			continue
		}
		want := map[string]int64{}
		for key, k := range l.keys {
			chunk := chunkOf(k.used, frac, s.Cap())
			if (k.granted+k.fallback-k.used < max(1, chunk/2) || k.waiters > 0) && !now.Before(k.retryAt) {
				want[key] = max(chunk, int64(k.waiters))
			}
		}
		if !l.committed || len(want) > 0 {
			add(l, want)
		}
		// Ahead: the next window, in the second half of this one.
		if frac >= 0.5 && m.mayCommit(s, l.win+1) {
			nl := m.lim(s, l.win+1)
			if !nl.committed {
				nwant := map[string]int64{}
				for key, k := range l.keys {
					if k.used > 0 {
						nl.key(key)
						nwant[key] = 2 * chunkOf(k.used, frac, s.Cap())
					}
				}
				add(nl, nwant)
			}
		}
	}
	for svc, sl := range m.slots {
		want := sl.inflight + sl.waiters + min(sl.missed, sl.max)
		sl.missed = 0
		released := false
		if sl.held > want && (sl.contended || now.Sub(sl.lastBusy) > time.Second) {
			sl.held, released = max(want, sl.inflight), true // lowered before the ask says so
		}
		renew := sl.held > 0 && now.Sub(sl.renewed) > m.cfg.SlotLease/3
		if !(want > sl.held || released || renew) {
			if sl.held == 0 && want == 0 && now.Sub(sl.lastBusy) > time.Minute {
				delete(m.slots, svc)
			}
			continue
		}
		if len(ask.Slots) < maxAskSlots {
			ask.Slots = append(ask.Slots, SlotAsk{Service: svc, Max: sl.max, Held: sl.held, InFlight: sl.inflight, Want: want})
		}
	}
	if len(ask.Limits) == 0 && len(ask.Slots) == 0 {
		if now.Sub(m.lastTry) < heartbeat {
			return nil, nil, now
		}
		// A heartbeat: it acknowledges the roster size and learns of a new
		// activation.
	}
	m.lastTry = now
	return ask, commits, now
}

// chunkOf sizes an ask for a key from its use so far in the window: an
// eighth of the window's projected demand, at least one.
func chunkOf(used int64, frac float64, capacity int64) int64 {
	if frac < 0.05 {
		frac = 0.05
	}
	c := int64(float64(used)/frac) / 8
	return min(max(c, 1), capacity)
}

func (m *Limiter) apply(ask *Ask, commits []*nlim, sent time.Time, body []byte, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.broadcast()
	now := m.cfg.Clock()
	clear := func() {
		for _, la := range ask.Limits {
			if l := m.lims[lkey{la.Spec.id(), la.Window}]; l != nil {
				for _, k := range l.keys {
					k.asked = 0
				}
			}
		}
	}
	var rep Reply
	if err == nil {
		err = json.Unmarshal(body, &rep)
	}
	if err == nil && rep.Fence < m.fence {
		err = ErrNotManager // a former manager that has not noticed yet: its grants are refused
	}
	if err != nil {
		clear()
		if m.healthy {
			m.log.Warn().Err(err).Int("roster", m.n).Msg("throttle manager not reached: spending grants held, then fallback shares")
		}
		m.healthy = false
		m.lastTry = now
		return
	}
	if rep.Fence > m.fence {
		m.fence, m.since, m.skew = rep.Fence, rep.Since, rep.Skew
	}
	m.n = max(m.n, rep.N)
	if m.contact.IsZero() {
		m.contact = now
	}
	// The manager heard this ask after it was sent: its wait for the lease
	// starts later than the node's count.
	lease := min(rep.Lease, MaxLease)
	if lease <= 0 {
		lease = m.cfg.Lease
	}
	m.leaseEnd = sent.Add(lease)
	if rep.ShareFrom.After(m.shareFrom) {
		m.shareFrom = rep.ShareFrom
	}
	if !m.healthy {
		m.log.Info().Uint64("fence", m.fence).Int("roster", m.n).Bool("probe", ask.Probe).Str("refused", rep.Refused).
			Msg("throttle manager reached")
	}
	m.healthy = true
	if rep.Refused != "" {
		// Recorded nowhere: the new manager refused the ask whole, and the
		// former one never saw it.
		for _, l := range commits {
			l.committed = false
		}
		clear()
		m.nudge()
		return
	}
	for _, sp := range rep.Active {
		if sp.Check() != nil {
			continue
		}
		sp = sp.Prepare()
		if k := m.known[sp.id()]; now.Sub(k.last) > time.Second {
			m.known[sp.id()] = knownSpec{spec: sp, last: now}
		}
	}
	for _, g := range rep.Grants {
		l := m.lims[lkey{g.Limit, g.Window}]
		if l == nil {
			continue
		}
		k := l.key(g.Key)
		k.granted += g.N
		k.remaining = g.Remaining
		if g.N < k.asked {
			k.retryAt = now.Add(min(max(l.spec.Per/20, 20*time.Millisecond), time.Second))
		}
		k.asked = 0
	}
	for _, sg := range rep.Slots {
		sl := m.slots[sg.Service]
		if sl == nil {
			continue
		}
		sl.held = sg.Held
		sl.contended = sg.Contended
		sl.until = sent.Add(m.cfg.SlotLease)
		sl.renewed = now
	}
}

// Status is what the limiter shows of itself.
type Status struct {
	Fence   uint64 `json:"fence"`
	Healthy bool   `json:"healthy"`
	Share   int    `json:"roster"`
	// LeaseLeft is how long the node may still spend fallback shares
	// without hearing from a manager (0: its lease is over).
	LeaseLeft time.Duration `json:"lease_left"`
}

// Status reports the limiter's view of the manager.
func (m *Limiter) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{Fence: m.fence, Healthy: m.healthy, Share: m.n,
		LeaseLeft: max(0, m.leaseEnd.Sub(m.cfg.Clock()))}
}
