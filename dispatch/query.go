package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
)

// Get returns an execution record. An unknown or malformed ID is ErrNotFound.
func (d *Dispatcher) Get(ctx context.Context, cluster, id string) (Execution, error) {
	if !ValidID(id) {
		return Execution{}, fmt.Errorf("execution %q: %w", id, ErrNotFound)
	}
	b, ver, found, err := d.store.Get(ctx, cluster, ExecKey(id))
	if err != nil {
		return Execution{}, fmt.Errorf("read execution %s: %w", id, err)
	}
	if !found {
		return Execution{}, fmt.Errorf("execution %s: %w", id, ErrNotFound)
	}
	return decodeExec(b, ver)
}

func decodeExec(b []byte, ver uint64) (Execution, error) {
	var ex Execution
	if err := json.Unmarshal(b, &ex); err != nil {
		return Execution{}, fmt.Errorf("decode execution record: %w", err)
	}
	ex.Version = ver
	return ex, nil
}

// ListFilter selects executions. Empty fields match everything.
type ListFilter struct {
	Service string
	Status  Status
	// Limit bounds the answer: default 100, at most 1000 (fewer when the
	// records take more than MaxRecordSize together).
	Limit int
	// Before pages: only executions older than this ID.
	Before string
}

// List returns executions of cluster, newest first.
func (d *Dispatcher) List(ctx context.Context, cluster string, f ListFilter) ([]Execution, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	match := map[string]string{}
	if f.Service != "" {
		match["service"] = f.Service
	}
	if f.Status != "" {
		match["status"] = string(f.Status)
	}
	// A short page is still an answer: the caller pages on with Before.
	listBytes, _ := d.cfg.pageBytes()
	opts := ListOptions{Limit: limit, Reverse: true, Match: match, MaxBytes: listBytes}
	if f.Before != "" {
		opts.After = ExecKey(f.Before)
	}
	entries, err := d.store.List(ctx, cluster, "exec/", opts)
	if err != nil {
		return nil, fmt.Errorf("list executions: %w", err)
	}
	out := make([]Execution, 0, len(entries))
	for _, e := range entries {
		ex, err := decodeExec(e.Value, e.Version)
		if err != nil {
			d.log.Warn().Err(err).Str("key", e.Key).Msg("skipping undecodable execution record")
			continue
		}
		out = append(out, ex)
	}
	return out, nil
}

// StreamAttempt is the pseudo-stream of an attempt marker passed to
// Watch's and RunOptions.OnOutput's callbacks: chunk is the attempt number
// in decimal, and the output that follows is that attempt's from its first
// byte; what came before it belongs to a lost attempt. A marker precedes
// the output of every attempt but the first (so a run that is not retried
// has none).
const StreamAttempt = "attempt"

// Watch follows an execution until it is terminal, passing its output to
// fn (from one goroutine), and returns the terminal record. When this node
// dispatches the execution the output arrives live, as the runner streams
// it; when another node does, live from that node (and from the next one,
// if a recovery moves it); otherwise the record is polled and its (capped)
// output delivered when it ends. An attempt marker (StreamAttempt) comes
// before a retry's output; after the last marker fn has seen the output
// of the record's final attempt.
func (d *Dispatcher) Watch(ctx context.Context, cluster, id string, fn func(stream string, chunk []byte)) (Execution, error) {
	ex, err := d.Get(ctx, cluster, id)
	if err != nil {
		return ex, err
	}
	if ex.Status.Terminal() {
		deliver(ex, fn)
		return ex, nil
	}
	var w watched
	track := func(stream string, chunk []byte) {
		w.note(stream, chunk)
		if fn != nil {
			fn(stream, chunk)
		}
	}
	t := time.NewTicker(d.cfg.WatchPoll)
	defer t.Stop()
	var followedLive *liveExec // this node's drive followed last
	followed := ""             // owner whose drive was followed last
	for !ex.Status.Terminal() {
		wait := true // false after a follow: its end may be the execution's
		if lv := d.getLive(id); lv != nil && lv != followedLive {
			followedLive, w.complete, wait = lv, false, false
			if err := lv.follow(ctx, track); err != nil {
				return ex, err
			}
			w.complete = true
		} else if ex.Owner != "" && ex.Owner != d.local && ex.Owner != followed && d.rpc != nil {
			// An error means that node cannot stream it (any more): the
			// record, or the next owner, carries on.
			followed, w.complete, wait = ex.Owner, false, false
			err := d.watchRemote(ctx, ex.Owner, id, track)
			if err != nil && ctx.Err() != nil {
				return ex, ctx.Err()
			}
			w.complete = err == nil
		}
		if wait {
			select {
			case <-ctx.Done():
				return ex, ctx.Err()
			case <-t.C:
			}
		}
		if ex, err = d.Get(ctx, cluster, id); err != nil {
			return ex, err
		}
	}
	// What the live stream did not carry (none of it when there was no
	// stream) comes from the record: the rest of the attempt streamed, or
	// all of the final one after its marker when another was streamed.
	rest := ex
	switch {
	case w.attempt != 0 && w.attempt != ex.Attempts && ex.Attempts > 0:
		if fn != nil {
			fn(StreamAttempt, []byte(strconv.Itoa(ex.Attempts)))
		}
	case w.complete:
		return ex, nil // the stream carried the final attempt to its end
	default:
		rest.Stdout, rest.Stderr = suffix(ex.Stdout, w.sent[0]), suffix(ex.Stderr, w.sent[1])
	}
	deliver(rest, fn)
	return ex, nil
}

// watched counts what a watcher was given of the attempt it saw last.
type watched struct {
	attempt  int    // 0: nothing yet; output before any marker is attempt 1's
	sent     [2]int // stdout, stderr bytes of that attempt
	complete bool   // the last drive followed ended and its stream with it
}

func (w *watched) note(stream string, chunk []byte) {
	switch {
	case stream == StreamAttempt:
		n, _ := parseAttempt(chunk)
		w.attempt, w.sent = n, [2]int{}
	case stream == runner.Stderr:
		w.attempt = max(w.attempt, 1)
		w.sent[1] += len(chunk)
	default:
		w.attempt = max(w.attempt, 1)
		w.sent[0] += len(chunk)
	}
}

func suffix(s string, from int) string {
	if from >= len(s) {
		return ""
	}
	return s[from:]
}

// watchRemote follows the live output of execution id on the node that
// drives it, until that node's drive ends. An error means the stream broke
// or the node does not drive it (any more): the caller reads the record.
func (d *Dispatcher) watchRemote(ctx context.Context, owner, id string, fn func(string, []byte)) error {
	m, ok := d.runners.Lookup(owner)
	if !ok || m.RPCAddr == "" || m.Status != MemberAlive {
		return fmt.Errorf("owner %s is not reachable", owner)
	}
	s, err := d.rpc.Stream(ctx, m.RPCAddr, MethodWatch)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Send([]byte(id)); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		f, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		stream, chunk, ok := watchFrame(f)
		if !ok {
			return fmt.Errorf("watch %s: malformed frame from %s", id, owner)
		}
		fn(stream, chunk)
	}
}

// serveWatch is the driving node's side of MethodWatch: the execution's
// live output as tagOut/tagErr frames, each retry's after a tagAttempt
// frame, until its drive here ends.
func (d *Dispatcher) serveWatch(ctx context.Context, s *transport.Stream) error {
	b, err := s.Recv()
	if err != nil {
		return transport.Errorf(codeInvalid, "reading request: %v", err)
	}
	lv := d.getLive(string(b))
	if lv == nil {
		return transport.Errorf(codeNotLive, "this node does not drive execution %q", b)
	}
	var sendErr error
	err = lv.follow(ctx, func(stream string, chunk []byte) {
		if sendErr != nil {
			return
		}
		if stream == StreamAttempt {
			sendErr = s.Send(append([]byte{tagAttempt}, chunk...))
			return
		}
		tag := outTag(stream)
		// Frames are bounded: split big chunks.
		for len(chunk) > 0 && sendErr == nil {
			n := min(len(chunk), watchChunk)
			sendErr = s.Send(append([]byte{tag}, chunk[:n]...))
			chunk = chunk[n:]
		}
	})
	if sendErr != nil {
		return sendErr
	}
	return err
}

const watchChunk = 32 << 10

func deliver(ex Execution, fn func(string, []byte)) {
	if fn == nil {
		return
	}
	if ex.Stdout != "" {
		fn(runner.Stdout, []byte(ex.Stdout))
	}
	if ex.Stderr != "" {
		fn(runner.Stderr, []byte(ex.Stderr))
	}
}

// liveExec buffers the output of an execution this node dispatches, for
// watchers: the current attempt's only (begin restarts it). Writers never
// block on watchers: watchers read by offset and wake on a channel closed
// at every write.
type liveExec struct {
	mu      sync.Mutex
	attempt int // the attempt whose output the buffers hold (0: none yet)
	stdout  []byte
	stderr  []byte
	max     int
	changed chan struct{}
	done    bool
	// cluster and service are fixed at addLive (for the Observer).
	cluster, service string
	// cancelReq: Cancel asked to stop the drive; cancelFn (bound by drive)
	// does it.
	cancelReq bool
	cancelFn  context.CancelCauseFunc
}

// begin starts attempt n: the buffers restart empty, so no watcher gets a
// lost attempt's output followed by the next one's as if it were one.
func (l *liveExec) begin(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.attempt == n {
		return
	}
	l.attempt = n
	// New arrays: followers may still read slices of the old ones.
	l.stdout, l.stderr = nil, nil
	close(l.changed)
	l.changed = make(chan struct{})
}

func newLiveExec(max int) *liveExec {
	return &liveExec{max: max, changed: make(chan struct{})}
}

func (l *liveExec) write(stream string, chunk []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf := &l.stdout
	if stream == runner.Stderr {
		buf = &l.stderr
	}
	room := l.max - len(*buf)
	if room <= 0 {
		return
	}
	*buf = append(*buf, chunk[:min(room, len(chunk))]...)
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *liveExec) finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.done = true
		close(l.changed)
	}
}

// follow delivers output until the execution's drive ends, with an
// attempt marker (StreamAttempt) before the output of any attempt but
// the first.
func (l *liveExec) follow(ctx context.Context, fn func(string, []byte)) error {
	var seen, offOut, offErr int
	for {
		l.mu.Lock()
		marker := 0
		if l.attempt != seen {
			if l.attempt > 1 {
				marker = l.attempt
			}
			seen, offOut, offErr = l.attempt, 0, 0
		}
		newOut := l.stdout[offOut:]
		newErr := l.stderr[offErr:]
		offOut, offErr = len(l.stdout), len(l.stderr)
		done := l.done
		ch := l.changed
		l.mu.Unlock()
		// The slices alias buffers only ever appended to (begin starts
		// new ones): safe to read.
		if fn != nil {
			if marker > 0 {
				fn(StreamAttempt, []byte(strconv.Itoa(marker)))
			}
			if len(newOut) > 0 {
				fn(runner.Stdout, newOut)
			}
			if len(newErr) > 0 {
				fn(runner.Stderr, newErr)
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// addLive registers id as driven by this node (recovery leaves it alone)
// and returns its output buffer, or nil if it is already registered.
func (d *Dispatcher) addLive(rec *Execution) *liveExec {
	id := rec.ID
	max := runner.DefaultConfig().MaxOutput
	if d.exec != nil {
		max = d.exec.Config().MaxOutput
	}
	lv := newLiveExec(max + len(runner.TruncationMarker))
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.live[id]; ok {
		return nil // someone on this node already drives it
	}
	d.live[id] = lv
	lv.cluster, lv.service = rec.Cluster, rec.Service
	d.observer().ExecDriving(rec.Cluster, rec.Service, 1)
	return lv
}

func (d *Dispatcher) removeLive(id string, lv *liveExec) {
	lv.finish()
	d.mu.Lock()
	if lv != nil && d.live[id] == lv {
		delete(d.live, id)
		d.observer().ExecDriving(lv.cluster, lv.service, -1)
	}
	d.mu.Unlock()
}

func (d *Dispatcher) getLive(id string) *liveExec {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live[id]
}

func (d *Dispatcher) isLive(id string) bool { return d.getLive(id) != nil }

// ctxTimeout is a helper for background store operations.
func (d *Dispatcher) ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
}
