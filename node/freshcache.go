package node

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node/httpapi"
)

// Freshness of what authentication reads from a cluster's replicated state
// (tokens, and the service definitions /svc/ calls need).
const (
	// cacheFresh is how long an answer is used without asking the group
	// again. An answer is dated from when its read started, so a token
	// revoked at t is refused by every node that can reach its group by
	// t+cacheFresh: this is the revocation bound the README states.
	cacheFresh = time.Second
	// cacheMaxStale is the default of how long an answer may still be used
	// while its group cannot answer (no quorum, no leader reachable),
	// counted from when it was last known current (-stale-serve-for sets
	// it). A revocation made in the moments before quorum was lost, or on
	// the other side of a partition, is not seen within it.
	cacheMaxStale = 5 * time.Minute
	// cacheReadTimeout bounds one read made on the cache's behalf, whoever
	// asked for it: waiters share it, so no caller's cancellation ends it.
	cacheReadTimeout = 10 * time.Second
	// maxClusters bounds the per-cluster bookkeeping (?cluster= is the
	// caller's to choose).
	maxClusters = 4096
)

// loadFunc reads one key of one cluster: its value and an estimate of the
// memory it holds, found=false when the key does not exist.
type loadFunc[V any] func(ctx context.Context) (v V, size int, found bool, err error)

// staleFunc reads one key of one cluster from this node's last known state
// (consensus StaleGet): asOf is when that state was last known current,
// zero for never.
type staleFunc[V any] func(ctx context.Context) (v V, size int, found bool, asOf time.Time, err error)

// freshCache keeps positive and negative answers of reads of clusters'
// replicated state for cacheFresh, so a hot path (every request's token,
// every /svc/ call's service) costs one read per key and second, not one
// per request. Positive and negative answers live in separate bounded maps:
// unknown keys (random tokens) can only push out other unknown keys, never
// a known one. Concurrent misses of one key share one read.
//
// While a cluster's group cannot answer (the last read of it failed as
// unavailable), answers come from this node's last known state (the
// caller's staleFunc: the local replica, or one on this side of the cut)
// as long as it was known current less than maxStale ago, else from a
// positive answer read less than maxStale ago; one background read per
// cluster and cacheFresh finds out when the group is back. Past maxStale
// (0: at once) the read is an error (503: it cannot be checked).
type freshCache[V any] struct {
	now                  func() time.Time
	fresh, maxStale      time.Duration
	maxEntries, maxBytes int
	maxNegative          int
	ctx                  context.Context // probes' context: canceled by close
	cancel               context.CancelFunc
	wg                   sync.WaitGroup
	mu                   sync.Mutex
	pos                  map[string]*cached[V]
	bytes                int
	neg                  map[string]negative
	flights              map[string]*flight[V]
	down                 *groupsDown          // clusters whose last read failed; may be shared
	lastProbe            map[string]time.Time // cluster → when a background read last started
	gen                  uint64               // bumped by invalidate: older reads store nothing
	closed               bool
	onProbeDone          func() // tests: called after a background read

	// linearWait bounds the linearizable read of a key that has a stale
	// fallback (0: cacheReadTimeout): past it the group is taken as down.
	linearWait time.Duration
}

type cached[V any] struct {
	v       V
	size    int
	checked time.Time // when the read that produced it started
	asOf    time.Time // when its state was known current: checked, unless read stale
}

// negative is a "no such key" answer, dated as cached is.
type negative struct{ checked, asOf time.Time }

// usable reports whether an answer read at checked, of a state known
// current at asOf, may be reused at now without asking the group.
func (c *freshCache[V]) usable(now, checked, asOf time.Time) bool {
	return now.Sub(checked) < c.fresh && (asOf.Equal(checked) || now.Sub(asOf) < c.maxStale)
}

type flight[V any] struct {
	done  chan struct{}
	v     V
	found bool
	err   error
}

func newFreshCache[V any](maxEntries, maxBytes, maxNegative int) *freshCache[V] {
	ctx, cancel := context.WithCancel(context.Background())
	return &freshCache[V]{
		now: time.Now, fresh: cacheFresh, maxStale: cacheMaxStale,
		maxEntries: maxEntries, maxBytes: maxBytes, maxNegative: maxNegative,
		ctx: ctx, cancel: cancel,
		pos: map[string]*cached[V]{}, neg: map[string]negative{}, flights: map[string]*flight[V]{},
		down: newGroupsDown(), lastProbe: map[string]time.Time{},
	}
}

// errUndecodable marks a value the group returned but a loader could not
// decode: an answer, not a failure to get one.
var errUndecodable = errors.New("undecodable value")

// unavailable reports whether err says the group gave no answer (no
// quorum, no leader reachable, a timeout of any layer's making), as opposed
// to answering "no" or with a value that cannot be decoded. Any such error
// leaves what is known as it was, so a known answer may serve on.
func unavailable(err error) bool {
	return err != nil && !errors.Is(err, errUndecodable)
}

// readError is the API error for a read the group gave no answer to: the
// consensus mapping when it has one, else 503, since nothing is known.
func readError(op string, err error) error {
	if err == nil {
		return nil
	}
	err = apiError(op, err)
	var he *httpapi.Error
	if errors.As(err, &he) || errors.Is(err, errUndecodable) {
		return err
	}
	return httpapi.Errorf(http.StatusServiceUnavailable, "unavailable", "%v", err).WithRetryAfter(1)
}

// groupsDown is the set of clusters whose group gave no answer to the last
// read of it. Caches of one node share it: once one read (a service's) has
// waited out a lost quorum, the others (tokens) answer from what they know
// at once instead of each waiting out a read of its own. It also keeps,
// per cluster, whether this node is serving it from its last known state
// (stale.go): logged when that starts and ends, shown in /v1/status and
// the metrics.
type groupsDown struct {
	mu      sync.Mutex
	m       map[string]bool
	serving map[string]*staleServing
	log     zerolog.Logger
	// latest is, per cluster, when the newest read whose outcome set m
	// started: a slow read that failed before the group came back must
	// not mark it down after a later one found it up.
	latest map[string]time.Time
}

func newGroupsDown() *groupsDown {
	return &groupsDown{m: map[string]bool{}, serving: map[string]*staleServing{}, log: zerolog.Nop(),
		latest: map[string]time.Time{}}
}

func (d *groupsDown) is(cluster string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[cluster]
}

// set records what a read of cluster's group that started at started
// found: down or up. An outcome older than one already recorded is
// ignored.
func (d *groupsDown) set(cluster string, down bool, started time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if started.Before(d.latest[cluster]) {
		return
	}
	if len(d.latest) >= maxClusters {
		clear(d.latest)
	}
	d.latest[cluster] = started
	if !down {
		delete(d.m, cluster)
		d.freshLocked(cluster)
		return
	}
	if len(d.m) >= maxClusters && !d.m[cluster] {
		clear(d.m) // ?cluster= is the caller's: forgetting costs a read, no more
	}
	d.m[cluster] = true
}

func cacheKey(cluster, key string) string { return cluster + "\x00" + key }

// get returns key's value in cluster, found=false for a key that does not
// exist; load reads it linearizably when no usable answer is kept, stale
// (nil: none) from this node's last known state when the group cannot
// answer.
func (c *freshCache[V]) get(ctx context.Context, cluster, key string, load loadFunc[V], stale staleFunc[V]) (V, bool, error) {
	now := c.now()
	if v, found, ok := c.cached(cluster, key, now); ok {
		return v, found, nil
	}
	k := cacheKey(cluster, key)
	c.mu.Lock()
	if e, ok := c.pos[k]; ok {
		if c.usable(now, e.checked, e.asOf) {
			c.mu.Unlock()
			return e.v, true, nil
		}
		if now.Sub(e.asOf) < c.maxStale && c.down.is(cluster) {
			// The group was unreachable at the last try: answer from the
			// cache at once, and let one background read per cluster
			// and second find out whether it is back.
			c.probeLocked(cluster, k, now, load)
			c.mu.Unlock()
			return e.v, true, nil
		}
	}
	if n, ok := c.neg[k]; ok && c.usable(now, n.checked, n.asOf) {
		c.mu.Unlock()
		var zero V
		return zero, false, nil
	}
	// While the group is known down, go to the last known state at once
	// rather than wait out a linearizable read per key, or, when nothing
	// may serve without quorum (maxStale 0), refuse at once; the probe
	// finds out when the group is back.
	down := c.down.is(cluster)
	if down && c.maxStale == 0 {
		c.probeLocked(cluster, k, now, load)
		c.mu.Unlock()
		var zero V
		return zero, false, &closedDown{cluster: cluster}
	}
	skipLinear := down && stale != nil
	if skipLinear {
		c.probeLocked(cluster, k, now, load)
	}
	f, joined := c.flights[k]
	if !joined {
		f = &flight[V]{done: make(chan struct{})}
		c.flights[k] = f
	}
	gen := c.gen
	c.mu.Unlock()
	if !joined {
		c.run(ctx, cluster, k, gen, load, stale, skipLinear, f)
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		var zero V
		return zero, false, ctx.Err()
	}
	if f.err != nil && unavailable(f.err) {
		c.mu.Lock()
		e, ok := c.pos[k]
		if ok && c.now().Sub(e.asOf) < c.maxStale {
			c.mu.Unlock()
			return e.v, true, nil
		}
		c.mu.Unlock()
	}
	return f.v, f.found, f.err
}

// cached is get's answer when one is kept that may be used at now as it
// is (ok), with no read, probe or fallback to decide: a positive answer,
// or a negative one when no positive is kept. It builds the key on its
// stack, not the heap: this is every /svc/ call's service lookup, twice.
func (c *freshCache[V]) cached(cluster, key string, now time.Time) (v V, found, ok bool) {
	var buf [128]byte
	k := append(append(append(buf[:0], cluster...), 0), key...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, hit := c.pos[string(k)]; hit {
		if c.usable(now, e.checked, e.asOf) {
			return e.v, true, true
		}
		return v, false, false // get decides: probe, fallback or read
	}
	if n, hit := c.neg[string(k)]; hit && c.usable(now, n.checked, n.asOf) {
		return v, false, true
	}
	return v, false, false
}

// run reads k for every caller waiting on f, then records the answer:
// linearizably unless skipLinear, then from the last known state when the
// group gave no answer.
func (c *freshCache[V]) run(ctx context.Context, cluster, k string, gen uint64, load loadFunc[V], stale staleFunc[V],
	skipLinear bool, f *flight[V]) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cacheReadTimeout)
	defer cancel()
	started := c.now()
	var (
		v     V
		size  int
		found bool
		err   error = errSkipped
	)
	if !skipLinear {
		lctx := rctx
		if stale != nil && c.maxStale > 0 && c.linearWait > 0 {
			var lcancel context.CancelFunc
			lctx, lcancel = context.WithTimeout(rctx, c.linearWait)
			defer lcancel()
		}
		v, size, found, err = load(lctx)
	}
	asOf, wasStale := started, false
	observed := !skipLinear // whether err or v is the group's own answer
	if unavailable(err) && stale != nil && c.maxStale > 0 {
		lv, lsize, lfound, lerr := v, size, found, err
		observed = false // unless the linearizable read's answer stands
		var serr error
		v, size, found, asOf, serr = stale(rctx)
		switch {
		case asOf.IsZero() && skipLinear:
			// Nothing known to serve (a node that just started): wait
			// for the quorum, as without stale serving.
			v, size, found, err = load(rctx)
			asOf, observed = started, true
		case serr != nil && skipLinear:
			err = serr
		case serr != nil || asOf.IsZero():
			// Keep the linearizable read's error: it says why the
			// group gave no answer; the stale read adds nothing. The
			// group is not marked down: with no last known state to
			// serve (a node that just started), every call keeps
			// waiting for the quorum, as without stale serving.
			observed = !skipLinear
		default:
			if !skipLinear {
				c.mu.Lock()
				c.recordLocked(cluster, k, gen, started, started, false, true, lv, lsize, lfound, lerr) // down
				c.mu.Unlock()
			}
			err = c.down.staleAnswer(cluster, c.now(), asOf, c.maxStale)
			wasStale = true
		}
	}
	c.mu.Lock()
	delete(c.flights, k)
	c.recordLocked(cluster, k, gen, started, asOf, wasStale, observed, v, size, found, err)
	c.mu.Unlock()
	if err != nil {
		var zero V
		v, found = zero, false
	}
	f.v, f.found, f.err = v, found, err
	close(f.done)
}

// errSkipped stands for the linearizable read a down group is not asked.
var errSkipped = errors.New("no quorum: linearizable read skipped while the group is down")

// probeLocked starts one background read of k when none of cluster's is
// under way and the last started more than fresh ago.
func (c *freshCache[V]) probeLocked(cluster, k string, now time.Time, load loadFunc[V]) {
	if c.closed || now.Sub(c.lastProbe[cluster]) < c.fresh {
		return
	}
	if len(c.lastProbe) >= maxClusters {
		clear(c.lastProbe)
	}
	c.lastProbe[cluster] = now
	gen := c.gen
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ctx, cancel := context.WithTimeout(c.ctx, cacheReadTimeout)
		defer cancel()
		started := c.now()
		v, size, found, err := load(ctx)
		c.mu.Lock()
		if c.ctx.Err() == nil {
			c.recordLocked(cluster, k, gen, started, started, false, true, v, size, found, err)
		}
		done := c.onProbeDone
		c.mu.Unlock()
		if done != nil {
			done()
		}
	}()
}

// recordLocked keeps what a read that started at started answered, of a
// state known current at asOf (started unless wasStale); observed says
// whether the answer (or err) is the group's own, which alone may mark it
// down or up.
func (c *freshCache[V]) recordLocked(cluster, k string, gen uint64, started, asOf time.Time, wasStale,
	observed bool, v V, size int, found bool, err error) {
	if err != nil {
		if unavailable(err) && observed {
			c.down.set(cluster, true, started)
		}
		return
	}
	if observed {
		c.down.set(cluster, false, started)
	}
	if gen != c.gen {
		return // invalidated while the read was under way: it may predate the change
	}
	c.dropLocked(k)
	if !found {
		if len(c.neg) >= c.maxNegative {
			c.sweepNegativeLocked()
		}
		c.neg[k] = negative{checked: started, asOf: asOf}
		return
	}
	delete(c.neg, k)
	if size > c.maxBytes {
		return // larger than the whole cache: read every time
	}
	for len(c.pos) >= c.maxEntries || c.bytes+size > c.maxBytes {
		c.evictLocked()
	}
	c.pos[k] = &cached[V]{v: v, size: size, checked: started, asOf: asOf}
	c.bytes += size
}

func (c *freshCache[V]) dropLocked(k string) {
	if e, ok := c.pos[k]; ok {
		c.bytes -= e.size
		delete(c.pos, k)
	}
}

// evictLocked drops the positive answer read longest ago (full scan: it
// runs only when the cache is full, after a read that cost far more).
func (c *freshCache[V]) evictLocked() {
	var oldest string
	var at time.Time
	for k, e := range c.pos {
		if oldest == "" || e.checked.Before(at) {
			oldest, at = k, e.checked
		}
	}
	c.dropLocked(oldest)
}

// sweepNegativeLocked makes room for negative answers: expired ones go
// first, else arbitrary ones down to 7/8 of the bound, so a flood of
// unknown keys pays for a scan once per maxNegative/8 of them.
func (c *freshCache[V]) sweepNegativeLocked() {
	now := c.now()
	for k, n := range c.neg {
		if now.Sub(n.checked) >= c.fresh {
			delete(c.neg, k)
		}
	}
	for k := range c.neg {
		if len(c.neg) <= c.maxNegative*7/8 {
			break
		}
		delete(c.neg, k)
	}
}

// invalidate forgets key in cluster, and makes reads under way when it is
// called store nothing: this node's own change (a revocation) is seen by
// its next request at once.
func (c *freshCache[V]) invalidate(cluster, key string) {
	k := cacheKey(cluster, key)
	c.mu.Lock()
	c.gen++
	c.dropLocked(k)
	delete(c.neg, k)
	c.mu.Unlock()
}

// close stops background reads and waits for them.
func (c *freshCache[V]) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}
