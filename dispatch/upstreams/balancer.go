package upstreams

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Target is one weighted upstream of a service.
type Target struct {
	URL    string
	Weight int // ≥ 1
}

// Outcome is what one proxied attempt saw of its upstream.
type Outcome int

const (
	OK            Outcome = iota // an answer below 500
	ConnectFailed                // no connection (refused, unreachable, dial timeout)
	Failed                       // the exchange broke (reset, header timeout)
	ServerError                  // a 5xx answer
)

// Config tunes passive ejection, the breaker and the retry budget. Zero
// fields take the defaults.
type Config struct {
	EjectAfter         int           // consecutive failures that eject; default 3
	EjectBase          time.Duration // first ejection; default 1s
	EjectMax           time.Duration // longest ejection; default 30s
	BreakerWindow      time.Duration // default 10s
	BreakerMinRequests int           // default 10
	BreakerErrorRate   float64       // default 0.5
	BreakerOpen        time.Duration // default 5s
	RetryRatio         float64       // default 0.2
	RetryMin           int           // retries per window beyond the ratio; default 10
	Now                func() time.Time
}

func (c *Config) defaults() {
	if c.EjectAfter <= 0 {
		c.EjectAfter = 3
	}
	if c.EjectBase <= 0 {
		c.EjectBase = time.Second
	}
	if c.EjectMax <= 0 {
		c.EjectMax = 30 * time.Second
	}
	if c.BreakerWindow <= 0 {
		c.BreakerWindow = 10 * time.Second
	}
	if c.BreakerMinRequests <= 0 {
		c.BreakerMinRequests = 10
	}
	if c.BreakerErrorRate <= 0 {
		c.BreakerErrorRate = 0.5
	}
	if c.BreakerOpen <= 0 {
		c.BreakerOpen = 5 * time.Second
	}
	if c.RetryRatio <= 0 {
		c.RetryRatio = 0.2
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 10
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// NoHealthyError: no upstream of the service is in rotation.
type NoHealthyError struct {
	Service string
	Out     []string // "url (why)"
}

func (e *NoHealthyError) Error() string {
	return fmt.Sprintf("service %s: no upstream is in rotation: %s; it comes back when its health check passes "+
		"(or set \"fail_open\": true to use every upstream then)", e.Service, strings.Join(e.Out, ", "))
}

// ErrExhausted: every upstream was tried for this request already.
var ErrExhausted = fmt.Errorf("every upstream was tried")

// Registry is a node's balancing state of every service.
type Registry struct {
	cfg    Config
	health *Health
	mu     sync.Mutex
	svcs   map[string]*service
}

// NewRegistry returns a registry whose health verdicts come from h (nil:
// every upstream is healthy but for this node's ejection and breaker).
func NewRegistry(cfg Config, h *Health) *Registry {
	cfg.defaults()
	return &Registry{cfg: cfg, health: h, svcs: map[string]*service{}}
}

// Health is the registry's shared-health view (nil if none).
func (r *Registry) Health() *Health { return r.health }

const maxServices = 4096

type service struct {
	sig     string
	ups     []*upstream
	byURL   map[string]*upstream
	reqs    window
	retries window
	used    time.Time
}

type upstream struct {
	url    string
	weight int
	cur    int // smooth weighted round-robin

	consec       int // consecutive failures
	ejectedUntil time.Time
	ejections    int // in a row; reset by a success after the last ejection
	brk          breaker
}

// breaker states
const (
	closed = iota
	open
	halfOpen
)

type breaker struct {
	state     int
	openUntil time.Time
	probing   bool
	ok, bad   window
}

// window counts events in 1 s buckets over a span.
type window struct {
	buckets [16]struct {
		sec int64
		n   int
	}
}

func (w *window) add(now time.Time) {
	s := now.Unix()
	b := &w.buckets[s%int64(len(w.buckets))]
	if b.sec != s {
		b.sec, b.n = s, 0
	}
	b.n++
}

func (w *window) sum(now time.Time, span time.Duration) int {
	s := now.Unix()
	secs := min(int64(span/time.Second), int64(len(w.buckets))-1)
	n := 0
	for _, b := range w.buckets {
		if b.sec > s-secs && b.sec <= s {
			n += b.n
		}
	}
	return n
}

func (w *window) reset() { *w = window{} }

func signature(ts []Target) string {
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.URL)
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(t.Weight))
		b.WriteByte('\n')
	}
	return b.String()
}

// state returns the service's state for targets, rebuilt (keeping what
// is known of upstreams that stay) when they changed. r.mu held.
func (r *Registry) state(key string, targets []Target, now time.Time) *service {
	s := r.svcs[key]
	sig := signature(targets)
	if s != nil && s.sig == sig {
		s.used = now
		return s
	}
	if s == nil && len(r.svcs) >= maxServices {
		r.evict()
	}
	ns := &service{sig: sig, byURL: make(map[string]*upstream, len(targets)), used: now}
	if s != nil {
		ns.reqs, ns.retries = s.reqs, s.retries
	}
	for _, t := range targets {
		u := &upstream{url: t.URL, weight: max(t.Weight, 1)}
		if s != nil {
			if old := s.byURL[t.URL]; old != nil {
				u.consec, u.ejectedUntil, u.ejections, u.brk = old.consec, old.ejectedUntil, old.ejections, old.brk
			}
		}
		ns.ups = append(ns.ups, u)
		ns.byURL[t.URL] = u
	}
	r.svcs[key] = ns
	return ns
}

// evict drops the least recently used quarter of the services.
func (r *Registry) evict() {
	type kv struct {
		k string
		t time.Time
	}
	all := make([]kv, 0, len(r.svcs))
	for k, s := range r.svcs {
		all = append(all, kv{k, s.used})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })
	for _, e := range all[:len(all)/4+1] {
		delete(r.svcs, e.k)
	}
}

// Request is one request's view of a service's balancing.
type Request struct {
	Service  string   // for messages
	Key      string   // the registry key: cluster and service
	Targets  []Target // the service's upstreams
	Sticky   string   // the request's sticky value ("" for none)
	FailOpen bool
}

// HealthKey is the shared-health key of an upstream of a service.
func HealthKey(key, url string) string { return key + " " + url }

// Pick chooses an upstream for req among those not in avoid (URLs this
// request tried already).
func (r *Registry) Pick(req *Request, avoid map[string]bool) (string, error) {
	if len(req.Targets) == 0 {
		return "", fmt.Errorf("service %s has no upstream", req.Service)
	}
	if len(req.Targets) == 1 && len(avoid) == 0 && r.health == nil {
		return req.Targets[0].URL, nil
	}
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state(req.Key, req.Targets, now)
	if len(avoid) == 0 {
		s.reqs.add(now)
	}
	in := make([]*upstream, 0, len(s.ups))
	var out []string
	left := 0
	for _, u := range s.ups {
		if avoid[u.url] {
			continue
		}
		left++
		if why := r.outOfRotation(req.Key, u, now); why != "" {
			out = append(out, u.url+" ("+why+")")
			continue
		}
		in = append(in, u)
	}
	if left == 0 {
		return "", ErrExhausted
	}
	if len(in) == 0 {
		if !req.FailOpen {
			return "", &NoHealthyError{Service: req.Service, Out: out}
		}
		for _, u := range s.ups {
			if !avoid[u.url] {
				in = append(in, u)
			}
		}
	}
	var u *upstream
	if req.Sticky != "" {
		u = rendezvous(in, req.Sticky)
	} else {
		total := 0
		for _, c := range in {
			c.cur += c.weight
			total += c.weight
			if u == nil || c.cur > u.cur {
				u = c
			}
		}
		u.cur -= total
	}
	if u.brk.state == halfOpen {
		u.brk.probing = true
	}
	return u.url, nil
}

// outOfRotation says why u takes no request now ("" when it does). r.mu held.
func (r *Registry) outOfRotation(key string, u *upstream, now time.Time) string {
	if r.health != nil && !r.health.Healthy(HealthKey(key, u.url)) {
		return "health check failing"
	}
	if now.Before(u.ejectedUntil) {
		return "ejected after consecutive errors"
	}
	switch u.brk.state {
	case open:
		if now.Before(u.brk.openUntil) {
			return "circuit open"
		}
		u.brk.state, u.brk.probing = halfOpen, false
		fallthrough
	case halfOpen:
		if u.brk.probing {
			return "circuit half-open, probing"
		}
	}
	return ""
}

// rendezvous is weighted rendezvous hashing: each upstream scores
// -weight/ln(h) for h, the value's hash with its URL in (0,1).
func rendezvous(in []*upstream, value string) *upstream {
	var best *upstream
	bestScore := math.Inf(-1)
	for _, u := range in {
		h := fnv.New64a()
		_, _ = h.Write([]byte(u.url))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(value))
		x := (float64(h.Sum64()>>11) + 0.5) / float64(1<<53)
		score := -float64(u.weight) / math.Log(x)
		if score > bestScore {
			best, bestScore = u, score
		}
	}
	return best
}

// Report records what an attempt on url saw.
func (r *Registry) Report(key, url string, o Outcome) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svcs[key]
	if s == nil {
		return
	}
	u := s.byURL[url]
	if u == nil {
		return
	}
	b := &u.brk
	if o == OK {
		u.consec = 0
		if now.After(u.ejectedUntil.Add(r.cfg.EjectMax)) {
			u.ejections = 0
		}
		b.ok.add(now)
		if b.state == halfOpen {
			b.state, b.probing = closed, false
			b.ok.reset()
			b.bad.reset()
		}
		return
	}
	u.consec++
	if u.consec >= r.cfg.EjectAfter {
		d := r.cfg.EjectBase << min(u.ejections, 16)
		u.ejectedUntil = now.Add(min(d, r.cfg.EjectMax))
		u.ejections++
		u.consec = 0
	}
	b.bad.add(now)
	switch b.state {
	case halfOpen:
		b.state, b.openUntil, b.probing = open, now.Add(r.cfg.BreakerOpen), false
	case closed:
		bad := b.bad.sum(now, r.cfg.BreakerWindow)
		total := bad + b.ok.sum(now, r.cfg.BreakerWindow)
		if total >= r.cfg.BreakerMinRequests && float64(bad) >= r.cfg.BreakerErrorRate*float64(total) {
			b.state, b.openUntil = open, now.Add(r.cfg.BreakerOpen)
		}
	}
}

// AllowRetry takes a retry from key's budget; false when it is spent.
func (r *Registry) AllowRetry(key string) bool {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svcs[key]
	if s == nil {
		return false
	}
	span := r.cfg.BreakerWindow
	if float64(s.retries.sum(now, span)) >= r.cfg.RetryRatio*float64(s.reqs.sum(now, span))+float64(r.cfg.RetryMin) {
		return false
	}
	s.retries.add(now)
	return true
}

// UpstreamState is one upstream as this node sees it (GET /v1/routes).
type UpstreamState struct {
	URL        string     `json:"url"`
	Weight     int        `json:"weight"`
	InRotation bool       `json:"in_rotation"`
	Why        string     `json:"why,omitempty"` // why not in rotation
	Healthy    bool       `json:"healthy"`       // the shared verdict
	Observers  []Observer `json:"observers,omitempty"`
	Breaker    string     `json:"breaker"` // closed, open, half_open
	Ejected    bool       `json:"ejected,omitempty"`
}

// States reports the upstreams of a service as this node sees them.
func (r *Registry) States(key string, targets []Target) []UpstreamState {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.state(key, targets, now)
	out := make([]UpstreamState, 0, len(s.ups))
	for _, u := range s.ups {
		why := r.outOfRotation(key, u, now)
		st := UpstreamState{URL: u.url, Weight: u.weight, InRotation: why == "", Why: why, Healthy: true,
			Breaker: [...]string{"closed", "open", "half_open"}[u.brk.state], Ejected: now.Before(u.ejectedUntil)}
		if r.health != nil {
			st.Healthy, st.Observers = r.health.Verdict(HealthKey(key, u.url))
		}
		out = append(out, st)
	}
	return out
}
