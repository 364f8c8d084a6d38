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

// Wire protocol of MethodExec. The caller sends one request frame (JSON
// execWire) and closes its send side. The runner acknowledges at once with
// an empty tagAck frame (a runner that does not, within
// Config.AckTimeout, is taken for hung), then answers with output frames
// (tagOut/tagErr + raw bytes, capped like the capture) while the process
// runs, then one result frame (tagResult + JSON resultWire) and ends the
// stream. A busy runner fails the call with RemoteError code "busy" before
// sending anything. After the acknowledgement a runner checks the request
// against its own cluster's state (verify.go) and fails the call with
// code "refused", "service_changed" or "unverified" instead of running it.
//
// MethodWatch streams tagOut/tagErr frames too, and before the output of
// every attempt but the first a tagAttempt frame (tagAttempt + the attempt
// number in decimal): "attempt N started", the output after it is attempt
// N's from its first byte and what came before belongs to a lost attempt.
const (
	tagAck     byte = 'a'
	tagOut     byte = 'o'
	tagErr     byte = 'e'
	tagResult  byte = 'r'
	tagAttempt byte = 'n'

	codeBusy    = "busy"
	codeInvalid = "invalid"
	codeNotLive = "not_live" // MethodWatch: the callee does not drive it
)

type execWire struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	Service string `json:"service"`
	// Cluster and ServiceVersion name the definition the fields below come
	// from: the runner checks them against its own cluster's state
	// (verify.go). Empty and 0 (older callers): the runner's cluster, and
	// a fresh read.
	Cluster        string            `json:"cluster,omitempty"`
	ServiceVersion uint64            `json:"service_version,omitempty"`
	Command        []string          `json:"command"`
	Env            map[string]string `json:"env,omitempty"`
	Dir            string            `json:"dir,omitempty"`
	User           string            `json:"user,omitempty"`
	TimeoutMs      int64             `json:"timeout_ms"`
	Input          []byte            `json:"input,omitempty"`
	Source         *sourceWire       `json:"source,omitempty"`  // repository, path, kind (source.go)
	Secrets        []secretWire      `json:"secrets,omitempty"` // values for this attempt only
}

type resultWire struct {
	Status     string `json:"status"`
	ExitCode   int    `json:"exit_code"`
	Truncated  bool   `json:"truncated,omitempty"`
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
	Commit     string `json:"commit,omitempty"` // services from a repository
}

// serveExec is the runner side of MethodExec.
func (d *Dispatcher) serveExec(ctx context.Context, s *transport.Stream) error {
	b, err := s.Recv()
	if err != nil {
		return transport.Errorf(codeInvalid, "reading request: %v", err)
	}
	var req execWire
	if err := json.Unmarshal(b, &req); err != nil {
		return transport.Errorf(codeInvalid, "malformed exec request: %v", err)
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if len(req.Command) == 0 && req.Source == nil || timeout <= 0 || timeout > MaxTimeout {
		return transport.Errorf(codeInvalid, "exec request needs a command and a timeout in (0, %s]", MaxTimeout)
	}
	// A caller that stops reading must not hold the process or the
	// stream: each frame has OutputWriteTimeout to go, and the first that
	// does not cancels the execution.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var sendErr error
	send := func(tag byte, chunk []byte) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr != nil {
			return
		}
		f := make([]byte, 1+len(chunk))
		f[0] = tag
		copy(f[1:], chunk)
		_ = s.SetWriteDeadline(time.Now().Add(d.cfg.OutputWriteTimeout))
		if sendErr = s.Send(f); sendErr != nil {
			cancel()
		}
	}
	send(tagAck, nil)
	src, err := d.verifyExec(ctx, s.Peer(), &req)
	if err != nil {
		return err
	}
	res, err := d.execWithSource(ctx, src, runner.ExecRequest{
		Command:  req.Command,
		Env:      req.Env,
		Dir:      req.Dir,
		User:     req.User,
		Timeout:  timeout,
		Input:    req.Input,
		OnOutput: func(stream string, chunk []byte) { send(outTag(stream), chunk) },
		Secrets:  runnerSecrets(req.Secrets),
	})
	switch {
	case errors.Is(err, runner.ErrBusy):
		return transport.Errorf(codeBusy, "runner %s is at its concurrency limit", d.local)
	case errors.Is(err, runner.ErrClosed):
		return transport.Errorf(codeBusy, "runner %s is shutting down", d.local)
	case errors.Is(err, runner.ErrInvalid):
		return transport.Errorf(codeInvalid, "%v", err)
	case err != nil:
		mu.Lock()
		defer mu.Unlock()
		if sendErr != nil {
			d.log.Warn().Err(sendErr).Str("exec", req.ID).Str("caller", s.Peer()).
				Msg("caller stopped taking the output: execution cancelled")
			return fmt.Errorf("sending output: %w", sendErr)
		}
		return err // cancelled: the caller is gone
	}
	d.log.Debug().Str("exec", req.ID).Int("attempt", req.Attempt).Str("service", req.Service).
		Str("status", res.Status).Int("exit", res.ExitCode).Msg("executed")
	rb, _ := json.Marshal(resultWire{
		Status: res.Status, ExitCode: res.ExitCode, Truncated: res.Truncated,
		DurationMs: res.Duration.Milliseconds(), Error: res.Error, Commit: res.Commit,
	})
	send(tagResult, rb)
	mu.Lock()
	defer mu.Unlock()
	return sendErr
}

// outTag is the frame tag of an output stream (MethodExec, MethodWatch).
func outTag(stream string) byte {
	if stream == runner.Stderr {
		return tagErr
	}
	return tagOut
}

// outFrame parses an output frame: ok is false if f is not one.
func outFrame(f []byte) (stream string, chunk []byte, ok bool) {
	switch {
	case len(f) == 0:
		return "", nil, false
	case f[0] == tagOut:
		return runner.Stdout, f[1:], true
	case f[0] == tagErr:
		return runner.Stderr, f[1:], true
	}
	return "", nil, false
}

// watchFrame parses a MethodWatch frame: output, or an attempt marker as
// (StreamAttempt, decimal number). ok is false if f is neither.
func watchFrame(f []byte) (stream string, chunk []byte, ok bool) {
	if len(f) > 0 && f[0] == tagAttempt {
		if _, ok := parseAttempt(f[1:]); !ok {
			return "", nil, false
		}
		return StreamAttempt, f[1:], true
	}
	return outFrame(f)
}

// parseAttempt reads an attempt marker's number (1 to 1e6, decimal).
func parseAttempt(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 7 {
		return 0, false
	}
	n, err := strconv.Atoi(string(b))
	return n, err == nil && n >= 1 && n <= 1_000_000
}

// attemptError classifies a failed attempt.
type attemptError struct {
	kind string // "unreachable", "deadline", "busy", "invalid", "canceled"
	err  error
}

func (e *attemptError) Error() string { return e.kind + ": " + e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// callExec runs one attempt on r (locally when r is this node) and returns
// the runner's result with the captured output.
func (d *Dispatcher) callExec(ctx context.Context, r Runner, req execWire, onOut func(string, []byte)) (runner.ExecResult, error) {
	d.acquireRunner(r.Name)
	defer d.releaseRunner(r.Name)
	if r.Name == d.local && d.exec != nil {
		return d.execLocal(ctx, req, onOut)
	}
	if d.rpc == nil {
		return runner.ExecResult{}, &attemptError{"unreachable", fmt.Errorf("no transport to reach runner %s", r.Name)}
	}
	// A runner that does not acknowledge within AckTimeout is hung
	// (SIGSTOPped, wedged, cut off with its connection still open): give
	// up on it now rather than at the attempt deadline.
	ctx, cancelAck := context.WithCancelCause(ctx)
	defer cancelAck(nil)
	ackTimer := time.AfterFunc(d.cfg.AckTimeout, func() { cancelAck(errAckTimeout) })
	defer ackTimer.Stop()
	s, err := d.rpc.Stream(ctx, r.RPCAddr, MethodExec)
	if err != nil {
		return runner.ExecResult{}, d.classify(ctx, r, err)
	}
	defer s.Close()
	body, _ := json.Marshal(req)
	err = s.Send(body)
	if err == nil {
		err = s.CloseSend()
	}
	if err != nil {
		return runner.ExecResult{}, d.classify(ctx, r, refusalOr(s, err))
	}
	acked := false
	capOut := d.exec0MaxOutput()
	var stdout, stderr []byte
	var truncated bool
	for {
		f, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return runner.ExecResult{}, d.classify(ctx, r,
				fmt.Errorf("%w: runner %s ended the stream without a result", transport.ErrUnreachable, r.Name))
		}
		if err != nil {
			return runner.ExecResult{}, d.classify(ctx, r, err)
		}
		if !acked {
			acked = true
			ackTimer.Stop()
		}
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case tagAck:
		case tagOut, tagErr:
			stream, chunk, _ := outFrame(f)
			buf := &stdout
			if stream == runner.Stderr {
				buf = &stderr
			}
			// Bound what a misbehaving peer can make us hold.
			if room := capOut - len(*buf); room < len(chunk) {
				chunk = chunk[:max(room, 0)]
				truncated = true
			}
			*buf = append(*buf, chunk...)
			if onOut != nil && len(chunk) > 0 {
				onOut(stream, chunk)
			}
		case tagResult:
			var rw resultWire
			if err := json.Unmarshal(f[1:], &rw); err != nil {
				return runner.ExecResult{}, &attemptError{"invalid", fmt.Errorf("runner %s sent a malformed result: %v", r.Name, err)}
			}
			switch rw.Status {
			case runner.Succeeded, runner.Failed, runner.TimedOut:
			default:
				return runner.ExecResult{}, &attemptError{"invalid", fmt.Errorf("runner %s sent unknown status %q", r.Name, rw.Status)}
			}
			d.clearPenalty(r.Name)
			return runner.ExecResult{
				Status: rw.Status, ExitCode: rw.ExitCode, Stdout: stdout, Stderr: stderr,
				Truncated: rw.Truncated || truncated, Duration: time.Duration(rw.DurationMs) * time.Millisecond,
				Error: rw.Error, Commit: rw.Commit,
			}, nil
		}
	}
}

// exec0MaxOutput is the per-stream cap on output accepted from a runner:
// the runner's own cap plus its marker (a remote runner's cap is not known;
// assume the default).
func (d *Dispatcher) exec0MaxOutput() int {
	n := runner.DefaultConfig().MaxOutput
	if d.exec != nil {
		n = d.exec.Config().MaxOutput
	}
	return n + len(runner.TruncationMarker)
}

func (d *Dispatcher) execLocal(ctx context.Context, req execWire, onOut func(string, []byte)) (runner.ExecResult, error) {
	res, err := d.execWithSource(ctx, req.Source, runner.ExecRequest{
		Command:  req.Command,
		Env:      req.Env,
		Dir:      req.Dir,
		User:     req.User,
		Timeout:  time.Duration(req.TimeoutMs) * time.Millisecond,
		Input:    req.Input,
		OnOutput: onOut,
		Secrets:  runnerSecrets(req.Secrets),
	})
	switch {
	case errors.Is(err, runner.ErrBusy), errors.Is(err, runner.ErrClosed):
		return res, &attemptError{"busy", err}
	case errors.Is(err, runner.ErrInvalid):
		return res, &attemptError{"invalid", err}
	case err != nil:
		if ctx.Err() != nil && errors.Is(context.Cause(ctx), errAttemptDeadline) {
			return res, &attemptError{"deadline", err}
		}
		return res, &attemptError{"canceled", err}
	}
	return res, nil
}

var (
	errAttemptDeadline = errors.New("attempt deadline")
	errAckTimeout      = errors.New("no acknowledgement")
)

// refusalOr is what a runner answered before it read the request, when
// sending it failed: a refusal (forbidden, busy, no handler) comes back
// with the runner's end of the stream, which can reset this side's send
// before the request is written. Any other answer leaves sendErr.
func refusalOr(s *transport.Stream, sendErr error) error {
	if !errors.Is(sendErr, transport.ErrUnreachable) {
		return sendErr // not the peer's doing (a frame too large): no answer to wait for
	}
	if _, err := s.Recv(); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return err
		}
	}
	return sendErr
}

// classify turns a call error into an attemptError and updates the
// penalty box.
func (d *Dispatcher) classify(ctx context.Context, r Runner, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// The runner ran out of the deadline sent with the call, which
		// the transport sends a margin early so that a handler's own
		// answer comes back in time: wait the margin out, so that the
		// cause below is this node's deadline, whichever it was.
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < time.Second {
			<-ctx.Done() // a ctx with a deadline is done by then
		}
	}
	var re *transport.RemoteError
	switch {
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil &&
		errors.Is(context.Cause(ctx), errAttemptDeadline):
		d.penalize(r.Name)
		return &attemptError{"deadline", fmt.Errorf("runner %s did not answer within the attempt deadline: %w", r.Name, err)}
	case errors.As(err, &re) && re.Code == codeBusy:
		return &attemptError{"busy", err}
	case errors.As(err, &re) && re.Code == codeUnverified:
		// The runner could not read its cluster's state to check the
		// request (verify.go): another one may.
		return &attemptError{"busy", err}
	case errors.As(err, &re) && re.Code == transport.CodeNoHandler:
		// A member that advertises the runner role but serves no executor:
		// skip it like a busy one, and keep away from it for a while.
		d.penalize(r.Name)
		return &attemptError{"busy", fmt.Errorf("runner %s does not serve executions: %w", r.Name, err)}
	case errors.As(err, &re) && re.Code == transport.CodeForbidden:
		// The runner refused this node before running anything (its
		// gossip view does not know this node yet, or not as live):
		// another runner may take it.
		d.penalize(r.Name)
		return &attemptError{"busy", fmt.Errorf("runner %s refuses calls from this node: %w", r.Name, err)}
	case errors.As(err, &re):
		return &attemptError{"invalid", err}
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errAttemptDeadline):
		d.penalize(r.Name)
		return &attemptError{"deadline", fmt.Errorf("runner %s did not answer within the attempt deadline: %w", r.Name, err)}
	case ctx.Err() != nil && errors.Is(context.Cause(ctx), errAckTimeout):
		d.penalize(r.Name)
		return &attemptError{"deadline", fmt.Errorf("runner %s did not acknowledge the execution within %s (hung?)", r.Name, d.cfg.AckTimeout)}
	case ctx.Err() != nil:
		return &attemptError{"canceled", err}
	case errors.Is(err, transport.ErrUnreachable), errors.Is(err, transport.ErrClosed):
		d.penalize(r.Name)
		return &attemptError{"unreachable", err}
	default:
		// Anything else from the transport (reset stream, protocol error)
		// means the attempt's fate is unknown: treat it as a lost runner.
		d.penalize(r.Name)
		return &attemptError{"unreachable", err}
	}
}
