package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/dispatch/upstreams"
	"github.com/meshgw/meshgw/transport"
	"github.com/rs/zerolog"
)

// RPC methods served by a runner.
const (
	MethodExec = "dispatch.exec"
	MethodHTTP = "dispatch.http"
	// MethodWatch streams the live output of an execution the callee drives.
	MethodWatch = "dispatch.watch"
	// MethodCancel asks the callee to stop an execution it drives (unary;
	// body: the execution ID). Only members of the mesh may call it.
	MethodCancel = "dispatch.cancel"
)

// Config tunes the dispatcher. Zero values are invalid; start from
// DefaultConfig.
type Config struct {
	// Clusters are the clusters whose execution records the dispatcher
	// maintains on its own: recovery and retention run for each of them
	// while this node leads the cluster's group (Store.IsLeader). Leave it
	// empty when a singleton role calls Maintain instead (the agent does).
	Clusters []string
	// MaxInput bounds an execution's input. Default 1 MiB.
	MaxInput int
	// RecordInputCap bounds the input kept in a sync execution's record
	// (async records keep the whole input: recovery re-runs it). Default 64 KiB.
	RecordInputCap int
	// RecordOutputCap bounds stdout and stderr, each, kept in the record.
	// The sync answer carries the runner's full capture. Default 256 KiB.
	RecordOutputCap int
	// AttemptGrace is added to the service timeout to bound one attempt: a
	// runner that has not answered by then (hung, SIGSTOPped, partitioned)
	// is given up on. Default 5s.
	AttemptGrace time.Duration
	// AckTimeout bounds the wait for a remote runner to acknowledge an
	// execution (it does so before starting the process): one that has not
	// is taken for hung and the attempt is retried elsewhere. Default 2s.
	AckTimeout time.Duration
	// OutputWriteTimeout bounds each frame a runner sends to the node that
	// called it (exec output and result, a proxied response): a caller that
	// does not take one in time has stopped reading, and the execution is
	// cancelled, or the proxied exchange ended, rather than left to hold
	// the runner's slot. Default 10s.
	OutputWriteTimeout time.Duration
	// PenaltyBox is how long a runner whose call just failed as unreachable
	// is skipped (cleared by a success). Default 5s.
	PenaltyBox time.Duration
	// QueueLease is the lease of a queued async execution: if it is still
	// queued under the same owner after this (plus RecoveryMargin), recovery
	// takes it over. Default 60s.
	QueueLease time.Duration
	// NoRunnerWait is how long an accepted async execution waits for a live
	// (non-busy) runner before it fails. Must be below QueueLease. Default 30s.
	NoRunnerWait time.Duration
	// RecoveryInterval is the period of the leader's recovery scan. Default 3s.
	RecoveryInterval time.Duration
	// RecoveryMargin is added to a lease before recovery treats it as lapsed
	// (clock skew between proposers). Default 5s.
	RecoveryMargin time.Duration
	// RetentionCount keeps at most this many execution records. Default 10000.
	RetentionCount int
	// RetentionBytes bounds the total size of the execution records kept
	// (every voter holds them in memory; a record takes up to
	// MaxRecordSize): the oldest beyond it are deleted. At least
	// MaxRecordSize. Default 256 MiB.
	RetentionBytes int64
	// RetentionAge deletes records older than this. Default 24h.
	RetentionAge time.Duration
	// RetentionInterval is the period of the leader's retention pass. Default 1m.
	RetentionInterval time.Duration
	// RetentionBatch bounds deletions per pass. Default 256.
	RetentionBatch int
	// StoreTimeout bounds one store operation made on the dispatcher's own
	// behalf (background writes, recovery). Default 5s.
	StoreTimeout time.Duration
	// StoreRetryFor is how long a record write whose outcome is unknown
	// (a leader died, a replica went silent) keeps being retried: long
	// enough to ride out a leader election after a voter's death.
	// Default 10s.
	StoreRetryFor time.Duration
	// MaxAsync bounds async executions driven by this node at once; more
	// are refused with ErrBusy. Default 1024.
	MaxAsync int
	// WatchPoll is the record polling period of Watch and of waiting on
	// another request's execution. Default 250ms.
	WatchPoll time.Duration
	// MaxHTTPHeaderBytes bounds a proxied request's header frame. Default 64 KiB.
	MaxHTTPHeaderBytes int
	// Now is the clock (tests inject one). Default time.Now.
	Now func() time.Time

	// listBytes and scanBytes bound List pages in bytes (0: the defaults,
	// defaultListBytes and defaultScanBytes); tests shrink them.
	listBytes, scanBytes int
	// Cluster is the cluster this node belongs to. A runner runs, for
	// remote callers, only services of this cluster as its replicated
	// state defines them (verify.go). Required on a runner that serves
	// the transport (New with both rpc and exec).
	Cluster string
	// StaleServeFor is how long after a definition was last known current
	// a runner may still check a proxied request's upstream against it
	// while its cluster's state cannot be read (verifyhttp.go; the
	// agent's -stale-serve-for). 0: never, the request is unverified.
	// Default 5m.
	StaleServeFor time.Duration
	// StaleDefinitions, optional, reads definitions from this node's last
	// known state for those checks, when the runner's own copy is older.
	StaleDefinitions StaleDefinitions
	// SourceDir is where a runner caches repository checkouts and Python
	// environments (gitsrc); empty: services from a repository fail here.
	SourceDir string
}

func (c *Config) pageBytes() (list, scan int) {
	list, scan = defaultListBytes, defaultScanBytes
	if c.listBytes > 0 {
		list = c.listBytes
	}
	if c.scanBytes > 0 {
		scan = c.scanBytes
	}
	return list, scan
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		MaxInput:           1 << 20,
		RecordInputCap:     64 << 10,
		RecordOutputCap:    256 << 10,
		AttemptGrace:       5 * time.Second,
		AckTimeout:         2 * time.Second,
		OutputWriteTimeout: 10 * time.Second,
		PenaltyBox:         5 * time.Second,
		QueueLease:         60 * time.Second,
		NoRunnerWait:       30 * time.Second,
		RecoveryInterval:   3 * time.Second,
		RecoveryMargin:     5 * time.Second,
		RetentionCount:     10000,
		RetentionBytes:     256 << 20,
		RetentionAge:       24 * time.Hour,
		RetentionInterval:  time.Minute,
		RetentionBatch:     256,
		StoreTimeout:       5 * time.Second,
		StoreRetryFor:      10 * time.Second,
		MaxAsync:           1024,
		WatchPoll:          250 * time.Millisecond,
		MaxHTTPHeaderBytes: 64 << 10,
		StaleServeFor:      5 * time.Minute,
		Now:                time.Now,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	pos := func(name string, d time.Duration) error {
		if d <= 0 {
			return fmt.Errorf("dispatch: %s must be positive", name)
		}
		return nil
	}
	for _, e := range []error{
		pos("AttemptGrace", c.AttemptGrace), pos("AckTimeout", c.AckTimeout), pos("PenaltyBox", c.PenaltyBox),
		pos("OutputWriteTimeout", c.OutputWriteTimeout),
		pos("QueueLease", c.QueueLease), pos("NoRunnerWait", c.NoRunnerWait),
		pos("RecoveryInterval", c.RecoveryInterval), pos("RecoveryMargin", c.RecoveryMargin),
		pos("RetentionAge", c.RetentionAge), pos("RetentionInterval", c.RetentionInterval),
		pos("StoreTimeout", c.StoreTimeout), pos("StoreRetryFor", c.StoreRetryFor), pos("WatchPoll", c.WatchPoll),
	} {
		if e != nil {
			return e
		}
	}
	switch {
	case c.MaxInput < 1 || c.RecordInputCap < 0 || c.RecordOutputCap < 0:
		return errors.New("dispatch: MaxInput must be positive and record caps not negative")
	case c.NoRunnerWait >= c.QueueLease:
		return errors.New("dispatch: NoRunnerWait must be below QueueLease")
	case c.RetentionCount < 1 || c.RetentionBatch < 1:
		return errors.New("dispatch: RetentionCount and RetentionBatch must be positive")
	case c.RetentionBytes < MaxRecordSize:
		return fmt.Errorf("dispatch: RetentionBytes %d is below MaxRecordSize (%d), one record at its largest",
			c.RetentionBytes, MaxRecordSize)
	case c.MaxAsync < 1:
		return errors.New("dispatch: MaxAsync must be positive")
	case c.MaxHTTPHeaderBytes < 1024:
		return errors.New("dispatch: MaxHTTPHeaderBytes must be at least 1024")
	case c.StaleServeFor < 0:
		return errors.New("dispatch: StaleServeFor must not be negative")
	case c.Now == nil:
		return errors.New("dispatch: Now must be set")
	}
	return nil
}

// Dispatcher accepts executions, chooses runners, forwards work to them
// over the transport, retries, and keeps the execution records. On a runner
// node it also serves MethodExec and MethodHTTP. Safe for concurrent use.
type Dispatcher struct {
	cfg     Config
	runners Runners
	store   Store
	rpc     *transport.Transport
	exec    *runner.Executor
	local   string
	log     zerolog.Logger
	// jsonWire: runners (name → time.Time) that answered a binary
	// MethodHTTP header frame as malformed, i.e. run an earlier build.
	jsonWire sync.Map

	mu        sync.Mutex
	rr        map[string]uint64          // cluster/service → round-robin counter
	inflight  map[string]int             // runner → calls in flight from this node
	penalty   map[string]time.Time       // runner → skipped until
	live      map[string]*liveExec       // execution ID → live output (this node dispatches it)
	recCursor map[string]string          // cluster → recovery scans may start after this key
	retState  map[string]*retentionState // cluster → incremental retention state
	started   bool
	stopped   bool

	stats    counters
	obs      Observer // optional: metrics (SetObserver)
	asyncSem chan struct{}
	ctx      context.Context // cancelled by Stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	src      sourceState         // services from Git: secrets, checkout cache (source.go)
	defs     defCache            // runner: its cluster's definitions, to check requests (verify.go)
	secrets  SecretSource        // optional: secret values for runs (SetSecrets)
	upsOnce  sync.Once           // creates ups (Upstreams)
	ups      *upstreams.Registry // http upstream balancing and health (balance.go)

	// stateDown: until when (Unix ns) proxied requests are checked
	// against old copies without a read first (verifyhttp.go)
	stateDown atomic.Int64
	legacy    legacyCache // upstreams checked for frames naming no service (verifyhttp.go)
}

// New wires a dispatcher. rpc may be nil (no forwarding: only local runs
// when this node is a runner); exec may be nil (this node is not a runner).
// When both are set, New registers the runner-side stream handlers, so it
// must be called before rpc.Start.
func New(cfg Config, runners Runners, store Store, rpc *transport.Transport, exec *runner.Executor,
	localName string, log zerolog.Logger) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if runners == nil || store == nil {
		return nil, errors.New("dispatch: runners and store are required")
	}
	if localName == "" {
		return nil, errors.New("dispatch: local node name is required")
	}
	if rpc != nil && exec != nil && cfg.Cluster == "" {
		return nil, errors.New("dispatch: a runner needs Config.Cluster, the cluster whose services it runs")
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{
		cfg:       cfg,
		runners:   runners,
		store:     store,
		rpc:       rpc,
		exec:      exec,
		local:     localName,
		log:       log.With().Str("component", "dispatch").Logger(),
		rr:        map[string]uint64{},
		inflight:  map[string]int{},
		penalty:   map[string]time.Time{},
		live:      map[string]*liveExec{},
		recCursor: map[string]string{},
		retState:  map[string]*retentionState{},
		asyncSem:  make(chan struct{}, cfg.MaxAsync),
		ctx:       ctx,
		cancel:    cancel,
	}
	if rpc != nil && exec != nil {
		rpc.HandleStream(MethodExec, d.serveExec)
		rpc.HandleStream(MethodHTTP, d.serveHTTP)
	}
	if rpc != nil {
		rpc.HandleStream(MethodWatch, d.serveWatch)
		rpc.Handle(MethodCancel, d.serveCancel)
	}
	return d, nil
}

// Start launches the recovery and retention loops.
func (d *Dispatcher) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return ErrStopped
	}
	if d.started {
		return nil
	}
	d.started = true
	d.wg.Add(1)
	go d.maintenanceLoop()
	return nil
}

// Stop cancels async executions driven by this node (their records are
// released so another node's recovery can take them over), stops the loops
// and waits for every goroutine the dispatcher started.
func (d *Dispatcher) Stop() error {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	return nil
}

func (d *Dispatcher) now() time.Time { return d.cfg.Now() }

// ---- runner choice ----

// candidates returns the live runners of cluster matching svc's tags, the
// ones in the penalty box last.
func (d *Dispatcher) candidates(cluster string, svc *Service) (fresh, penalized []Runner) {
	all := d.runners.Runners(cluster)
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range all {
		if r.Status != MemberAlive || !r.HasRole(RoleRunner) || !tagsMatch(r.Tags, svc.RunnerTags) {
			continue
		}
		if r.RPCAddr == "" && (r.Name != d.local || d.exec == nil) {
			continue
		}
		if until, ok := d.penalty[r.Name]; ok {
			if now.Before(until) {
				penalized = append(penalized, r)
				continue
			}
			delete(d.penalty, r.Name)
		}
		fresh = append(fresh, r)
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Name < fresh[j].Name })
	sort.Slice(penalized, func(i, j int) bool { return penalized[i].Name < penalized[j].Name })
	return fresh, penalized
}

func tagsMatch(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// pick chooses a runner for svc, avoiding the runners in avoid when any
// other is available. allowPenalized lets a fresh request fall back to
// runners in the penalty box when nothing else is live.
func (d *Dispatcher) pick(cluster string, svc *Service, avoid map[string]bool, allowPenalized bool) (Runner, error) {
	fresh, penalized := d.candidates(cluster, svc)
	pool := filterOut(fresh, avoid)
	if len(pool) == 0 && allowPenalized {
		pool = filterOut(penalized, avoid)
	}
	if len(pool) == 0 {
		return Runner{}, fmt.Errorf("%w: cluster %q, service %q (tags %v)", ErrNoRunner, cluster, svc.Name, svc.RunnerTags)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key := cluster + "/" + svc.Name
	n := d.rr[key]
	d.rr[key] = n + 1
	if svc.Strategy == StrategyLeastLoaded {
		best := -1
		bestLoad := 0
		for i := range pool {
			j := (int(n%uint64(len(pool))) + i) % len(pool) // rotate ties
			if l := d.inflight[pool[j].Name]; best < 0 || l < bestLoad {
				best, bestLoad = j, l
			}
		}
		return pool[best], nil
	}
	return pool[int(n%uint64(len(pool)))], nil
}

func filterOut(rs []Runner, avoid map[string]bool) []Runner {
	if len(avoid) == 0 {
		return rs
	}
	out := make([]Runner, 0, len(rs))
	for _, r := range rs {
		if !avoid[r.Name] {
			out = append(out, r)
		}
	}
	return out
}

func (d *Dispatcher) acquireRunner(name string) {
	d.mu.Lock()
	d.inflight[name]++
	d.mu.Unlock()
}

func (d *Dispatcher) releaseRunner(name string) {
	d.mu.Lock()
	if d.inflight[name]--; d.inflight[name] <= 0 {
		delete(d.inflight, name)
	}
	d.mu.Unlock()
}

func (d *Dispatcher) penalize(name string) {
	d.mu.Lock()
	d.penalty[name] = time.Now().Add(d.cfg.PenaltyBox)
	d.mu.Unlock()
}

func (d *Dispatcher) clearPenalty(name string) {
	d.mu.Lock()
	delete(d.penalty, name)
	d.mu.Unlock()
}

// InFlight returns the number of calls this node has in flight to runner.
func (d *Dispatcher) InFlight(runner string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight[runner]
}

// Stats are cumulative counters of this node's dispatcher, for metrics.
type Stats struct {
	Accepted    int64            // executions accepted by Run
	Terminal    map[Status]int64 // terminal records written by this node, by status
	AttemptLost int64            // attempts lost to unreachable or hung runners
	TakenOver   int64            // executions taken over by recovery here
	Proxied     int64            // HTTP requests proxied
	ProxyFailed int64            // HTTP requests that could not be proxied
	HopsNative  int64            // of Proxied: gateway hops from fasthttp's request (ProxyHop)
	InFlight    int              // calls to runners in flight now
	Async       int              // async executions driven now
}

type counters struct {
	accepted, attemptLost, takenOver, proxied, proxyFailed, hopsNative atomic.Int64
	succeeded, failed, timedOut, lost, cancelled                       atomic.Int64
}

func (c *counters) terminal(s Status) {
	switch s {
	case StatusSucceeded:
		c.succeeded.Add(1)
	case StatusFailed:
		c.failed.Add(1)
	case StatusTimedOut:
		c.timedOut.Add(1)
	case StatusLost:
		c.lost.Add(1)
	case StatusCancelled:
		c.cancelled.Add(1)
	}
}

// Stats returns a snapshot of the counters.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	inflight := 0
	for _, n := range d.inflight {
		inflight += n
	}
	d.mu.Unlock()
	return Stats{
		Accepted: d.stats.accepted.Load(),
		Terminal: map[Status]int64{
			StatusSucceeded: d.stats.succeeded.Load(), StatusFailed: d.stats.failed.Load(),
			StatusTimedOut: d.stats.timedOut.Load(), StatusLost: d.stats.lost.Load(),
			StatusCancelled: d.stats.cancelled.Load(),
		},
		AttemptLost: d.stats.attemptLost.Load(),
		TakenOver:   d.stats.takenOver.Load(),
		Proxied:     d.stats.proxied.Load(),
		ProxyFailed: d.stats.proxyFailed.Load(),
		HopsNative:  d.stats.hopsNative.Load(),
		InFlight:    inflight,
		Async:       len(d.asyncSem),
	}
}
