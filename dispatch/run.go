package dispatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
)

// RunOptions modify Run.
type RunOptions struct {
	// Async: answer as soon as the queued record is durable; this node
	// drives the execution in the background.
	Async bool
	// IdempotencyKey: a second Run of the same service with the same key
	// returns the first execution (waiting for it when synchronous) instead
	// of running again. At most MaxIdempotencyKeyLen printable characters.
	IdempotencyKey string
	// OnOutput receives output chunks while a synchronous run executes
	// (not called for async runs), and (StreamAttempt, number) before a
	// retry's output. Called from the dispatcher's goroutine; must not
	// block for long or retain chunk.
	OnOutput func(stream string, chunk []byte)
	// Schedule and ScheduledAt name the schedule and tick that fire this
	// run (kept in the record); empty for a run a client asked for.
	Schedule    string
	ScheduledAt time.Time
	// With, when set, returns writes made in the same command as the
	// execution's first record (given its ID): a schedule's state, so the
	// tick and its execution are recorded together or not at all.
	With func(execID string) []KV
}

// with returns the writes of opts.With for execution id (none when unset).
func (o RunOptions) with(id string) []KV {
	if o.With == nil {
		return nil
	}
	return o.With(id)
}

// Attempt outcomes in Execution.History beyond the terminal statuses.
const (
	outcomeUnreachable = "unreachable" // the runner vanished or did not answer in time
	outcomeBusy        = "busy"
	outcomeReleased    = "released" // the owner stopped; left for recovery
)

// Run executes svc with input on a live runner of cluster and records it.
//
// Before anything runs or is written, the input is checked (ErrInputTooLarge,
// *SchemaError) and a live runner must exist (ErrNoRunner). A sync run
// returns the terminal execution (with the runner's full capture; the record
// keeps Config.RecordOutputCap); an async run returns the queued execution
// once its record is durable. Store errors (no quorum, ...) are returned
// wrapped. An execution that was accepted always ends in a terminal record:
// here, or through the cluster leader's recovery.
func (d *Dispatcher) Run(ctx context.Context, cluster string, svc Service, input []byte, opts RunOptions) (Execution, error) {
	if d.isStopped() {
		return Execution{}, ErrStopped
	}
	if !runsProcess(svc.Type) {
		return Execution{}, fmt.Errorf("%w: service %q is %q, not exec", ErrWrongType, svc.Name, svc.Type)
	}
	if len(input) > d.cfg.MaxInput {
		return Execution{}, fmt.Errorf("%w: %d bytes, at most %d", ErrInputTooLarge, len(input), d.cfg.MaxInput)
	}
	if err := d.validateInput(ctx, cluster, &svc, input); err != nil {
		return Execution{}, err
	}
	if err := validateScriptInput(&svc, input); err != nil { // python and ansible arguments (source.go)
		return Execution{}, err
	}
	if err := validIdemKey(opts.IdempotencyKey); err != nil {
		return Execution{}, err
	}
	svc.Normalize()
	var idemVer uint64 // a dangling key's version: create replaces it by CAS
	if opts.IdempotencyKey != "" {
		// A replay answers with the first execution even when no runner is
		// live now; a concurrent first use is caught by the create's CAS.
		id, ver, found, err := d.store.Get(ctx, cluster, IdemKey(svc.Name, opts.IdempotencyKey))
		if err != nil {
			return Execution{}, fmt.Errorf("idempotency key: %w", err)
		}
		if found {
			_, _, recFound, err := d.store.Get(ctx, cluster, ExecKey(string(id)))
			if err != nil {
				return Execution{}, fmt.Errorf("idempotency key's execution: %w", err)
			}
			if recFound {
				return d.existing(ctx, cluster, svc.Name, opts.IdempotencyKey, !opts.Async)
			}
			// The key outlived its record (retention before both went in
			// one command): treat it as absent, or every later run with
			// this key would answer 404.
			idemVer = ver
		}
	}
	first, err := d.pick(cluster, &svc, nil, true)
	if err != nil {
		return Execution{}, err
	}
	now := d.now()
	def := svc
	rec := &Execution{
		ID:             NewID(now),
		Service:        svc.Name,
		Cluster:        cluster,
		Status:         StatusQueued,
		AcceptedBy:     d.local,
		Owner:          d.local,
		Async:          opts.Async,
		IdempotencyKey: opts.IdempotencyKey,
		CreatedAt:      now,
		ServiceDef:     &def,
		Schedule:       opts.Schedule,
		ScheduledAt:    opts.ScheduledAt,
	}
	d.stats.accepted.Add(1)
	// Registered before the record exists, so this node's own recovery
	// never mistakes it for abandoned.
	lv := d.addLive(rec)
	if opts.Async || len(input) <= d.cfg.RecordInputCap {
		rec.setInput(input)
	} else {
		rec.setInput(cutInput(input, d.cfg.RecordInputCap))
		rec.InputTruncated = true
	}

	if opts.Async {
		select {
		case d.asyncSem <- struct{}{}:
		default:
			d.removeLive(rec.ID, lv)
			return Execution{}, fmt.Errorf("%w: %d async executions in flight on %s", ErrBusy, d.cfg.MaxAsync, d.local)
		}
		rec.LeaseExpires = now.Add(d.cfg.QueueLease)
		ver, err := d.create(ctx, rec, idemVer, opts.with(rec.ID)...)
		if err != nil {
			<-d.asyncSem
			d.removeLive(rec.ID, lv)
			if errors.Is(err, ErrConflict) && opts.IdempotencyKey != "" {
				return d.existing(ctx, cluster, svc.Name, opts.IdempotencyKey, false)
			}
			return Execution{}, err
		}
		d.observer().ExecStarted(cluster, svc.Name)
		answer := rec.clone()
		d.spawn(rec, ver, input, lv)
		return answer, nil
	}

	d.beginAttempt(rec, first)
	ver, err := d.create(ctx, rec, idemVer, opts.with(rec.ID)...)
	if err != nil {
		d.removeLive(rec.ID, lv)
		if errors.Is(err, ErrConflict) && opts.IdempotencyKey != "" {
			return d.existing(ctx, cluster, svc.Name, opts.IdempotencyKey, true)
		}
		return Execution{}, err
	}
	d.observer().ExecStarted(cluster, svc.Name)
	return d.drive(ctx, rec, ver, input, &first, lv, opts.OnOutput)
}

// spawn drives an async execution in a goroutine the dispatcher owns. The
// caller holds one asyncSem slot, released when the goroutine ends.
func (d *Dispatcher) spawn(rec *Execution, ver uint64, input []byte, lv *liveExec) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		<-d.asyncSem
		d.removeLive(rec.ID, lv)
		_, _ = d.release(rec, ver)
		return
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go func() {
		defer d.wg.Done()
		defer func() { <-d.asyncSem }()
		if _, err := d.drive(d.ctx, rec, ver, input, nil, lv, nil); err != nil && !errors.Is(err, ErrStopped) {
			d.log.Warn().Err(err).Str("exec", rec.ID).Msg("async execution not recorded; recovery will take it over")
		}
	}()
}

func validIdemKey(k string) error {
	if len(k) > MaxIdempotencyKeyLen {
		return &SchemaError{Violations: []Violation{{Message: fmt.Sprintf("idempotency key longer than %d", MaxIdempotencyKeyLen)}}}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return &SchemaError{Violations: []Violation{{Message: "idempotency key must be printable ASCII without spaces"}}}
		}
	}
	return nil
}

// create writes a new record (and its idempotency key) atomically. idemVer
// is 0 when the key must not exist, else the version of a dangling key
// (one whose record is gone) to replace.
func (d *Dispatcher) create(ctx context.Context, rec *Execution, idemVer uint64, extra ...KV) (uint64, error) {
	b, err := encodeRecord(*d.stored(rec), MaxRecordSize)
	if err != nil {
		return 0, fmt.Errorf("record execution %s: %w", rec.ID, err)
	}
	zero := uint64(0)
	kvs := []KV{{Key: ExecKey(rec.ID), Value: b, CAS: &zero}}
	if rec.IdempotencyKey != "" {
		kvs = append(kvs, KV{Key: IdemKey(rec.Service, rec.IdempotencyKey), Value: []byte(rec.ID), CAS: &idemVer})
	}
	kvs = append(kvs, extra...) // RunOptions.With: in the same command
	v, err := d.writeRecord(ctx, rec, b, func(ctx context.Context) (uint64, error) {
		vers, err := d.store.PutMulti(ctx, rec.Cluster, kvs)
		if err == nil && len(vers) == 0 {
			err = errors.New("store returned no version")
		}
		if err != nil {
			return 0, err
		}
		return vers[0], nil
	})
	if err != nil {
		return 0, fmt.Errorf("record execution %s: %w", rec.ID, err)
	}
	return v, nil
}

// existing returns the execution an idempotency key points at, waiting for
// it to end when wait is set.
func (d *Dispatcher) existing(ctx context.Context, cluster, service, key string, wait bool) (Execution, error) {
	b, _, found, err := d.store.Get(ctx, cluster, IdemKey(service, key))
	if err != nil {
		return Execution{}, fmt.Errorf("idempotency key: %w", err)
	}
	if !found {
		return Execution{}, fmt.Errorf("idempotency key %q: %w (concurrently removed)", key, ErrConflict)
	}
	id := string(b)
	if !wait {
		return d.Get(ctx, cluster, id)
	}
	return d.waitTerminal(ctx, cluster, id)
}

// waitTerminal polls the record until it is terminal or ctx ends.
func (d *Dispatcher) waitTerminal(ctx context.Context, cluster, id string) (Execution, error) {
	t := time.NewTicker(d.cfg.WatchPoll)
	defer t.Stop()
	for {
		ex, err := d.Get(ctx, cluster, id)
		if err != nil || ex.Status.Terminal() {
			return ex, err
		}
		select {
		case <-ctx.Done():
			return ex, ctx.Err()
		case <-t.C:
		}
	}
}

// stored returns the copy of rec that goes into the store: output capped.
func (d *Dispatcher) stored(rec *Execution) *Execution {
	c := *rec
	if n := d.cfg.RecordOutputCap; len(c.Stdout) > n || len(c.Stderr) > n {
		if len(c.Stdout) > n {
			c.Stdout = c.Stdout[:n] + runner.TruncationMarker
		}
		if len(c.Stderr) > n {
			c.Stderr = c.Stderr[:n] + runner.TruncationMarker
		}
		c.Truncated = true
	}
	return &c
}

// beginAttempt turns rec into "running attempt n+1 on r, owned by us".
func (d *Dispatcher) beginAttempt(rec *Execution, r Runner) {
	now := d.now()
	rec.Status = StatusRunning
	rec.Runner = r.Name
	rec.Owner = d.local
	rec.Attempts++
	if rec.StartedAt.IsZero() {
		rec.StartedAt = now
	}
	rec.LeaseExpires = now.Add(rec.ServiceDef.EffectiveTimeout() + d.cfg.AttemptGrace)
	rec.History = append(rec.History, Attempt{N: rec.Attempts, Runner: r.Name, Owner: d.local, StartedAt: now})
}

func (d *Dispatcher) endAttempt(rec *Execution, outcome, msg string) {
	if n := len(rec.History); n > 0 && rec.History[n-1].Outcome == "" {
		rec.History[n-1].Outcome = outcome
		rec.History[n-1].Error = msg
		rec.History[n-1].FinishedAt = d.now()
	}
}

// failures counts attempts lost to unreachable or hung runners.
func failures(rec *Execution) int {
	n := 0
	for _, a := range rec.History {
		if a.Outcome == outcomeUnreachable || a.Outcome == string(StatusLost) {
			n++
		}
	}
	return n
}

// put writes rec with CAS on ver and returns the new version. A conflict
// with Cancel's request alone (written on ver) is no takeover: rec adopts
// the request and is written again on the request's version.
func (d *Dispatcher) put(rec *Execution, ver uint64) (uint64, error) {
	v, err := d.put1(rec, ver)
	for try := 0; errors.Is(err, ErrConflict) && try < 2; try++ {
		nv, ok := d.adoptCancel(rec, ver)
		if !ok {
			break
		}
		ver = nv
		v, err = d.put1(rec, ver)
	}
	return v, err
}

func (d *Dispatcher) put1(rec *Execution, ver uint64) (uint64, error) {
	b, err := encodeRecord(*d.stored(rec), MaxRecordSize)
	if err != nil {
		return 0, fmt.Errorf("record execution %s: %w", rec.ID, err)
	}
	write := func(b []byte) (uint64, error) {
		// Not d.ctx: a terminal or release write made while Stop runs must
		// still land (each try is bounded by StoreTimeout, all by StoreRetryFor).
		return d.writeRecord(context.WithoutCancel(d.ctx), rec, b, func(ctx context.Context) (uint64, error) {
			return d.store.Put(ctx, rec.Cluster, ExecKey(rec.ID), b, &ver)
		})
	}
	v, err := write(b)
	if errors.Is(err, ErrTooLarge) {
		// The store measures differently from encodeRecord: a record
		// without input and output still lands, and ends the execution.
		d.log.Warn().Err(err).Str("exec", rec.ID).Msg("record refused as too large; writing it without output")
		if b, err = encodeMinimal(*d.stored(rec), MaxRecordSize); err == nil {
			v, err = write(b)
		}
	}
	if err != nil && !errors.Is(err, ErrConflict) {
		return 0, fmt.Errorf("record execution %s: %w", rec.ID, err)
	}
	return v, err
}

// writeRecord runs write, a compare-and-set of rec's record to b. A value
// the store refuses as too large (ErrTooLarge) is not retried. A write
// whose outcome is unknown (the leader died, a replica went silent) is
// retried for up to Config.StoreRetryFor, enough to ride out a leader
// election after a voter's death; if a try then conflicts, an earlier one
// (or a lower layer's failover) may have applied, and the record holding
// exactly b means it did.
func (d *Dispatcher) writeRecord(ctx context.Context, rec *Execution, b []byte, write func(context.Context) (uint64, error)) (uint64, error) {
	deadline := time.Now().Add(d.cfg.StoreRetryFor)
	var unknown error // why an earlier try's outcome is unknown
	for try := 0; ; try++ {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
		v, err := write(wctx)
		cancel()
		if err == nil {
			return v, nil
		}
		if errors.Is(err, ErrTooLarge) {
			return 0, err // permanent: the same bytes are refused every time
		}
		if errors.Is(err, ErrConflict) {
			// The conflict may be with our own write: an earlier try
			// whose outcome was unknown, or one a lower layer applied
			// before failing over. The record holding exactly b says so.
			v, same, rerr := d.storedAs(ctx, rec, b, deadline)
			switch {
			case same:
				return v, nil
			case rerr != nil && unknown != nil:
				// The outcome is still unknown, not a conflict.
				return 0, fmt.Errorf("%w (a retry conflicted and the record could not be read back: %v)", unknown, rerr)
			}
			return 0, err
		}
		unknown = err
		if !d.storeBackoff(ctx, try, deadline) {
			return 0, err
		}
	}
}

// storeBackoff waits before try+1 of a store operation (200 ms more each time,
// at most 1 s) and reports false, at once, when deadline has passed or
// ctx is done. The dispatcher's stop does not cut it short: the record
// writes that must survive Stop (terminal, release) retry through it.
func (d *Dispatcher) storeBackoff(ctx context.Context, try int, deadline time.Time) bool {
	if time.Now().After(deadline) || ctx.Err() != nil {
		return false
	}
	select {
	case <-time.After(min(time.Duration(try+1)*200*time.Millisecond, time.Second)):
		return true
	case <-ctx.Done():
	}
	return false
}

// storedAs reports whether rec's record currently holds exactly b, and its
// version: an earlier write of ours that timed out but applied. The read
// is retried until deadline while the store cannot answer (the election
// that made the write's outcome unknown may not be over yet); the error is
// the last read's when it never could.
func (d *Dispatcher) storedAs(ctx context.Context, rec *Execution, b []byte, deadline time.Time) (uint64, bool, error) {
	for try := 0; ; try++ {
		rctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
		cur, v, found, err := d.store.Get(rctx, rec.Cluster, ExecKey(rec.ID))
		cancel()
		if err == nil {
			return v, found && bytes.Equal(cur, b), nil
		}
		if !d.storeBackoff(ctx, try, deadline) {
			return 0, false, err
		}
	}
}

// drive runs attempts until the execution is terminal (or superseded, or
// this node stops). claimed is a runner whose attempt is already recorded
// at version ver; otherwise drive claims one by CAS on ver. lv (from
// addLive) is released when drive returns.
func (d *Dispatcher) drive(ctx context.Context, rec *Execution, ver uint64, input []byte,
	claimed *Runner, lv *liveExec, onOut func(string, []byte)) (Execution, error) {
	svc := rec.ServiceDef
	defer d.removeLive(rec.ID, lv)
	// Cancel stops the drive through its context (cause errCancelRequested),
	// or through the record when this drive adopted the request.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	lv.bindCancel(stop)
	cancelled := func() bool {
		return !rec.CancelRequestedAt.IsZero() || errors.Is(context.Cause(ctx), errCancelRequested)
	}
	out := func(stream string, chunk []byte) {
		lv.write(stream, chunk)
		if onOut != nil {
			onOut(stream, chunk)
		}
	}
	avoid := map[string]bool{}
	var waitingSince time.Time
	var busyOnly bool
	for {
		if cancelled() {
			return d.finish(rec, ver, StatusCancelled, nil, cancelMsg(rec))
		}
		var r Runner
		if claimed != nil {
			r, claimed = *claimed, nil
		} else {
			var err error
			r, err = d.pick(rec.Cluster, svc, avoid, failures(rec) == 0)
			if err != nil {
				switch {
				case failures(rec) > 0 && !busyOnly:
					return d.finish(rec, ver, StatusLost, nil, fmt.Sprintf("%s; no other live runner to retry on", lastError(rec)))
				case !rec.Async:
					msg := "no live runner"
					if busyOnly {
						msg = "all runners busy"
					}
					ex, ferr := d.finish(rec, ver, StatusFailed, nil, msg)
					if ferr == nil && busyOnly {
						ferr = fmt.Errorf("%w: %s", ErrBusy, msg)
					} else if ferr == nil {
						ferr = err
					}
					return ex, ferr
				}
				// Async: wait for a runner, bounded.
				if waitingSince.IsZero() {
					waitingSince = time.Now()
				}
				if time.Since(waitingSince) > d.cfg.NoRunnerWait {
					return d.finish(rec, ver, StatusFailed, nil, fmt.Sprintf("no live runner within %s", d.cfg.NoRunnerWait))
				}
				select {
				case <-ctx.Done():
					if cancelled() {
						continue
					}
					return d.release(rec, ver)
				case <-time.After(d.backoff(time.Since(waitingSince))):
				}
				clear(avoid)
				continue
			}
			d.beginAttempt(rec, r)
			nv, err := d.put(rec, ver)
			if err != nil {
				return d.lostClaim(ctx, rec, err)
			}
			ver = nv
			if cancelled() { // adopted with the claim: do not start it
				continue
			}
		}

		// Watchers drop what a lost attempt printed: the buffer restarts,
		// and a marker tells the stream's readers (StreamAttempt).
		lv.begin(rec.Attempts)
		if onOut != nil && rec.Attempts > 1 {
			onOut(StreamAttempt, []byte(strconv.Itoa(rec.Attempts)))
		}
		src, serr := d.sourceFor(ctx, rec.Cluster, svc) // repository and kind for the runner (source.go)
		if serr != nil {
			return d.finish(rec, ver, StatusFailed, nil, serr.Error())
		}
		attemptCtx, cancel := context.WithTimeoutCause(ctx, svc.EffectiveTimeout()+d.cfg.AttemptGrace, errAttemptDeadline)
		secrets, err := d.secretsFor(attemptCtx, rec.Cluster, svc)
		if err != nil {
			cancel()
			return d.finish(rec, ver, StatusFailed, nil, err.Error())
		}
		res, err := d.callExec(attemptCtx, r, execWire{
			ID: rec.ID, Attempt: rec.Attempts, Service: rec.Service,
			Cluster: rec.Cluster, ServiceVersion: svc.Version,
			Command: svc.Command, Env: svc.Env, Dir: svc.Dir, User: svc.User,
			TimeoutMs: svc.EffectiveTimeout().Milliseconds(), Input: input, Source: src,
			Secrets: secrets,
		}, out)
		cancel()
		if err == nil {
			busyOnly = false
			return d.finish(rec, ver, Status(res.Status), &res, res.Error)
		}
		var ae *attemptError
		if !errors.As(err, &ae) {
			ae = &attemptError{kind: outcomeUnreachable, err: err}
		}
		switch ae.kind {
		case "busy":
			d.endAttempt(rec, outcomeBusy, ae.err.Error())
			avoid[r.Name] = true
			busyOnly = failures(rec) == 0
		case "canceled":
			if cancelled() {
				d.log.Info().Str("exec", rec.ID).Str("runner", r.Name).Msg("execution cancelled on request")
				return d.finish(rec, ver, StatusCancelled, nil, cancelMsg(rec))
			}
			if d.ctx.Err() != nil && rec.Async {
				return d.release(rec, ver)
			}
			return d.finish(rec, ver, StatusFailed, nil, "canceled: the client went away")
		case "invalid":
			return d.finish(rec, ver, StatusFailed, nil, ae.err.Error())
		default: // unreachable, deadline
			d.endAttempt(rec, outcomeUnreachable, fmt.Sprintf("runner %s: %v", r.Name, ae.err))
			d.stats.attemptLost.Add(1)
			avoid[r.Name] = true
			busyOnly = false
			d.log.Info().Str("exec", rec.ID).Str("runner", r.Name).Int("attempt", rec.Attempts).
				Err(ae.err).Msg("attempt lost")
			if failures(rec) > svc.Retries {
				return d.finish(rec, ver, StatusLost, nil,
					fmt.Sprintf("%s; no retries left (retries=%d)", lastError(rec), svc.Retries))
			}
		}
	}
}

func cancelMsg(rec *Execution) string {
	if rec.CancelRequestedBy != "" {
		return "cancelled on request (through " + rec.CancelRequestedBy + ")"
	}
	return "cancelled on request"
}

func lastError(rec *Execution) string {
	for i := len(rec.History) - 1; i >= 0; i-- {
		if rec.History[i].Error != "" {
			return rec.History[i].Error
		}
	}
	return "runner lost"
}

func (d *Dispatcher) backoff(waited time.Duration) time.Duration {
	b := 100*time.Millisecond + waited/4
	return min(b, time.Second)
}

// finish writes the terminal record (CAS on ver). The returned execution
// carries the full output of res; the record keeps the capped copy. If a
// newer attempt superseded this one, the current record is returned.
func (d *Dispatcher) finish(rec *Execution, ver uint64, status Status, res *runner.ExecResult, msg string) (Execution, error) {
	now := d.now()
	rec.Status = status
	rec.Error = msg
	rec.FinishedAt = now
	rec.LeaseExpires = time.Time{}
	if res != nil {
		rec.ExitCode = res.ExitCode
		rec.Stdout = string(res.Stdout)
		rec.Stderr = string(res.Stderr)
		rec.Truncated = res.Truncated
		rec.DurationMs = res.Duration.Milliseconds()
		rec.Commit = res.Commit
	} else {
		rec.ExitCode = -1
		if !rec.StartedAt.IsZero() {
			rec.DurationMs = now.Sub(rec.StartedAt).Milliseconds()
		}
	}
	d.endAttempt(rec, string(status), msg)
	nv, err := d.put(rec, ver)
	if errors.Is(err, ErrConflict) {
		return d.superseded(rec)
	}
	if err != nil {
		return *rec, err
	}
	d.stats.terminal(status)
	d.observer().ExecFinished(rec.Cluster, rec.Service, status, now.Sub(rec.CreatedAt))
	rec.Version = nv
	return *rec, nil
}

// superseded is called when a CAS on our attempt failed: another node took
// the execution over. Our result is discarded; the record is the truth.
func (d *Dispatcher) superseded(rec *Execution) (Execution, error) {
	d.log.Info().Str("exec", rec.ID).Int("attempt", rec.Attempts).Msg("attempt superseded by a newer one; result discarded")
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.StoreTimeout)
	defer cancel()
	cur, err := d.Get(ctx, rec.Cluster, rec.ID)
	if err != nil {
		return *rec, err
	}
	return cur, nil
}

// lostClaim handles a failed claim write.
func (d *Dispatcher) lostClaim(ctx context.Context, rec *Execution, err error) (Execution, error) {
	if errors.Is(err, ErrConflict) {
		return d.superseded(rec)
	}
	return *rec, err
}

// release hands an async execution back when this node stops: queued, no
// owner, lease lapsed, so the leader's recovery re-dispatches it at once.
func (d *Dispatcher) release(rec *Execution, ver uint64) (Execution, error) {
	d.endAttempt(rec, outcomeReleased, "owner stopped")
	rec.Status = StatusQueued
	rec.Owner = ""
	rec.LeaseExpires = d.now()
	if _, err := d.put(rec, ver); err != nil && !errors.Is(err, ErrConflict) {
		return *rec, fmt.Errorf("%w: release %s: %v", ErrStopped, rec.ID, err)
	}
	return *rec, ErrStopped
}

func (d *Dispatcher) isStopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopped
}
