package runner

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Outcomes of an exec run, equal to dispatch's terminal statuses.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
	TimedOut  = "timed_out"
)

// Output stream names passed to OnOutput.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// ExecRequest describes one process to run.
type ExecRequest struct {
	// Command is the argv; no shell is involved unless argv names one.
	// A program name without '/' is looked up in the process's PATH.
	Command []string
	// Env is the complete environment of the process, plus PATH from
	// Config.DefaultPath when Env does not set it. Nothing of the runner's
	// own environment leaks in.
	Env map[string]string
	// Dir is the working directory (Config.DefaultDir if empty).
	Dir string
	// User is the user (name or numeric uid) to run as, with its primary
	// and supplementary groups (Config.DefaultUser if empty). It is looked
	// up at run time: a user this host does not have fails the run.
	User string
	// Timeout bounds the run; the process group is then SIGTERMed and,
	// after Config.KillGrace, SIGKILLed. Required.
	Timeout time.Duration
	// Input is written to the process's stdin, which is then closed.
	Input []byte
	// OnOutput, if set, receives output chunks as they arrive, up to the
	// capture cap, in the order they were captured, from one goroutine of
	// its own: the process's writes never wait for it, and the process's
	// slot is free once it is reaped, however slow OnOutput is. Exec
	// returns once OnOutput took every chunk (or ctx ended), so it must
	// itself be bounded (a write deadline): it holds the Exec call, not
	// the runner. Chunks are read-only and stay valid.
	OnOutput func(stream string, chunk []byte)
	// Secrets are handed to the process (environment or private files,
	// removed after the run) and redacted from its output.
	Secrets []Secret
}

// ExecResult is how a run ended.
type ExecResult struct {
	Status    string // Succeeded, Failed or TimedOut
	ExitCode  int    // process exit code; 128+signal if killed; -1 if it never started
	Stdout    []byte // capped at Config.MaxOutput (+ marker when truncated)
	Stderr    []byte
	Truncated bool
	Duration  time.Duration
	Error     string // why it failed, beyond a non-zero exit code
	Commit    string // the Git commit the program came from (set by dispatch)
}

// TruncationMarker is appended to a stream whose output hit the cap.
const TruncationMarker = "\n[meshgw: output truncated]\n"

// Exec runs req and waits for it. It returns ErrBusy at once if
// Config.MaxConcurrent processes are running. If ctx ends first the process
// group is killed and the result (partial output, Status Failed) comes back
// with ctx's error. A program that cannot be started is a Failed result,
// not an error.
func (e *Executor) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	if e.closed.Load() {
		return ExecResult{}, ErrClosed
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return ExecResult{}, fmt.Errorf("%w: empty command", ErrInvalid)
	}
	if req.Timeout <= 0 {
		return ExecResult{}, fmt.Errorf("%w: timeout must be positive", ErrInvalid)
	}
	if len(req.Input) > e.cfg.MaxInput {
		return ExecResult{}, fmt.Errorf("%w: input is %d bytes, more than %d", ErrInvalid, len(req.Input), e.cfg.MaxInput)
	}
	if e.execInFlight.Add(1) > e.execLimit.Load() {
		e.execInFlight.Add(-1)
		return ExecResult{}, ErrBusy
	}
	e.wg.Add(1)
	defer e.wg.Done()
	var pump *outputPump
	if req.OnOutput != nil {
		pump = newOutputPump(req.OnOutput)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			pump.run()
		}()
	}
	res, err := func() (ExecResult, error) {
		defer e.execInFlight.Add(-1) // the slot is the process's, not the consumer's
		return e.run(ctx, req, pump)
	}()
	if pump != nil {
		pump.drain(ctx)
	}
	return res, err
}

func (e *Executor) run(ctx context.Context, req ExecRequest, pump *outputPump) (ExecResult, error) {
	start := time.Now()
	env, pathEnv := e.buildEnv(req.Env)
	prog, err := lookPath(req.Command[0], pathEnv)
	if err != nil {
		return ExecResult{Status: Failed, ExitCode: -1, Duration: time.Since(start),
			Error: fmt.Sprintf("start %s: %v", req.Command[0], err)}, nil
	}
	dir := req.Dir
	if dir == "" {
		dir = e.cfg.DefaultDir
	}
	attr := &syscall.SysProcAttr{Setpgid: true}
	if name := cmp.Or(req.User, e.cfg.DefaultUser); name != "" {
		cred, err := lookupCredential(name)
		if err != nil {
			return ExecResult{Status: Failed, ExitCode: -1, Duration: time.Since(start),
				Error: fmt.Sprintf("run %s as user %q: %v", req.Command[0], name, err)}, nil
		}
		attr.Credential = cred
	}
	sec, err := prepareSecrets(req.Secrets, attr.Credential)
	defer sec.cleanup()
	if err != nil {
		return ExecResult{Status: Failed, ExitCode: -1, Duration: time.Since(start),
			Error: fmt.Sprintf("secrets of %s: %v", req.Command[0], err)}, nil
	}
	env = append(env, sec.env...)
	stdout := &capWriter{stream: Stdout, max: e.cfg.MaxOutput, pump: pump}
	stderr := &capWriter{stream: Stderr, max: e.cfg.MaxOutput, pump: pump}
	cmd := &exec.Cmd{
		Path:        prog,
		Args:        req.Command,
		Env:         env,
		Dir:         dir,
		Stdout:      sec.wrap(stdout),
		Stderr:      sec.wrap(stderr),
		SysProcAttr: attr,
		// After the process exits, output pipes held open by leftover
		// children are closed after this long instead of hanging Wait.
		WaitDelay: e.cfg.KillGrace,
	}
	if len(req.Input) > 0 {
		cmd.Stdin = bytes.NewReader(req.Input)
	}
	if err := cmd.Start(); err != nil {
		return ExecResult{Status: Failed, ExitCode: -1, Duration: time.Since(start),
			Error: fmt.Sprintf("start %s: %v", req.Command[0], err)}, nil
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	timer := time.NewTimer(req.Timeout)
	defer timer.Stop()
	var waitErr error
	var timedOut bool
	var ctxErr error
	select {
	case waitErr = <-done:
	case <-timer.C:
		timedOut = true
		waitErr = e.killGroup(pgid, done)
	case <-ctx.Done():
		ctxErr = ctx.Err()
		waitErr = e.killGroup(pgid, done)
	}
	// Whatever is left of the group (children that outlived the leader)
	// goes too: nothing a service starts survives its execution.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	sec.flush() // the output has ended: what the redactors held goes out

	res := ExecResult{
		Stdout:    stdout.bytes(),
		Stderr:    stderr.bytes(),
		Truncated: stdout.truncated || stderr.truncated,
		Duration:  time.Since(start),
	}
	res.ExitCode = exitCode(cmd.ProcessState)
	switch {
	case timedOut:
		res.Status = TimedOut
		res.Error = fmt.Sprintf("timed out after %s", req.Timeout)
	case ctxErr != nil:
		res.Status = Failed
		res.Error = fmt.Sprintf("canceled: %v", ctxErr)
		return res, ctxErr
	case res.ExitCode == 0 && waitErr == nil:
		res.Status = Succeeded
	case res.ExitCode == 0 && errors.Is(waitErr, exec.ErrWaitDelay):
		// Exited 0 but a child kept the output open; the output is
		// complete as far as the service is concerned.
		res.Status = Succeeded
	default:
		res.Status = Failed
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Error = fmt.Sprintf("killed by signal %v", ws.Signal())
		} else if res.ExitCode != 0 {
			res.Error = fmt.Sprintf("exit status %d", res.ExitCode)
		} else if waitErr != nil {
			res.Error = waitErr.Error()
		}
	}
	return res, nil
}

// killGroup sends SIGTERM to the process group, then SIGKILL after the
// grace, and returns Wait's result. The leader is not reaped before the
// signals are sent, so the group ID cannot have been reused.
func (e *Executor) killGroup(pgid int, done <-chan error) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(e.cfg.KillGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return <-done
}

func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// buildEnv returns the process environment: exactly the declared
// variables, plus PATH from the default when not declared.
func (e *Executor) buildEnv(decl map[string]string) (env []string, path string) {
	env = make([]string, 0, len(decl)+1)
	path, ok := decl["PATH"]
	if !ok {
		path = e.cfg.DefaultPath
		env = append(env, "PATH="+path)
	}
	for k, v := range decl {
		env = append(env, k+"="+v)
	}
	return env, path
}

// lookPath resolves name against the process's PATH (not the runner's).
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if err := executable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // relative PATH entries would depend on the cwd
		}
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q not found in PATH %q", name, path)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// capWriter captures up to max bytes, marks truncation, and forwards what it
// keeps to on. exec.Cmd writes to it from one goroutine per stream.
type capWriter struct {
	stream    string
	max       int
	pump      *outputPump // nil: no one streams the output
	mu        sync.Mutex
	buf       []byte
	truncated bool
}

var truncationMarker = []byte(TruncationMarker)

func (w *capWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	room := w.max - len(w.buf)
	keep := p
	if len(keep) > room {
		keep = keep[:max(room, 0)]
	}
	at := len(w.buf)
	w.buf = append(w.buf, keep...)
	// The pump gets the captured bytes, not p (the copier reuses it):
	// buf only grows, so the slice stays as it is.
	kept := w.buf[at:len(w.buf):len(w.buf)]
	var marker bool
	if len(keep) < len(p) && !w.truncated {
		w.truncated = true
		marker = true
	}
	if w.pump != nil {
		if len(kept) > 0 {
			w.pump.push(w.stream, kept)
		}
		if marker {
			w.pump.push(w.stream, truncationMarker)
		}
	}
	w.mu.Unlock()
	// Keep draining so the process never blocks on a full pipe.
	return len(p), nil
}

// outputPump hands captured output to OnOutput from a goroutine of its
// own, in capture order. What it queues is what the captures kept, so it
// holds at most MaxOutput (+ marker) per stream.
type outputPump struct {
	on     func(stream string, chunk []byte)
	mu     sync.Mutex
	queue  []pumped
	closed bool // no more chunks will come
	quit   bool // deliver nothing more
	wake   chan struct{}
	done   chan struct{}
}

type pumped struct {
	stream string
	chunk  []byte
}

func newOutputPump(on func(string, []byte)) *outputPump {
	return &outputPump{on: on, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (p *outputPump) push(stream string, chunk []byte) {
	p.mu.Lock()
	p.queue = append(p.queue, pumped{stream, chunk})
	p.mu.Unlock()
	p.poke()
}

func (p *outputPump) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *outputPump) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		q, closed, quit := p.queue, p.closed, p.quit
		p.queue = nil
		p.mu.Unlock()
		for _, c := range q {
			if p.quitting() {
				return
			}
			p.on(c.stream, c.chunk)
		}
		if quit || closed && len(q) == 0 {
			return
		}
		if len(q) == 0 {
			<-p.wake
		}
	}
}

func (p *outputPump) quitting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.quit
}

// drain waits until every chunk was delivered, or ctx ends: then nothing
// more is delivered, and the goroutine ends when the call in progress
// returns.
func (p *outputPump) drain(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.poke()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.mu.Lock()
		p.quit, p.queue = true, nil
		p.mu.Unlock()
		p.poke()
	}
}

func (w *capWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.buf
	if w.truncated {
		out = append(out[:len(out):len(out)], TruncationMarker...)
	}
	return out
}

// String forms of the outcome, for logs.
func (r ExecResult) String() string {
	return r.Status + " exit=" + strconv.Itoa(r.ExitCode)
}
