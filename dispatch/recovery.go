package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// maintenanceLoop runs recovery and retention for every cluster of
// Config.Clusters this node currently leads (Store.IsLeader). A node that
// runs them as a singleton role instead (Maintain) leaves Clusters empty.
func (d *Dispatcher) maintenanceLoop() {
	defer d.wg.Done()
	rec := time.NewTicker(d.cfg.RecoveryInterval)
	defer rec.Stop()
	ret := time.NewTicker(d.cfg.RetentionInterval)
	defer ret.Stop()
	// Most passes scan only the recent tail of the key space (see
	// recoverFrom); every fullEvery-th pass scans it all.
	fullEvery := max(1, int(time.Minute/d.cfg.RecoveryInterval))
	pass := 0
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-rec.C:
			pass++
			for _, c := range d.cfg.Clusters {
				if !d.store.IsLeader(c) {
					d.setCursor(c, "")
					continue
				}
				d.recoveryPass(d.ctx, c, pass%fullEvery == 0)
			}
		case <-ret.C:
			for _, c := range d.cfg.Clusters {
				if !d.store.IsLeader(c) {
					d.setRetention(c, nil)
				} else {
					d.retentionPass(d.ctx, c)
				}
			}
		}
	}
}

// Maintain runs cluster's recovery and retention passes until ctx ends (or
// the dispatcher stops): the work of the retention role, which the node
// runs on the role's active instance only. The passes make their store
// calls with contexts derived from ctx, so they end with it, and a store
// that guards writes by what ctx carries (a role's fence) guards the
// retention deletions. Take-overs write their records as any execution
// does (compare-and-set on the record's version) and are not cut short by
// the end of ctx. The cursor and the retention window are rebuilt at each
// start: another instance may have moved the records since this one last ran.
func (d *Dispatcher) Maintain(ctx context.Context, cluster string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	reset := func() {
		d.setCursor(cluster, "")
		d.setRetention(cluster, nil)
	}
	reset()
	defer reset()
	rec := time.NewTicker(d.cfg.RecoveryInterval)
	defer rec.Stop()
	ret := time.NewTicker(d.cfg.RetentionInterval)
	defer ret.Stop()
	fullEvery := max(1, int(time.Minute/d.cfg.RecoveryInterval))
	pass := 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-rec.C:
			pass++
			d.recoveryPass(ctx, cluster, pass%fullEvery == 0)
		case <-ret.C:
			d.retentionPass(ctx, cluster)
		}
	}
}

func (d *Dispatcher) recoveryPass(ctx context.Context, c string, full bool) {
	start := d.cursor(c)
	if full {
		start = ""
	}
	if n, err := d.recoverFrom(ctx, c, start); err != nil {
		if ctx.Err() == nil {
			d.log.Warn().Err(err).Str("cluster", c).Msg("recovery scan failed")
		}
	} else if n > 0 {
		d.log.Info().Int("taken_over", n).Str("cluster", c).Msg("recovered executions")
	}
}

func (d *Dispatcher) retentionPass(ctx context.Context, c string) {
	if n, err := d.retain(ctx, c); err != nil {
		if ctx.Err() == nil {
			d.log.Warn().Err(err).Str("cluster", c).Msg("retention pass failed")
		}
	} else if n > 0 {
		d.log.Debug().Int("deleted", n).Str("cluster", c).Msg("retention")
	}
}

// Recover scans cluster's non-terminal executions once and takes over those
// whose owner is gone (failed, left, unknown to gossip, or this node without
// a live drive) or whose lease has lapsed: a synchronous one is marked lost
// (its client is gone with its node), an async one is re-dispatched (as a
// new attempt, if retries are left). It returns how many it took over. The
// maintenance loop calls it while this node leads the cluster's group;
// it is exported for tests and tools.
func (d *Dispatcher) Recover(cluster string) (int, error) { return d.recoverFrom(d.ctx, cluster, "") }

// cursorLag is how far behind now an incremental recovery scan starts: it
// covers proposers whose clocks lag (their IDs sort earlier); a full scan
// every minute covers the rest.
const cursorLag = time.Minute

// recoverFrom scans the non-terminal executions with keys after start and
// moves the cluster's cursor: below it every execution was terminal at the
// scan (terminal is final), up to cursorLag before now.
func (d *Dispatcher) recoverFrom(pctx context.Context, cluster, start string) (int, error) {
	_, scanBytes := d.cfg.pageBytes()
	n := 0
	cursor := timeKey(d.now().Add(-cursorLag))
	for _, st := range []Status{StatusQueued, StatusRunning} {
		after := start
		for {
			ctx, cancel := context.WithTimeout(pctx, d.cfg.StoreTimeout)
			entries, err := d.store.List(ctx, cluster, "exec/", ListOptions{
				After: after, Limit: 500, Match: map[string]string{"status": string(st)}, MaxBytes: scanBytes})
			cancel()
			if err != nil {
				return n, fmt.Errorf("list %s executions: %w", st, err)
			}
			for _, e := range entries {
				ex, err := decodeExec(e.Value, e.Version)
				if err != nil || ex.Status.Terminal() {
					continue
				}
				if k := timeKey(IDTime(ex.ID)); k < cursor {
					cursor = k
				}
				if reason := d.abandoned(&ex); reason != "" {
					if d.takeOver(&ex, reason) {
						d.stats.takenOver.Add(1)
						n++
					}
				}
			}
			if !morePages(entries, 500, scanBytes) {
				break
			}
			after = entries[len(entries)-1].Key
		}
	}
	if start == "" || cursor > start {
		d.setCursor(cluster, cursor)
	}
	return n, nil
}

// timeKey is the exec key sorting just before every ID created at or after t.
func timeKey(t time.Time) string {
	return ExecKey(fmt.Sprintf("%016x", uint64(t.UnixNano())))
}

func (d *Dispatcher) cursor(cluster string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.recCursor[cluster]
}

func (d *Dispatcher) setCursor(cluster, key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key == "" {
		delete(d.recCursor, cluster)
		return
	}
	d.recCursor[cluster] = key
}

// abandoned says why nobody is driving ex any more ("" if someone is).
func (d *Dispatcher) abandoned(ex *Execution) string {
	if d.isLive(ex.ID) {
		return ""
	}
	now := d.now()
	switch {
	case ex.Owner == "":
		return "released by its owner"
	case ex.Owner == d.local:
		return "owned by this node, which no longer drives it"
	}
	if m, known := d.runners.Lookup(ex.Owner); !known {
		return fmt.Sprintf("owner %s is unknown to gossip", ex.Owner)
	} else if m.Status == MemberFailed || m.Status == MemberLeft {
		return fmt.Sprintf("owner %s is %s", ex.Owner, m.Status)
	}
	if !ex.LeaseExpires.IsZero() && now.After(ex.LeaseExpires.Add(d.cfg.RecoveryMargin)) {
		return fmt.Sprintf("lease of owner %s lapsed at %s", ex.Owner, ex.LeaseExpires.UTC().Format(time.RFC3339))
	}
	return ""
}

// takeOver acts on an abandoned execution. It reports whether it did.
func (d *Dispatcher) takeOver(ex *Execution, reason string) bool {
	log := d.log.With().Str("exec", ex.ID).Str("service", ex.Service).Str("reason", reason).Logger()
	if ex.ServiceDef == nil {
		_, err := d.finish(ex, ex.Version, StatusLost, nil, "record has no service definition; "+reason)
		return err == nil
	}
	if !ex.CancelRequestedAt.IsZero() {
		// Cancelled before its driver went: never run again.
		_, err := d.finish(ex, ex.Version, StatusCancelled, nil, cancelMsg(ex)+"; "+reason)
		if err == nil {
			log.Info().Msg("ended abandoned execution cancelled, as requested")
		}
		return err == nil
	}
	if ex.Status == StatusRunning {
		d.endAttempt(ex, string(StatusLost), "attempt abandoned: "+reason)
	}
	if !ex.Async {
		_, err := d.finish(ex, ex.Version, StatusLost, nil,
			fmt.Sprintf("execution lost: %s; the synchronous client is gone with it", reason))
		if err != nil {
			log.Warn().Err(err).Msg("could not mark execution lost")
			return false
		}
		log.Info().Msg("marked synchronous execution lost")
		return true
	}
	if failures(ex) > ex.ServiceDef.Retries {
		_, err := d.finish(ex, ex.Version, StatusLost, nil,
			fmt.Sprintf("%s; no retries left (retries=%d)", reason, ex.ServiceDef.Retries))
		return err == nil
	}
	if ex.InputTruncated {
		_, err := d.finish(ex, ex.Version, StatusLost, nil, reason+"; input not kept in full, cannot re-run")
		return err == nil
	}
	lv := d.addLive(ex)
	if lv == nil {
		return false // picked up meanwhile
	}
	select {
	case d.asyncSem <- struct{}{}:
	default:
		d.removeLive(ex.ID, lv)
		return false // at capacity; a later scan retries
	}
	log.Info().Msg("re-dispatching async execution")
	d.spawn(ex, ex.Version, ex.input(), lv)
	return true
}

// Retain deletes terminal execution records older than Config.RetentionAge
// and, beyond the newest ones within Config.RetentionCount and
// Config.RetentionBytes, the oldest ones — at most Config.RetentionBatch
// per call. It returns how many it deleted.
func (d *Dispatcher) Retain(cluster string) (int, error) { return d.retain(d.ctx, cluster) }

func (d *Dispatcher) retain(pctx context.Context, cluster string) (int, error) {
	_, scanBytes := d.cfg.pageBytes()
	cutoff := d.now().Add(-d.cfg.RetentionAge)
	type victim struct {
		key, idem string
		ver       uint64
		size      int
	}
	var victims []victim
	add := func(e Entry) {
		ex, err := decodeExec(e.Value, e.Version)
		if err != nil || !ex.Status.Terminal() {
			return
		}
		v := victim{key: e.Key, ver: e.Version, size: len(e.Value)}
		if ex.IdempotencyKey != "" {
			v.idem = IdemKey(ex.Service, ex.IdempotencyKey)
		}
		victims = append(victims, v)
	}
	// Age: oldest first, stop at the first record younger than the cutoff
	// (IDs sort by creation time).
	after := ""
	for len(victims) < d.cfg.RetentionBatch {
		ctx, cancel := context.WithTimeout(pctx, d.cfg.StoreTimeout)
		entries, err := d.store.List(ctx, cluster, "exec/",
			ListOptions{After: after, Limit: d.cfg.RetentionBatch, MaxBytes: scanBytes})
		cancel()
		if err != nil {
			return 0, fmt.Errorf("list executions: %w", err)
		}
		young := false
		for _, e := range entries {
			if t := IDTime(strings.TrimPrefix(e.Key, "exec/")); !t.IsZero() && t.After(cutoff) {
				young = true
				break
			}
			add(e)
		}
		if young || !morePages(entries, d.cfg.RetentionBatch, scanBytes) {
			break
		}
		after = entries[len(entries)-1].Key
	}
	// Count and bytes: entries up to the window's cut are excess.
	if len(victims) < d.cfg.RetentionBatch {
		seen := map[string]bool{}
		for _, v := range victims {
			seen[v.key] = true
		}
		excess, err := d.retentionExcess(pctx, cluster)
		if err != nil {
			return 0, err
		}
		for _, e := range excess {
			if len(victims) >= d.cfg.RetentionBatch {
				break
			}
			if !seen[e.Key] {
				add(e)
			}
		}
	}
	deleted := 0
	for _, v := range victims {
		ctx, cancel := context.WithTimeout(pctx, d.cfg.StoreTimeout)
		ver := v.ver
		// The record and its idempotency key go in one command: two
		// deletes could leave the key pointing at nothing.
		kvs := []KV{{Key: v.key, CAS: &ver}}
		if v.idem != "" {
			kvs = append(kvs, KV{Key: v.idem})
		}
		err := d.store.DeleteMulti(ctx, cluster, kvs)
		cancel()
		if errors.Is(err, ErrConflict) {
			continue // changed meanwhile; next pass
		}
		if err != nil {
			return deleted, fmt.Errorf("delete %s: %w", v.key, err)
		}
		deleted++
		// An age deletion inside the window shrinks it.
		if st := d.retention(cluster); st != nil && v.key > st.cut && v.key <= st.settled {
			sz, ok := st.pending[v.key]
			if !ok {
				sz = int64(v.size)
			}
			delete(st.pending, v.key)
			st.n, st.bytes = st.n-1, st.bytes-sz
		}
	}
	return deleted, nil
}

// retentionState lets retention passes read little in steady state. The
// window of kept records is the keys after cut ("" = all keys): the newest
// records within RetentionCount and RetentionBytes. The keys in
// (cut, settled] are counted in n and bytes; terminal records do not
// change, so only the ones in flight (pending, with the size counted) are
// read again each pass, as they grow when they end. Each pass counts what
// arrived after settled, then moves the cut until the window fits. A full
// walk rebuilds the state every retentionFullEvery passes, after a
// leadership change, and whenever the counts disagree with the store.
type retentionState struct {
	cut     string // the newest key beyond the window ("" = none)
	settled string // the newest key counted
	n       int
	bytes   int64
	pending map[string]int64 // counted records not yet terminal → size counted
	passes  int
}

// maxRetentionPending bounds the in-flight records a retention pass reads
// one by one; with more, it walks everything instead.
const maxRetentionPending = 2048

const retentionFullEvery = 60

func (d *Dispatcher) retention(cluster string) *retentionState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.retState[cluster]
}

func (d *Dispatcher) setRetention(cluster string, st *retentionState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st == nil {
		delete(d.retState, cluster)
		return
	}
	d.retState[cluster] = st
}

func (d *Dispatcher) list(pctx context.Context, cluster string, o ListOptions) ([]Entry, error) {
	ctx, cancel := context.WithTimeout(pctx, d.cfg.StoreTimeout)
	defer cancel()
	es, err := d.store.List(ctx, cluster, "exec/", o)
	if err != nil {
		return nil, fmt.Errorf("list executions: %w", err)
	}
	return es, nil
}

// retentionPage is the page size of retention's walks (and scanBytes their
// bound in bytes: a page carries the records' values).
const retentionPage = 1000

// sized is what retention needs of one record.
type sized struct {
	key      string
	size     int64
	terminal bool // or undecodable: it will not change by itself
}

func sizeOf(key string, v []byte) sized {
	var st struct {
		Status Status `json:"status"`
	}
	err := json.Unmarshal(v, &st)
	return sized{key: key, size: int64(len(v)), terminal: err != nil || st.Status.Terminal()}
}

// over reports whether a window of n records taking b bytes is too big.
func (d *Dispatcher) over(n int, b int64) bool {
	return n > d.cfg.RetentionCount || b > d.cfg.RetentionBytes
}

// retentionExcess returns up to RetentionBatch of the oldest entries beyond
// the window (the newest within RetentionCount and RetentionBytes), oldest
// first.
func (d *Dispatcher) retentionExcess(pctx context.Context, cluster string) ([]Entry, error) {
	_, scanBytes := d.cfg.pageBytes()
	st := d.retention(cluster)
	if st != nil && st.passes < retentionFullEvery {
		ok, err := d.slideWindow(pctx, cluster, st)
		if err != nil {
			return nil, err
		}
		if ok {
			st.passes++
			if st.cut == "" {
				return nil, nil
			}
			es, err := d.list(pctx, cluster, ListOptions{Limit: d.cfg.RetentionBatch, MaxBytes: scanBytes})
			if err != nil {
				return nil, err
			}
			var out []Entry
			for _, e := range es {
				if e.Key > st.cut {
					break
				}
				out = append(out, e)
			}
			return out, nil
		}
		d.log.Debug().Str("cluster", cluster).Msg("retention counts disagree with the store; full walk")
	}
	return d.retentionWalk(pctx, cluster)
}

// slideWindow updates st: in-flight records measured again, new ones
// counted, the cut moved until the window fits. false: st disagrees with
// the store, or too many records are in flight (a full walk is due).
func (d *Dispatcher) slideWindow(pctx context.Context, cluster string, st *retentionState) (bool, error) {
	_, scanBytes := d.cfg.pageBytes()
	for key, was := range st.pending {
		ctx, cancel := context.WithTimeout(pctx, d.cfg.StoreTimeout)
		v, _, found, err := d.store.Get(ctx, cluster, key)
		cancel()
		if err != nil {
			return false, fmt.Errorf("read execution: %w", err)
		}
		if !found {
			delete(st.pending, key)
			st.n, st.bytes = st.n-1, st.bytes-was
			continue
		}
		x := sizeOf(key, v)
		st.bytes += x.size - was
		if x.terminal {
			delete(st.pending, key)
		} else {
			st.pending[key] = x.size
		}
	}
	for after := max(st.settled, st.cut); ; {
		es, err := d.list(pctx, cluster, ListOptions{After: after, Limit: retentionPage, MaxBytes: scanBytes})
		if err != nil {
			return false, err
		}
		for _, e := range es {
			x := sizeOf(e.Key, e.Value)
			st.settled, st.n, st.bytes = e.Key, st.n+1, st.bytes+x.size
			if !x.terminal {
				if len(st.pending) >= maxRetentionPending {
					return false, nil
				}
				st.pending[e.Key] = x.size
			}
		}
		if !morePages(es, retentionPage, scanBytes) {
			break
		}
		after = es[len(es)-1].Key
	}
	for d.over(st.n, st.bytes) {
		limit := min(max(st.n-d.cfg.RetentionCount, 16), retentionPage)
		es, err := d.list(pctx, cluster, ListOptions{After: st.cut, Limit: limit, MaxBytes: scanBytes})
		if err != nil {
			return false, err
		}
		if len(es) == 0 {
			return false, nil
		}
		for _, e := range es {
			if !d.over(st.n, st.bytes) {
				break
			}
			if e.Key > st.settled {
				return false, nil // the counts include records that are gone
			}
			sz, ok := st.pending[e.Key]
			if ok {
				delete(st.pending, e.Key)
			} else {
				sz = int64(len(e.Value))
			}
			st.cut, st.n, st.bytes = e.Key, st.n-1, st.bytes-sz
		}
	}
	return st.n >= 0 && st.bytes >= 0, nil
}

// retentionWalk walks every record from the newest, rebuilds the state and
// returns up to RetentionBatch of the oldest entries beyond the window.
func (d *Dispatcher) retentionWalk(pctx context.Context, cluster string) ([]Entry, error) {
	_, scanBytes := d.cfg.pageBytes()
	st := &retentionState{pending: map[string]int64{}}
	var excess []Entry
	windowDone := false
	after := ""
	for {
		es, err := d.list(pctx, cluster, ListOptions{After: after, Limit: retentionPage, Reverse: true, MaxBytes: scanBytes})
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if !windowDone && !d.over(st.n+1, st.bytes+int64(len(e.Value))) {
				x := sizeOf(e.Key, e.Value)
				if st.n == 0 {
					st.settled = e.Key
				}
				st.n, st.bytes = st.n+1, st.bytes+x.size
				if !x.terminal {
					st.pending[e.Key] = x.size
				}
				continue
			}
			if !windowDone {
				windowDone, st.cut = true, e.Key
			}
			excess = append(excess, e)
			if len(excess) > d.cfg.RetentionBatch {
				excess = excess[1:]
			}
		}
		if !morePages(es, retentionPage, scanBytes) {
			break
		}
		after = es[len(es)-1].Key
	}
	if len(st.pending) > maxRetentionPending {
		st.passes = retentionFullEvery // too many to read one by one: walk again next time
	}
	d.setRetention(cluster, st)
	sort.Slice(excess, func(i, j int) bool { return excess[i].Key < excess[j].Key })
	return excess, nil
}
