package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func newExec(t *testing.T, mod func(*Config)) *Executor {
	t.Helper()
	cfg := DefaultConfig()
	cfg.KillGrace = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	e, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.MaxConcurrent = 0
	if c.Validate() == nil {
		t.Fatal("MaxConcurrent 0 accepted")
	}
}

func TestExecSucceedsWithStdin(t *testing.T) {
	e := newExec(t, nil)
	in := []byte(`{"hello":"world"}`)
	res, err := e.Exec(context.Background(), ExecRequest{Command: []string{"cat"}, Timeout: 5 * time.Second, Input: in})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Succeeded || res.ExitCode != 0 || !bytes.Equal(res.Stdout, in) {
		t.Fatalf("got %+v stdout=%q", res, res.Stdout)
	}
}

func TestExecExitCodeAndStderr(t *testing.T) {
	e := newExec(t, nil)
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"sh", "-c", "echo oops >&2; exit 3"}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Failed || res.ExitCode != 3 || string(res.Stderr) != "oops\n" {
		t.Fatalf("got %+v stderr=%q", res, res.Stderr)
	}
}

func TestExecNotFound(t *testing.T) {
	e := newExec(t, nil)
	res, err := e.Exec(context.Background(), ExecRequest{Command: []string{"no-such-program-xyz"}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Failed || res.ExitCode != -1 || !strings.Contains(res.Error, "not found") {
		t.Fatalf("got %+v", res)
	}
}

func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	e := newExec(t, nil)
	var mu sync.Mutex
	var out bytes.Buffer
	start := time.Now()
	// The shell starts a child sleep in the background, prints its pid,
	// then sleeps itself: both must die.
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"sh", "-c", "sleep 60 & echo $!; sleep 60"},
		Timeout: time.Second,
		OnOutput: func(stream string, chunk []byte) {
			mu.Lock()
			out.Write(chunk)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	if res.Status != TimedOut {
		t.Fatalf("status %s, want timed_out (%+v)", res.Status, res)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("child pid: %q", res.Stdout)
	}
	mu.Lock()
	streamed := out.String()
	mu.Unlock()
	if streamed != string(res.Stdout) {
		t.Fatalf("streamed %q, captured %q", streamed, res.Stdout)
	}
	waitFor(t, 5*time.Second, "child sleep to be gone", func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	})
}

func TestExecContextCancelKills(t *testing.T) {
	e := newExec(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFor(t, 5*time.Second, "process running", func() bool { return e.InFlight() == 1 })
		cancel()
	}()
	start := time.Now()
	res, err := e.Exec(ctx, ExecRequest{Command: []string{"sleep", "60"}, Timeout: time.Minute})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want canceled", err)
	}
	if res.Status != Failed || time.Since(start) > 10*time.Second {
		t.Fatalf("got %+v after %v", res, time.Since(start))
	}
}

func TestExecEnvNotLeaked(t *testing.T) {
	t.Setenv("MESHGW_TEST_SECRET", "leak")
	e := newExec(t, nil)
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"env"}, Env: map[string]string{"FOO": "bar"}, Timeout: 5 * time.Second})
	if err != nil || res.Status != Succeeded {
		t.Fatalf("%v %+v", err, res)
	}
	lines := strings.Split(strings.TrimSpace(string(res.Stdout)), "\n")
	got := map[string]bool{}
	for _, l := range lines {
		got[l] = true
	}
	want := map[string]bool{"FOO=bar": true, "PATH=" + DefaultConfig().DefaultPath: true}
	if len(got) != len(want) {
		t.Fatalf("environment %q, want exactly %v", lines, want)
	}
	for k := range want {
		if !got[k] {
			t.Fatalf("environment %q lacks %s", lines, k)
		}
	}
}

func TestExecDeclaredPathAndDir(t *testing.T) {
	e := newExec(t, nil)
	dir := t.TempDir()
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"pwd"}, Env: map[string]string{"PATH": "/bin:/usr/bin"}, Dir: dir, Timeout: 5 * time.Second})
	if err != nil || res.Status != Succeeded || strings.TrimSpace(string(res.Stdout)) != dir {
		t.Fatalf("%v %+v %q", err, res, res.Stdout)
	}
	res, _ = e.Exec(context.Background(), ExecRequest{
		Command: []string{"cat"}, Env: map[string]string{"PATH": "/nonexistent"}, Timeout: 5 * time.Second})
	if res.Status != Failed || res.ExitCode != -1 {
		t.Fatalf("PATH from the service not honoured: %+v", res)
	}
}

func TestExecOutputCap(t *testing.T) {
	e := newExec(t, func(c *Config) { c.MaxOutput = 1000 })
	var streamed int
	var mu sync.Mutex
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"head", "-c", "500000", "/dev/zero"}, Timeout: 5 * time.Second,
		OnOutput: func(_ string, c []byte) { mu.Lock(); streamed += len(c); mu.Unlock() },
	})
	if err != nil || res.Status != Succeeded {
		t.Fatalf("%v %+v", err, res)
	}
	if !res.Truncated || len(res.Stdout) != 1000+len(TruncationMarker) ||
		!strings.HasSuffix(string(res.Stdout), TruncationMarker) {
		t.Fatalf("truncated=%v len=%d", res.Truncated, len(res.Stdout))
	}
	if streamed != 1000+len(TruncationMarker) {
		t.Fatalf("streamed %d bytes", streamed)
	}
}

func TestExecStreamsWhileRunning(t *testing.T) {
	e := newExec(t, nil)
	first := make(chan string, 4)
	release := make(chan struct{})
	var once sync.Once
	done := make(chan ExecResult, 1)
	go func() {
		// The first chunk must reach the callback while the process
		// still sleeps.
		res, _ := e.Exec(context.Background(), ExecRequest{
			Command: []string{"sh", "-c", "echo first; sleep 2; echo second"},
			Timeout: 10 * time.Second,
			OnOutput: func(_ string, c []byte) {
				once.Do(func() { first <- string(c); close(release) })
			},
		})
		done <- res
	}()
	select {
	case c := <-first:
		if c != "first\n" {
			t.Fatalf("first chunk %q", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no chunk while running")
	}
	select {
	case <-done:
		t.Fatal("process finished before the first chunk was handled: not streaming")
	default:
	}
	res := <-done
	if string(res.Stdout) != "first\nsecond\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}

func TestExecConcurrencyCap(t *testing.T) {
	e := newExec(t, func(c *Config) { c.MaxConcurrent = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = e.Exec(ctx, ExecRequest{Command: []string{"sleep", "60"}, Timeout: time.Minute})
	}()
	waitFor(t, 5*time.Second, "first process", func() bool { return e.InFlight() == 1 })
	if _, err := e.Exec(context.Background(), ExecRequest{Command: []string{"true"}, Timeout: time.Second}); !errors.Is(err, ErrBusy) {
		t.Fatalf("err %v, want ErrBusy", err)
	}
	cancel()
	<-done
	if res, err := e.Exec(context.Background(), ExecRequest{Command: []string{"true"}, Timeout: 5 * time.Second}); err != nil || res.Status != Succeeded {
		t.Fatalf("after release: %v %+v", err, res)
	}
}

// --- HTTP proxy ---

func TestProxyPreservesRequestAndResponse(t *testing.T) {
	type seen struct {
		method, path, query, xff, hop, custom string
		body                                  []byte
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Hop"), r.Header.Get("X-Custom"), b}
		w.Header().Set("X-Reply", "yes")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("done"))
	}))
	defer up.Close()
	e := newExec(t, nil)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.ServeProxy(w, r, up.URL+"/base", strings.TrimPrefix(r.URL.Path, "/svc")); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	}))
	defer front.Close()

	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	req, _ := http.NewRequest(http.MethodPut, front.URL+"/svc/x/y?a=1&b=2", bytes.NewReader(body))
	req.Header.Set("X-Custom", "v")
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "drop me")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Reply") != "yes" || string(rb) != "done" {
		t.Fatalf("response %d %v %q", resp.StatusCode, resp.Header, rb)
	}
	s := <-got
	if s.method != http.MethodPut || s.path != "/base/x/y" || s.query != "a=1&b=2" || s.custom != "v" {
		t.Fatalf("upstream saw %+v", s)
	}
	if s.hop != "" {
		t.Fatalf("hop-by-hop header forwarded: %q", s.hop)
	}
	if s.xff != "10.1.2.3, 127.0.0.1" {
		t.Fatalf("X-Forwarded-For %q", s.xff)
	}
	if !bytes.Equal(s.body, body) {
		t.Fatalf("body: got %d bytes, want %d", len(s.body), len(body))
	}
}

func TestProxyStreamsResponse(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("chunk1\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte("chunk2\n"))
	}))
	defer up.Close()
	e := newExec(t, nil)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = e.ServeProxy(w, r, up.URL, r.URL.Path)
	}))
	defer front.Close()
	resp, err := http.Get(front.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "chunk1\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	close(release) // the first chunk arrived before the upstream finished
	rest, _ := io.ReadAll(br)
	if string(rest) != "chunk2\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestProxyUpstreamDown(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	addr := up.URL
	up.Close()
	e := newExec(t, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	if err := e.ServeProxy(rec, req, addr, "/x"); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "upstream_unreachable") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
}

func TestProxyBounds(t *testing.T) {
	e := newExec(t, func(c *Config) { c.MaxHeaderBytes = 1024; c.MaxConcurrentHTTP = 1 })
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2000))
	if err := e.ServeProxy(httptest.NewRecorder(), req, "http://127.0.0.1:1", "/x"); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("err %v", err)
	}
	if err := e.ServeProxy(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "ftp://x", "/"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	}
}

func TestExecBackgroundChildDoesNotOutliveRun(t *testing.T) {
	e := newExec(t, nil)
	start := time.Now()
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"sh", "-c", "sleep 60 & echo $!"}, Timeout: 30 * time.Second})
	if err != nil || res.Status != Succeeded {
		t.Fatalf("%v %+v", err, res)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v", el)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("pid %q", res.Stdout)
	}
	waitFor(t, 5*time.Second, "background child to be gone", func() bool {
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	})
}

// BenchmarkExecTrue measures the executor alone: spawn `true`, wait, capture.
func BenchmarkExecTrue(b *testing.B) {
	e, err := New(DefaultConfig(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := e.Exec(context.Background(), ExecRequest{Command: []string{"true"}, Timeout: 10 * time.Second})
			if err != nil || res.Status != Succeeded {
				b.Errorf("%v %+v", err, res)
				return
			}
		}
	})
}

// TestStalledOutputConsumerHoldsNoSlot: an OnOutput that stops returning
// (a client that stopped reading) neither blocks the process's writes nor
// keeps its slot once it is reaped; Exec returns when the consumer takes
// the rest, every captured byte delivered in order.
func TestStalledOutputConsumerHoldsNoSlot(t *testing.T) {
	e := newExec(t, func(c *Config) { c.MaxConcurrent = 1 })
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before e.Close, which waits for Exec, if the test fails early
	var mu sync.Mutex
	var streamed []byte
	type result struct {
		res ExecResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := e.Exec(context.Background(), ExecRequest{
			// Far more than a pipe holds, then a sleep past the timeout.
			Command: []string{"sh", "-c", "head -c 300000 /dev/zero; echo end; sleep 30"},
			Timeout: time.Second,
			OnOutput: func(_ string, c []byte) {
				<-release
				mu.Lock()
				streamed = append(streamed, c...)
				mu.Unlock()
			},
		})
		done <- result{res, err}
	}()
	waitFor(t, 5*time.Second, "the process to start", func() bool { return e.InFlight() == 1 })
	// Timeout 1 s + KillGrace 0.2 s, with room for a loaded machine.
	waitFor(t, 5*time.Second, "the slot to free while the consumer is stalled", func() bool { return e.InFlight() == 0 })
	if r, err := e.Exec(context.Background(), ExecRequest{Command: []string{"true"}, Timeout: 5 * time.Second}); err != nil || r.Status != Succeeded {
		t.Fatalf("the next run on the one slot: %v %+v", err, r)
	}
	select {
	case r := <-done:
		t.Fatalf("Exec returned before its consumer took the output: %+v", r.res.Status)
	default:
	}
	unblock()
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Exec did not return once the consumer took the output")
	}
	if r.err != nil || r.res.Status != TimedOut {
		t.Fatalf("%v %+v", r.err, r.res.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(r.res.Stdout) != 300004 || string(streamed) != string(r.res.Stdout) {
		t.Fatalf("streamed %d bytes, captured %d; want the same 300004", len(streamed), len(r.res.Stdout))
	}
}
