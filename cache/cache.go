package cache

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// RPC methods between cache agents (node/doc.go has who may call them).
const (
	MethodGet      = "cache.get"      // a copy, and at the primary the fill lease
	MethodWait     = "cache.wait"     // wait at the primary for a fill in flight
	MethodPut      = "cache.put"      // store a copy
	MethodRelease  = "cache.release"  // give a fill lease back (response not cacheable)
	MethodHave     = "cache.have"     // which of these ids are held (rebalancing)
	MethodEpoch    = "cache.epoch"    // a purge's new record: apply and acknowledge
	MethodMaintain = "cache.maintain" // the cleanup role's pass: expire, rebalance
	MethodStats    = "cache.stats"    // this node's figures
)

// Methods lists every RPC method the cache serves.
func Methods() []string {
	return []string{MethodGet, MethodWait, MethodPut, MethodRelease, MethodHave, MethodEpoch, MethodMaintain, MethodStats}
}

// Replicas is how many live nodes hold each entry.
const Replicas = 2

// Member is a node of the cluster as the cache sees it.
type Member struct {
	Name    string
	RPCAddr string
	// Live: gossip sees it alive. Only live gateways own entries; a
	// member that is not live (suspect, failed) may still serve from what
	// it holds, so a purge waits out the confirmation bound for it.
	Live bool
	// Gateway: the member has the gateway role, so it holds entries.
	Gateway bool
}

// Caller calls a peer's method (transport.Transport.Call).
type Caller interface {
	Call(ctx context.Context, addr, method string, body []byte) ([]byte, error)
}

// Config wires a Cache.
type Config struct {
	Node     string // this node's name
	MaxBytes int64  // bound on the copies this node holds
	// Members are the cluster's members gossip knows (not left),
	// this node included.
	Members func() []Member
	// MayCall reports whether peer may call the cache's methods: a member
	// of this node's cluster, alive or suspect.
	MayCall func(peer string) bool
	RPC     Caller
	Epochs  Epochs
	// Refresh is how often the purge records are read; Confirm how long a
	// successful read lets this node serve hits (and a purge waits for a
	// node that does not acknowledge). Refresh < Confirm.
	Refresh, Confirm time.Duration
	// CallTimeout bounds a call to an owner; FillWait how long a miss
	// waits for another node's fill of the same key.
	CallTimeout, FillWait time.Duration
	// Cleanup is the cleanup role's period.
	Cleanup time.Duration
	Now     func() time.Time // tests
}

// DefaultConfig returns the defaults (MaxBytes 64 MiB).
func DefaultConfig() Config {
	return Config{MaxBytes: 64 << 20, Refresh: 500 * time.Millisecond, Confirm: 3 * time.Second,
		CallTimeout: 500 * time.Millisecond, FillWait: 10 * time.Second, Cleanup: 2 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	switch {
	case c.Node == "":
		return errors.New("cache: Node is empty")
	case c.MaxBytes <= 0:
		return errors.New("cache: MaxBytes must be positive")
	case c.Members == nil || c.MayCall == nil || c.RPC == nil || c.Epochs == nil:
		return errors.New("cache: Members, MayCall, RPC and Epochs are required")
	case c.Refresh <= 0 || c.Confirm <= c.Refresh:
		return errors.New("cache: need 0 < Refresh < Confirm")
	case c.CallTimeout <= 0 || c.FillWait <= 0 || c.Cleanup <= 0:
		return errors.New("cache: CallTimeout, FillWait and Cleanup must be positive")
	}
	return nil
}

// Cache is this node's cache agent.
type Cache struct {
	cfg   Config
	log   zerolog.Logger
	store *store
	// near holds copies this node fetched from an owner, for nearTTL at
	// most: a hot key is answered here as an owner answers, not over
	// the network per request. Checked as any copy (epoch, definition,
	// freshness) and swept by purges; not counted in Stats, and not the
	// cleanup pass's business.
	near   *store
	epochs epochView

	mu       sync.Mutex
	flights  map[string]*flight      // fills granted here as primary
	local    map[string]*localFlight // requests of this node for one key
	penalty  map[string]time.Time    // owners whose last call failed, skipped until then
	maxFence uint64
	lastView uint64 // membership digest of the last complete rebalance
	// view memoizes Members for placement on the hot path (viewTTL).
	view   []Member
	viewAt time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// flight is a fill lease at the primary owner: one caller goes upstream,
// the others wait for its put.
type flight struct {
	holder string
	until  time.Time
	done   chan struct{}
}

// localFlight coalesces one node's concurrent requests for a key.
type localFlight struct {
	done  chan struct{}
	entry *Entry // set before done closes when the leader got or stored one
}

// New wires a cache; Start launches its refresher.
func New(cfg Config, log zerolog.Logger) (*Cache, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, log: log.With().Str("component", "cache").Logger(), store: newStore(cfg.MaxBytes),
		near:    newStore(max(cfg.MaxBytes/16, 1<<20)),
		flights: map[string]*flight{}, local: map[string]*localFlight{}, penalty: map[string]time.Time{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Start launches the purge-record refresher.
func (c *Cache) Start() {
	c.wg.Add(1)
	go c.refreshLoop()
}

// Stop stops every goroutine the cache started and waits for them.
func (c *Cache) Stop() {
	c.cancel()
	c.wg.Wait()
}

func (c *Cache) refreshLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Refresh)
	defer t.Stop()
	for {
		c.refresh()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh reads the purge records; its start time confirms the view.
func (c *Cache) refresh() {
	start := c.cfg.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Confirm)
	recs, err := c.cfg.Epochs.Load(ctx)
	cancel()
	if err != nil {
		c.log.Debug().Err(err).Msg("purge records not read: hits stop once the last read is older than the bound")
		return
	}
	c.epochs.merge(recs)
	c.epochs.confirm(start)
	c.store.sweep(c.purged)
	c.near.sweep(c.purged)
	c.dropLapsed(start)
}

// dropLapsed forgets fill leases past their deadline whose key nobody
// asked for again (asking replaces a lapsed lease).
func (c *Cache) dropLapsed(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, f := range c.flights {
		if !now.Before(f.until) {
			close(f.done)
			delete(c.flights, id)
		}
	}
}

// purged reports whether e was purged by this node's view.
func (c *Cache) purged(e *Entry) bool {
	rec, _ := c.epochs.current(e.Service, time.Time{}, 0)
	return !rec.Valid(e.Epoch, e.Path)
}

// bg runs f in a goroutine the cache owns, with a bounded context.
func (c *Cache) bg(d time.Duration, f func(ctx context.Context)) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, d)
		defer cancel()
		f(ctx)
	}()
}

// viewTTL is how long a request's placement may use a member list read
// earlier: gossip changes far more slowly, and reading it per request
// was a twentieth of a hit's CPU. Purges and the cleanup pass read it
// fresh.
const viewTTL = 50 * time.Millisecond

// owners are the Replicas live members with the highest rendezvous
// score for id, primary first.
func (c *Cache) owners(id string) []Member {
	now := c.cfg.Now()
	c.mu.Lock()
	ms, stale := c.view, c.view == nil || now.Sub(c.viewAt) >= viewTTL || now.Before(c.viewAt)
	c.mu.Unlock()
	if stale {
		ms = c.cfg.Members()
		c.mu.Lock()
		c.view, c.viewAt = ms, now
		c.mu.Unlock()
	}
	return place(id, ms, Replicas)
}

func place(id string, members []Member, n int) []Member {
	type scored struct {
		m Member
		s uint64
	}
	var all []scored
	for _, m := range members {
		if !m.Live || !m.Gateway {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write([]byte(id))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(m.Name))
		all = append(all, scored{m, mix(h.Sum64())})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].s != all[j].s {
			return all[i].s > all[j].s
		}
		return all[i].m.Name < all[j].m.Name
	})
	out := make([]Member, 0, n)
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, all[i].m)
	}
	return out
}

// mix is a 64-bit finalizer (splitmix64): FNV alone spreads similar
// strings poorly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func viewDigest(members []Member) uint64 {
	names := []string{}
	for _, m := range members {
		if m.Live && m.Gateway {
			names = append(names, m.Name)
		}
	}
	sort.Strings(names)
	h := fnv.New64a()
	for _, n := range names {
		_, _ = h.Write([]byte(n))
		_, _ = h.Write([]byte{0})
	}
	return h.Sum64()
}

// Serve answers r for t from the cache, or through proxy (which writes
// the upstream's answer), filling the cache with what it answers. path is
// the path below the service. Requests the policy does not cache go
// straight to proxy. proxy's error is returned as is.
func (c *Cache) Serve(w http.ResponseWriter, r *http.Request, t Target, path string, proxy func(http.ResponseWriter, *http.Request) error) error {
	// A copy held here answers first, owner or not (a node keeps what it
	// held when the view changed until the cleanup pass moves it), and
	// without joining the key's local flight: hits do not queue.
	if c.ServeHit(w, NetRequest{r}, t, path) {
		return nil
	}
	if !requestCacheable(t, NetRequest{r}) {
		return proxy(w, r)
	}
	now := c.cfg.Now()
	rec, ok := c.epochs.current(t.Service, now, c.cfg.Confirm)
	if !ok {
		// Purges cannot be confirmed: serving a copy could serve a purged
		// one, and filling one could store what a purge meant to drop.
		c.store.count(t.Service, false)
		w.Header().Set("X-Cache", "MISS")
		return proxy(w, r)
	}
	k := KeyOf(t, r, path)
	valid := func(e *Entry) bool { return entryValid(e, k, t, rec) }

	c.mu.Lock()
	lf, follower := c.local[k.ID]
	if !follower {
		lf = &localFlight{done: make(chan struct{})}
		c.local[k.ID] = lf
	}
	c.mu.Unlock()
	if follower {
		select {
		case <-lf.done:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		if e := lf.entry; valid(e) && e.fresh(c.cfg.Now()) {
			c.store.count(t.Service, true)
			c.writeEntry(w, r.Method, e, "HIT")
			return nil
		}
		c.store.count(t.Service, false)
		w.Header().Set("X-Cache", "MISS")
		return proxy(w, r)
	}
	var result *Entry
	defer func() {
		c.mu.Lock()
		lf.entry = result
		delete(c.local, k.ID)
		c.mu.Unlock()
		close(lf.done)
	}()

	owners := c.owners(k.ID)
	var stale *Entry
	var leaseFrom *Member
	for i, o := range owners {
		e, st, err := c.ask(r.Context(), o, k.ID, i == 0)
		if err != nil {
			continue
		}
		if st.leased {
			leaseFrom = &owners[i]
		}
		if valid(e) && e.fresh(c.cfg.Now()) {
			if i > 0 || leaseFrom != nil {
				c.repair(owners[:i], e)
			}
			if o.Name != c.cfg.Node {
				c.keepNear(e)
			}
			result = e
			c.store.count(t.Service, true)
			c.writeEntry(w, r.Method, e, "HIT")
			return nil
		}
		if valid(e) && stale == nil {
			stale = e
		}
	}

	c.store.count(t.Service, false)
	useStale := stale != nil && t.Policy.StaleIfError > 0
	rw := &recorder{w: w, max: t.Policy.maxEntry(), holdErrors: useStale}
	started := c.cfg.Now()
	err := proxy(rw, r)
	if useStale && (rw.held || (err != nil && !rw.wrote)) {
		if c.cfg.Now().Before(stale.StaleUntil) {
			c.writeEntry(w, r.Method, stale, "STALE")
			c.release(leaseFrom, k.ID)
			return nil
		}
		if rw.held {
			rw.flushHeld()
			c.release(leaseFrom, k.ID)
			return err
		}
	}
	e := c.entryFrom(t, k, rec, rw, err, r, started)
	if e == nil {
		c.release(leaseFrom, k.ID)
		return err
	}
	result = e
	c.storeAt(owners, e)
	return err
}

// ServeHit answers r from a fresh copy held on this node, as Serve would,
// and reports true; otherwise it writes and counts nothing, and the caller
// goes through Serve (peers' copies, the fill, the miss). It reads r
// through Request only, so a server other than net/http's answers its
// hits without building an *http.Request; a w that is a StoredWriter
// gets the entry as stored bytes. A hit allocates nothing unless the
// policy varies on headers or the key is longer than hitKeyBuf.
func (c *Cache) ServeHit(w http.ResponseWriter, r Request, t Target, path string) bool {
	if !requestCacheable(t, r) {
		return false
	}
	now := c.cfg.Now()
	rec, ok := c.epochs.current(t.Service, now, c.cfg.Confirm)
	if !ok {
		return false
	}
	var buf [hitKeyBuf]byte
	text := appendKeyText(buf[:0], t, r, path)
	e := c.store.getByKey(text, now)
	if e == nil {
		e = c.near.getByKey(text, now)
	}
	if e == nil || e.SvcVersion != t.Version || !rec.Valid(e.Epoch, e.Path) || !e.fresh(now) {
		return false
	}
	c.store.count(t.Service, true)
	method := r.Method()
	if sw, ok := w.(StoredWriter); ok {
		var body []byte
		if method != http.MethodHead {
			body = e.Body
		}
		sw.WriteStored(e.Status, e.fields, c.age(e, now), "HIT", body)
		return true
	}
	c.writeEntry(w, method, e, "HIT")
	return true
}

// nearTTL is the longest a copy fetched from an owner is kept near (and
// answers hits here) before the owner is asked again.
const nearTTL = time.Second

// keepNear keeps e, an owner's copy, in the near store for nearTTL (less
// if it expires sooner), unless this node holds the entry itself. The
// kept copy is e's struct with shorter lifetimes: header and body are
// shared, and never written.
func (c *Cache) keepNear(e *Entry) {
	if c.store.has(e.ID) {
		return
	}
	until := c.cfg.Now().Add(nearTTL)
	n := *e
	n.fields = nil // the near store makes its own (put)
	if until.Before(n.Expires) {
		n.Expires = until
	}
	if until.Before(n.StaleUntil) {
		n.StaleUntil = until
	}
	c.near.put(&n)
}

// hitKeyBuf is the key text a hit builds on its stack; a longer one
// spills to the heap.
const hitKeyBuf = 512

// StoredWriter is a response writer that takes a cached response as the
// entry holds it — the data plane's, whose server frames the response —
// so a hit builds no http.Header and copies the body once, onto the wire.
type StoredWriter interface {
	// WriteStored answers with status; fields (canonical name and value,
	// in order; without Content-Length, Transfer-Encoding and Connection,
	// which the server sets), an Age of age seconds and X-Cache: xcache;
	// and body (nil for a HEAD). fields and body are the entry's: read
	// only, and not kept past the response.
	WriteStored(status int, fields [][2][]byte, age int, xcache string, body []byte)
}

// age is e's Age at now, in seconds.
func (c *Cache) age(e *Entry, now time.Time) int {
	return max(0, int(now.Sub(e.Stored)/time.Second))
}

// entryValid: e is k's entry, filled under t's definition and not purged
// since (rec).
func entryValid(e *Entry, k Key, t Target, rec EpochRecord) bool {
	return e != nil && e.Key == k.Text && e.SvcVersion == t.Version && rec.Valid(e.Epoch, e.Path)
}

// askState is what an owner said besides the entry.
type askState struct {
	leased bool // the caller holds the fill lease
	busy   bool // another fill is in flight (the caller waited for it)
}

// ask gets id's copy from owner o (this node or a peer); with lease, the
// primary's fill lease when it holds no fresh copy.
func (c *Cache) ask(ctx context.Context, o Member, id string, lease bool) (*Entry, askState, error) {
	if o.Name == c.cfg.Node {
		e, st := c.serveGet(c.cfg.Node, id, lease)
		if st.busy {
			e = c.waitFill(ctx, id)
		}
		return e, st, nil
	}
	if c.penalized(o.Name) {
		return nil, askState{}, errors.New("owner penalized")
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	resp, err := c.cfg.RPC.Call(cctx, o.RPCAddr, MethodGet, encodeJSON(getReq{ID: id, Lease: lease}))
	cancel()
	if err != nil {
		c.penalize(o.Name)
		return nil, askState{}, err
	}
	e, st, err := decodeGetResp(resp)
	if err != nil {
		return nil, askState{}, err
	}
	if st.busy {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.FillWait+c.cfg.CallTimeout)
		resp, err := c.cfg.RPC.Call(wctx, o.RPCAddr, MethodWait, encodeJSON(getReq{ID: id}))
		cancel()
		if err != nil {
			return nil, st, err
		}
		e, _, err = decodeGetResp(resp)
		return e, st, err
	}
	return e, st, nil
}

func (c *Cache) penalized(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Now().Before(c.penalty[name])
}

func (c *Cache) penalize(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.penalty[name] = c.cfg.Now().Add(5 * time.Second)
}

// serveGet is an owner's side of MethodGet: a copy this node holds and,
// with lease and no fresh copy, the fill lease or news of a fill in
// flight.
func (c *Cache) serveGet(caller, id string, lease bool) (*Entry, askState) {
	now := c.cfg.Now()
	e := c.store.get(id, now)
	if e != nil && c.purged(e) {
		c.store.remove(id)
		e = nil
	}
	if !lease || (e != nil && e.fresh(now)) {
		return e, askState{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flights[id]
	if f == nil || !now.Before(f.until) || f.holder == caller {
		if f != nil {
			close(f.done) // a lease abandoned or taken again: its waiters go on
		}
		c.flights[id] = &flight{holder: caller, until: now.Add(c.cfg.FillWait), done: make(chan struct{})}
		return e, askState{leased: true}
	}
	return e, askState{busy: true}
}

// waitFill waits for the fill in flight for id, then returns the copy
// (nil: the fill stored nothing, or took longer than FillWait).
func (c *Cache) waitFill(ctx context.Context, id string) *Entry {
	c.mu.Lock()
	f := c.flights[id]
	c.mu.Unlock()
	if f != nil {
		t := time.NewTimer(c.cfg.FillWait)
		select {
		case <-f.done:
		case <-t.C:
		case <-ctx.Done():
		case <-c.ctx.Done():
		}
		t.Stop()
	}
	e := c.store.get(id, c.cfg.Now())
	if e != nil && (c.purged(e) || !e.fresh(c.cfg.Now())) {
		return nil
	}
	return e
}

// endFlight resolves id's lease (by holder, or any when holder is "").
func (c *Cache) endFlight(id, holder string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flights[id]; f != nil && (holder == "" || f.holder == holder) {
		close(f.done)
		delete(c.flights, id)
	}
}

// release gives a fill lease back: the response was not stored.
func (c *Cache) release(from *Member, id string) {
	if from == nil {
		return
	}
	if from.Name == c.cfg.Node {
		c.endFlight(id, c.cfg.Node)
		return
	}
	addr := from.RPCAddr
	c.bg(c.cfg.CallTimeout, func(ctx context.Context) {
		_, _ = c.cfg.RPC.Call(ctx, addr, MethodRelease, encodeJSON(getReq{ID: id}))
	})
}

// putLocal stores a copy and resolves a fill waiting for it.
func (c *Cache) putLocal(e *Entry) {
	if !c.purged(e) {
		c.store.put(e)
	}
	c.endFlight(e.ID, "")
}

// storeAt writes e to each owner: here at once, to peers in the
// background (the client has its answer already).
func (c *Cache) storeAt(owners []Member, e *Entry) {
	for _, o := range owners {
		if o.Name == c.cfg.Node {
			c.putLocal(e)
			continue
		}
		if c.penalized(o.Name) {
			continue
		}
		addr := o.RPCAddr
		body := encodeEntry(e)
		c.bg(2*c.cfg.CallTimeout, func(ctx context.Context) {
			if _, err := c.cfg.RPC.Call(ctx, addr, MethodPut, body); err != nil {
				c.log.Debug().Err(err).Str("owner", o.Name).Msg("cache copy not stored")
			}
		})
	}
}

// repair stores e at owners that did not have it.
func (c *Cache) repair(owners []Member, e *Entry) {
	if len(owners) > 0 {
		c.storeAt(owners, e)
	}
}

// entryFrom builds the entry for what rw recorded, or nil when the
// response may not be stored.
func (c *Cache) entryFrom(t Target, k Key, rec EpochRecord, rw *recorder, proxyErr error, r *http.Request, started time.Time) *Entry {
	if proxyErr != nil || rw.overflow || rw.writeErr || !rw.wrote || r.Context().Err() != nil {
		return nil
	}
	ttl, ok := lifetime(t.Policy, rw.code, rw.header)
	if !ok {
		return nil
	}
	if n, err := strconv.ParseInt(rw.header.Get("Content-Length"), 10, 64); err == nil && r.Method != http.MethodHead && n != int64(len(rw.buf)) {
		return nil // cut short
	}
	h, ok := storedHeader(rw.header)
	if !ok {
		return nil
	}
	return &Entry{ID: k.ID, Key: k.Text, Service: t.Service, Path: k.Path, SvcVersion: t.Version, Epoch: rec.Counter,
		Status: rw.code, Header: h, Stored: started, Expires: started.Add(ttl),
		StaleUntil: started.Add(ttl + t.Policy.StaleIfError), Body: rw.buf}
}

// writeEntry answers from e; how is the X-Cache value.
func (c *Cache) writeEntry(w http.ResponseWriter, method string, e *Entry, how string) {
	h := w.Header()
	for k, vs := range e.Header {
		h[k] = vs
	}
	h.Set("Age", strconv.Itoa(c.age(e, c.cfg.Now())))
	h.Set("X-Cache", how)
	if method != http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	}
	w.WriteHeader(e.Status)
	if method != http.MethodHead && len(e.Body) > 0 {
		_, _ = w.Write(e.Body)
	}
}

// recorder passes a response through to the client and keeps a copy of
// it, up to max body bytes. With holdErrors, a 5xx is held back (a stale
// copy may answer instead).
type recorder struct {
	w          http.ResponseWriter
	max        int64
	holdErrors bool

	code     int
	header   http.Header
	buf      []byte
	overflow bool
	wrote    bool // the header went to the client
	held     bool // a 5xx was held back
	writeErr bool
}

func (r *recorder) Header() http.Header { return r.w.Header() }

func (r *recorder) WriteHeader(code int) {
	if r.code != 0 {
		return
	}
	if code < 200 {
		r.w.WriteHeader(code)
		return
	}
	r.code = code
	if r.holdErrors && code >= 500 {
		r.held = true
		return
	}
	r.w.Header().Set("X-Cache", "MISS")
	r.header = r.w.Header().Clone()
	r.wrote = true
	r.w.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.held {
		if int64(len(r.buf)+len(p)) <= r.max {
			r.buf = append(r.buf, p...)
		}
		return len(p), nil
	}
	if !r.overflow {
		if int64(len(r.buf)+len(p)) > r.max {
			r.overflow, r.buf = true, nil
		} else {
			r.buf = append(r.buf, p...)
		}
	}
	n, err := r.w.Write(p)
	if err != nil {
		r.writeErr = true
	}
	return n, err
}

// flushHeld sends a held 5xx after all (no stale copy could answer).
func (r *recorder) flushHeld() {
	r.held = false
	r.w.Header().Set("X-Cache", "MISS")
	r.w.WriteHeader(r.code)
	r.wrote = true
	_, _ = r.w.Write(r.buf)
	r.buf, r.overflow = nil, true // never stored
}

func (r *recorder) Flush() {
	if !r.held {
		_ = http.NewResponseController(r.w).Flush()
	}
}

// The recorder has no Unwrap on purpose: the data plane's fast path finds
// its capabilities through Unwrap chains (runner.Find) and would fill the
// response beneath the recorder, which must see every byte it may store.

// Purge is the result of a purge.
type Purge struct {
	Service string      `json:"service"`
	Prefix  string      `json:"prefix,omitempty"`
	Record  EpochRecord `json:"epoch"`
	// Acknowledged are the nodes that applied the purge before it
	// returned; Waited says it also waited out the confirmation bound
	// for nodes that could not (not live, or silent).
	Acknowledged []string `json:"acknowledged"`
	Waited       bool     `json:"waited"`
}

// Purge drops service's entries (those whose path starts with prefix,
// when set) on every node. It returns once no node can serve one: every
// member acknowledged the new record, or, for one that did not, once the
// confirmation bound has passed since the record was committed (doc.go).
func (c *Cache) Purge(ctx context.Context, service, prefix string) (Purge, error) {
	rec, err := c.cfg.Epochs.Bump(ctx, service, prefix)
	if err != nil {
		return Purge{}, err
	}
	committed := c.cfg.Now()
	res := Purge{Service: service, Prefix: prefix, Record: rec, Acknowledged: []string{}}
	c.applyEpoch(service, rec)
	var mu sync.Mutex
	var wg sync.WaitGroup
	all := true
	for _, m := range c.cfg.Members() {
		if m.Name == c.cfg.Node {
			mu.Lock()
			res.Acknowledged = append(res.Acknowledged, m.Name)
			mu.Unlock()
			continue
		}
		if !m.Live || m.RPCAddr == "" {
			mu.Lock()
			all = false
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.cfg.Confirm)
			defer cancel()
			_, err := c.cfg.RPC.Call(cctx, m.RPCAddr, MethodEpoch, encodeJSON(epochMsg{Service: service, Record: rec}))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				all = false
				return
			}
			res.Acknowledged = append(res.Acknowledged, m.Name)
		}()
	}
	wg.Wait()
	sort.Strings(res.Acknowledged)
	if !all {
		res.Waited = true
		wait := committed.Add(c.cfg.Confirm + c.cfg.Confirm/10).Sub(c.cfg.Now())
		if wait > 0 {
			t := time.NewTimer(wait)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return res, fmt.Errorf("purge of %s committed, but not every node confirmed it before the request ended: %w", service, ctx.Err())
			}
		}
	}
	return res, nil
}

// applyEpoch takes a purge's record and drops what it purges.
func (c *Cache) applyEpoch(service string, rec EpochRecord) {
	c.epochs.merge(map[string]EpochRecord{service: rec})
	c.store.sweep(c.purged)
	c.near.sweep(c.purged)
}

// Stats returns this node's per-service figures.
func (c *Cache) Stats() map[string]ServiceStats { return c.store.statsCopy() }

// Serving reports whether this node answers hits: its purge records were
// confirmed less than Confirm ago.
func (c *Cache) Serving() bool {
	_, ok := c.epochs.current("", c.cfg.Now(), c.cfg.Confirm)
	return ok
}

// NodeStats is one node's answer in a Report.
type NodeStats struct {
	Node     string                  `json:"node"`
	Error    string                  `json:"error,omitempty"`
	Serving  bool                    `json:"serving"`
	Services map[string]ServiceStats `json:"services"`
}

// Report collects every live member's figures.
func (c *Cache) Report(ctx context.Context) []NodeStats {
	ms := c.cfg.Members()
	out := make([]NodeStats, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i].Node = m.Name
		if m.Name == c.cfg.Node {
			out[i].Services, out[i].Serving = c.Stats(), c.Serving()
			continue
		}
		if !m.Live {
			out[i].Error = "not alive"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*c.cfg.CallTimeout)
			defer cancel()
			b, err := c.cfg.RPC.Call(cctx, m.RPCAddr, MethodStats, nil)
			if err == nil {
				err = decodeJSON(b, &out[i])
				out[i].Node, out[i].Error = m.Name, ""
			}
			if err != nil {
				out[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}
