package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// cancelWait bounds how long Cancel waits for the driver to write the
// cancelled record: the runner's SIGTERM-to-SIGKILL grace (2 s by
// default) plus a few store writes.
const cancelWait = 10 * time.Second

// errCancelRequested is the cause of a drive's context when Cancel stopped it.
var errCancelRequested = errors.New("cancel requested")

const codeForbidden = "forbidden" // MethodCancel: the caller is no member

// Cancel stops execution id of cluster and returns its record. It is
// idempotent: a cancelled execution is returned as it is (nil error), one
// that ended otherwise with ErrAlreadyFinished.
//
// A queued execution is ended cancelled at once by CAS, so its driver's
// claim fails and it never starts. For a running one the request is first
// written into the record (by CAS: recovery then never re-runs it, even
// if its driver dies), then the driving node is signalled, locally or by
// MethodCancel; it kills the process group and writes the cancelled
// record, which Cancel waits for (up to cancelWait, within ctx). If the
// driver cannot be reached the running record with the request is
// returned: the driver or, if it is gone, recovery ends it.
func (d *Dispatcher) Cancel(ctx context.Context, cluster, id string) (Execution, error) {
	for try := 0; ; try++ {
		ex, err := d.Get(ctx, cluster, id)
		if err != nil {
			return ex, err
		}
		switch {
		case ex.Status == StatusCancelled:
			return ex, nil
		case ex.Status.Terminal():
			return ex, fmt.Errorf("%w: execution %s is %s", ErrAlreadyFinished, id, ex.Status)
		case try >= 20:
			return ex, fmt.Errorf("cancel %s: %w (the record kept changing)", id, ErrConflict)
		}
		base := ex.Version
		if ex.CancelRequestedAt.IsZero() {
			ex.CancelRequestedAt, ex.CancelRequestedBy, ex.CancelBase = d.now(), d.local, base
		}
		if ex.Status == StatusQueued {
			// Nothing runs (also a run released with the request
			// recorded): end it here. The driver's claim, a CAS on the
			// queued version, then fails.
			cur, err := d.finish(&ex, base, StatusCancelled, nil, "cancelled on request before it started")
			if err != nil {
				return cur, fmt.Errorf("cancel %s: %w", id, err)
			}
			if cur.Status == StatusCancelled {
				d.log.Info().Str("exec", id).Msg("queued execution cancelled")
			}
			continue // re-read: it is cancelled, or it started meanwhile
		}
		if ex.CancelBase == base { // the request is ours, not yet written
			if _, err := d.put(&ex, base); errors.Is(err, ErrConflict) {
				continue
			} else if err != nil {
				return ex, fmt.Errorf("cancel %s: %w", id, err)
			}
		}
		d.signalCancel(ctx, &ex)
		wctx, cancel := context.WithTimeout(ctx, cancelWait)
		cur, err := d.waitTerminal(wctx, cluster, id)
		cancel()
		switch {
		case err == nil && cur.Status == StatusCancelled:
			return cur, nil
		case err == nil:
			return cur, fmt.Errorf("%w: execution %s ended %s before the cancel took effect",
				ErrAlreadyFinished, id, cur.Status)
		case ctx.Err() != nil:
			return cur, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// Recorded; the driver (or recovery) ends it.
			return cur, nil
		}
		return cur, err
	}
}

// signalCancel tells the node driving ex to stop it. A failure is only
// logged: the request is in the record, and the driver's next write or the
// recovery of an abandoned execution acts on it.
func (d *Dispatcher) signalCancel(ctx context.Context, ex *Execution) {
	log := d.log.With().Str("exec", ex.ID).Str("owner", ex.Owner).Logger()
	switch {
	case ex.Owner == "":
		return // released: recovery ends it
	case ex.Owner == d.local:
		if lv := d.getLive(ex.ID); lv != nil {
			lv.requestCancel()
		}
		return
	case d.rpc == nil:
		log.Warn().Msg("no transport to signal the cancel; left to recovery")
		return
	}
	m, ok := d.runners.Lookup(ex.Owner)
	if !ok || m.RPCAddr == "" || m.Status != MemberAlive {
		log.Info().Msg("driving node is not alive; recovery ends the cancelled execution")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	if _, err := d.rpc.Call(cctx, m.RPCAddr, MethodCancel, []byte(ex.ID)); err != nil {
		log.Warn().Err(err).Msg("could not signal the cancel to the driving node")
	}
}

// serveCancel is the driving node's side of MethodCancel. Only a member of
// the mesh (known to gossip, not failed or left) may stop an execution:
// the transport's certificate check says the caller holds the mesh's CA,
// this says it is one of its nodes.
func (d *Dispatcher) serveCancel(_ context.Context, req *transport.Request) ([]byte, error) {
	m, ok := d.runners.Lookup(req.Peer)
	if !ok || m.Status == MemberFailed || m.Status == MemberLeft {
		d.log.Warn().Str("peer", req.Peer).Msg("cancel refused: the caller is not a member of the mesh")
		return nil, transport.Errorf(codeForbidden, "%q is not a member of the mesh", req.Peer)
	}
	id := string(req.Body)
	if !ValidID(id) {
		return nil, transport.Errorf(codeInvalid, "malformed execution ID")
	}
	lv := d.getLive(id)
	if lv == nil {
		return nil, transport.Errorf(codeNotLive, "this node does not drive execution %s", id)
	}
	d.log.Info().Str("exec", id).Str("peer", req.Peer).Msg("cancel requested")
	lv.requestCancel()
	return nil, nil
}

// requestCancel stops the drive of l: at once if it has bound its context,
// else as soon as it does.
func (l *liveExec) requestCancel() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancelReq = true
	if l.cancelFn != nil {
		l.cancelFn(errCancelRequested)
	}
}

// bindCancel gives l the function that stops its drive.
func (l *liveExec) bindCancel(fn context.CancelCauseFunc) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancelFn = fn
	if l.cancelReq {
		fn(errCancelRequested)
	}
}

// adoptCancel is called when a write of rec on version ver conflicted. If
// the only write since ver is Cancel's request, rec takes the request on
// and the version to write on is returned (ok); otherwise the execution
// was really taken over.
func (d *Dispatcher) adoptCancel(rec *Execution, ver uint64) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(d.ctx), d.cfg.StoreTimeout)
	defer cancel()
	cur, err := d.Get(ctx, rec.Cluster, rec.ID)
	if err != nil || cur.Status.Terminal() || cur.CancelRequestedAt.IsZero() || cur.CancelBase != ver {
		return 0, false
	}
	rec.CancelRequestedAt, rec.CancelRequestedBy, rec.CancelBase = cur.CancelRequestedAt, cur.CancelRequestedBy, cur.CancelBase
	return cur.Version, true
}
