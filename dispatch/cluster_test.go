package dispatch

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
	"github.com/rs/zerolog"
)

// In-process clusters: real QUIC transports on 127.0.0.1:0 with an
// ephemeral CA, a shared in-memory store and a settable membership view.

type tnode struct {
	name  string
	tr    *transport.Transport
	ex    *runner.Executor
	d     *Dispatcher
	store *nodeStore
}

// nodeStore is one node's handle on the shared store; a killed node's
// handle fails every call, as a dead process would make none.
type nodeStore struct {
	*memStore
	dead   atomic.Bool
	leader atomic.Bool // per node, unlike memStore's
}

func (n *nodeStore) err() error {
	if n.dead.Load() {
		return errUnavailable
	}
	return nil
}

func (n *nodeStore) Get(ctx context.Context, cluster, key string) ([]byte, uint64, bool, error) {
	if err := n.err(); err != nil {
		return nil, 0, false, err
	}
	return n.memStore.Get(ctx, cluster, key)
}

func (n *nodeStore) Put(ctx context.Context, cluster, key string, v []byte, cas *uint64) (uint64, error) {
	if err := n.err(); err != nil {
		return 0, err
	}
	return n.memStore.Put(ctx, cluster, key, v, cas)
}

func (n *nodeStore) PutMulti(ctx context.Context, cluster string, kvs []KV) ([]uint64, error) {
	if err := n.err(); err != nil {
		return nil, err
	}
	return n.memStore.PutMulti(ctx, cluster, kvs)
}

func (n *nodeStore) Delete(ctx context.Context, cluster, key string, cas *uint64) error {
	if err := n.err(); err != nil {
		return err
	}
	return n.memStore.Delete(ctx, cluster, key, cas)
}

func (n *nodeStore) DeleteMulti(ctx context.Context, cluster string, kvs []KV) error {
	if err := n.err(); err != nil {
		return err
	}
	return n.memStore.DeleteMulti(ctx, cluster, kvs)
}

func (n *nodeStore) List(ctx context.Context, cluster, prefix string, o ListOptions) ([]Entry, error) {
	if err := n.err(); err != nil {
		return nil, err
	}
	return n.memStore.List(ctx, cluster, prefix, o)
}

func (n *nodeStore) IsLeader(string) bool { return !n.dead.Load() && n.leader.Load() }

type tcluster struct {
	t       testing.TB
	tmod    func(*transport.Config) // changes the next transports' config
	dir     string
	store   *memStore
	runners *memRunners
	nodes   map[string]*tnode
}

func newTCluster(t testing.TB) *tcluster {
	return &tcluster{t: t, dir: t.TempDir(), store: newMemStore(), runners: newMemRunners(), nodes: map[string]*tnode{}}
}

func (c *tcluster) transport(name string) *transport.Transport {
	return c.transportWith(name, nil)
}

func (c *tcluster) transportWith(name string, authorize func(peer, method string) error) *transport.Transport {
	t := c.t
	t.Helper()
	caF, certF, keyF, err := tlsutil.EnsureDevFiles(c.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := tlsutil.LoadFiles(caF, certF, keyF)
	if err != nil {
		t.Fatal(err)
	}
	tc := transport.DefaultConfig()
	tc.BindAddr = "127.0.0.1:0"
	tc.TLS = tlsCfg
	tc.HandshakeTimeout = time.Second // a dial to a dead runner fails fast
	tc.Authorize = authorize
	if c.tmod != nil {
		c.tmod(&tc)
	}
	tr, err := transport.New(tc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// add starts a node; a runner node gets an executor and is listed as a live
// runner of testCluster.
func (c *tcluster) add(name string, isRunner bool, mod func(*Config)) *tnode {
	t := c.t
	t.Helper()
	tr := c.transport(name)
	var ex *runner.Executor
	roles := []string{"gateway"}
	if isRunner {
		ex = testExecutor(t)
		roles = append(roles, RoleRunner)
	}
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	ns := &nodeStore{memStore: c.store}
	d, err := New(cfg, c.runners, ns, tr, ex, name, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.Stop()
		_ = tr.Close()
	})
	c.runners.set(testCluster, Runner{Name: name, RPCAddr: tr.Addr().String(), Roles: roles})
	n := &tnode{name: name, tr: tr, ex: ex, d: d, store: ns}
	c.nodes[name] = n
	return n
}

// addHung adds a runner that accepts exec calls and never acknowledges or
// answers them, its connection open (a SIGSTOPped runner).
func (c *tcluster) addHung(name string) {
	tr := c.transport(name)
	tr.HandleStream(MethodExec, func(ctx context.Context, s *transport.Stream) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err := tr.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = tr.Close() })
	c.runners.set(testCluster, Runner{Name: name, RPCAddr: tr.Addr().String()})
}

// kill makes a node behave as if kill -9ed: no more store access, no
// transport, failed in gossip.
func (c *tcluster) kill(name string) {
	n := c.nodes[name]
	n.store.dead.Store(true)
	_ = n.tr.Close()
	c.runners.setStatus(name, MemberFailed)
}

// define writes svc into the cluster's state as a client's PUT does and
// returns it as a run reads it, with its version: a remote runner runs
// only what the state defines (verify.go).
func (c *tcluster) define(svc Service) Service {
	c.t.Helper()
	return defineIn(c.t, c.store, svc)
}

func defineIn(t testing.TB, s *memStore, svc Service) Service {
	t.Helper()
	svc.Version = 0
	b, err := json.Marshal(svc)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Version, err = s.Put(context.Background(), testCluster, ServiceKey(svc.Name), b, nil); err != nil {
		t.Fatal(err)
	}
	return svc
}

func (c *tcluster) record(id string) Execution {
	c.t.Helper()
	v, ver, found, err := c.store.Get(context.Background(), testCluster, ExecKey(id))
	if err != nil || !found {
		c.t.Fatalf("record %s: found=%v %v", id, found, err)
	}
	ex, err := decodeExec(v, ver)
	if err != nil {
		c.t.Fatal(err)
	}
	return ex
}

func threeRunners(t testing.TB) *tcluster {
	c := newTCluster(t)
	c.add("gw", false, nil)
	for _, n := range []string{"r1", "r2", "r3"} {
		c.add(n, true, nil)
	}
	return c
}

func TestClusterRoundRobinTouchesEveryRunner(t *testing.T) {
	c := threeRunners(t)
	gw := c.nodes["gw"]
	seen := map[string]int{}
	for i := 0; i < 6; i++ {
		ex, err := gw.d.Run(context.Background(), testCluster, c.define(execSvc("cat")), []byte(`"hi"`), RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ex.Status != StatusSucceeded || ex.Stdout != `"hi"` {
			t.Fatalf("%+v", ex)
		}
		seen[ex.Runner]++
	}
	if seen["r1"] != 2 || seen["r2"] != 2 || seen["r3"] != 2 {
		t.Fatalf("runs per runner %v", seen)
	}
}

// runAndKill starts a sync run through gw, waits until its output shows it
// running, closes the runner's transport and returns the final execution.
func runAndKill(t *testing.T, c *tcluster, retries int) (Execution, string) {
	ex, victim, _ := runAndKillLog(t, c, retries)
	return ex, victim
}

// runAndKillLog is runAndKill that also returns what OnOutput was given.
func runAndKillLog(t *testing.T, c *tcluster, retries int) (Execution, string, *watchLog) {
	gw := c.nodes["gw"]
	svc := execSvc("sh", "-c", "echo started; sleep 2; echo finished")
	svc.Retries = retries
	started := make(chan struct{})
	var once sync.Once
	type result struct {
		ex  Execution
		err error
	}
	done := make(chan result, 1)
	var l watchLog
	go func() {
		ex, err := gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{
			OnOutput: func(s string, c []byte) {
				l.fn(s, c)
				if strings.Contains(string(c), "started") {
					once.Do(func() { close(started) })
				}
			},
		})
		done <- result{ex, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("run never started")
	}
	es, err := gw.d.List(context.Background(), testCluster, ListFilter{Status: StatusRunning})
	if err != nil || len(es) != 1 {
		t.Fatalf("running: %v %+v", err, es)
	}
	victim := es[0].Runner
	_ = c.nodes[victim].tr.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.ex, victim, &l
}

func TestClusterRunnerKilledMidRunIsRetried(t *testing.T) {
	c := threeRunners(t)
	ex, victim, l := runAndKillLog(t, c, 2)
	if ex.Status != StatusSucceeded || ex.Attempts != 2 || ex.Runner == victim || ex.Stdout != "started\nfinished\n" {
		t.Fatalf("victim %s, got %+v", victim, ex)
	}
	// The synchronous stream marks the retry; after the marker comes the
	// answer's output, not the lost attempt's followed by it.
	if marker, after, all := l.afterLastMarker(); marker != "2" || after != ex.Stdout {
		t.Fatalf("streamed: marker %q, after it %q, all %q", marker, after, all)
	}
	rec := c.record(ex.ID)
	if rec.Attempts != 2 || len(rec.History) != 2 || rec.History[0].Runner != victim ||
		rec.History[0].Outcome != outcomeUnreachable || rec.History[1].Outcome != string(StatusSucceeded) {
		t.Fatalf("record %+v", rec)
	}
	// The victim is in the penalty box: the next runs avoid it.
	for i := 0; i < 3; i++ {
		ex, err := c.nodes["gw"].d.Run(context.Background(), testCluster, c.define(execSvc("true")), nil, RunOptions{})
		if err != nil || ex.Runner == victim || ex.Attempts != 1 {
			t.Fatalf("after kill: %v %+v", err, ex)
		}
	}
}

func TestClusterRunnerKilledNoRetriesIsLost(t *testing.T) {
	c := threeRunners(t)
	ex, victim := runAndKill(t, c, 0)
	if ex.Status != StatusLost || ex.Attempts != 1 || !strings.Contains(ex.Error, victim) ||
		!strings.Contains(ex.Error, "no retries left") {
		t.Fatalf("victim %s, got %+v", victim, ex)
	}
	if rec := c.record(ex.ID); rec.Status != StatusLost {
		t.Fatalf("record %+v", rec)
	}
}

func TestClusterHungRunnerHitsAttemptDeadline(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.addHung("a-hung")
	c.add("b-ok", true, nil)
	svc := execSvc("echo", "ok")
	svc.Timeout = Duration(300 * time.Millisecond)
	svc.Retries = 1
	// Round robin starts at a-hung (sorted by name).
	start := time.Now()
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusSucceeded || ex.Attempts != 2 || ex.Runner != "b-ok" || ex.History[0].Runner != "a-hung" {
		t.Fatalf("%+v", ex)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("took %v", el)
	}
}

// A hung runner is given up on at the acknowledgement timeout, not at the
// service timeout plus grace: a long service is re-run elsewhere at once.
func TestClusterHungRunnerGivenUpAtAckTimeout(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, func(cfg *Config) { cfg.AckTimeout = 300 * time.Millisecond })
	c.addHung("a-hung")
	c.add("b-ok", true, nil)
	svc := execSvc("echo", "ok")
	svc.Timeout = Duration(time.Minute)
	svc.Retries = 1
	start := time.Now()
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusSucceeded || ex.Runner != "b-ok" || ex.History[0].Runner != "a-hung" ||
		!strings.Contains(ex.History[0].Error, "acknowledge") {
		t.Fatalf("%+v", ex)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("took %v: the hung runner was not given up on at the ack timeout", el)
	}
	// A slow but live runner acknowledges at once and keeps its run.
	ex, err = gw.d.Run(context.Background(), testCluster, c.define(execSvc("sleep", "1")), nil, RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || ex.Attempts != 1 {
		t.Fatalf("slow run: %v %+v", err, ex)
	}
}

func TestClusterAsyncWatchFromDispatcher(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	svc := c.define(execSvc("sh", "-c", "echo one; sleep 0.3; echo two"))
	ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got strings.Builder
	final, err := gw.d.Watch(context.Background(), testCluster, ex.ID, func(_ string, c []byte) {
		mu.Lock()
		got.Write(c)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if final.Status != StatusSucceeded || got.String() != "one\ntwo\n" || final.Runner != "r1" {
		t.Fatalf("%+v watched %q", final, got.String())
	}
}

func TestClusterRecoveryRedispatchesWhenAcceptingNodeFails(t *testing.T) {
	c := newTCluster(t)
	// "acc" accepts an async run, then dies before finishing it.
	acc := c.add("acc", false, nil)
	c.add("r1", true, nil)
	leader := c.add("lead", false, nil)
	svc := execSvc("sh", "-c", "sleep 1; echo done")
	svc.Retries = 1
	ex, err := acc.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "running", func() bool { return c.record(ex.ID).Status == StatusRunning })
	// Kill acc: its stream to r1 breaks (the process there dies with it),
	// gossip declares it failed, it writes nothing more.
	c.kill("acc")
	leader.store.leader.Store(true)
	waitFor(t, 15*time.Second, "recovered run to finish", func() bool { return c.record(ex.ID).Status.Terminal() })
	got := c.record(ex.ID)
	if got.Status != StatusSucceeded || got.Owner != leader.name || got.Attempts != 2 ||
		got.History[0].Outcome != string(StatusLost) || got.Stdout != "done\n" {
		t.Fatalf("%+v", got)
	}
}

func TestClusterHTTPProxyThroughRunner(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			_, _ = w.Write([]byte("first\n"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			_, _ = w.Write([]byte("second\n"))
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Echo", r.Header.Get("X-Test"))
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.Header().Set("X-XFF", r.Header.Get("X-Forwarded-For"))
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write(b)
	}))
	defer up.Close()
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := gw.d.ProxyHTTP(w, r, testCluster, svc, strings.TrimPrefix(r.URL.Path, "/svc/web")); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	defer front.Close()

	body := bytes.Repeat([]byte("abcdefgh"), 128<<10) // 1 MiB
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/svc/web/upload?x=1", bytes.NewReader(body))
	req.Header.Set("X-Test", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || resp.Header.Get("X-Method") != "POST" || resp.Header.Get("X-Echo") != "yes" ||
		resp.Header.Get("X-Query") != "x=1" || !bytes.Equal(got, body) || !strings.HasPrefix(resp.Header.Get("X-XFF"), "127.0.0.1") {
		t.Fatalf("status %d headers %v body %d bytes", resp.StatusCode, resp.Header, len(got))
	}

	resp, err = http.Get(front.URL + "/svc/web/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	close(release) // the first chunk crossed gw ← r1 ← upstream before the upstream finished
	rest, _ := io.ReadAll(br)
	if string(rest) != "second\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestClusterHTTPProxyRetriesDeadRunner(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	dead := c.add("a-dead", true, nil)
	c.add("b-live", true, nil)
	_ = dead.tr.Close() // gossip still says alive
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	defer up.Close()
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/svc/web/", nil)
	if err := gw.d.ProxyHTTP(rec, req, testCluster, svc, "/"); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Body.String() != "ok" {
		t.Fatalf("%d %q", rec.Code, rec.Body.String())
	}
}

// BenchmarkDispatchExec measures sync runs of a trivial service through a
// dispatcher with the in-memory store: "remote" forwards to a runner over
// QUIC, "local" runs on the dispatching node. Reports runs/s and p50/p99.
func BenchmarkDispatchExec(b *testing.B) {
	for _, mode := range []string{"remote", "local"} {
		b.Run(mode, func(b *testing.B) {
			c := newTCluster(b)
			gw := c.add("gw", mode == "local", nil)
			if mode == "remote" {
				c.add("r1", true, nil)
			}
			svc := c.define(execSvc("true"))
			lat := make([]time.Duration, 0, b.N)
			var mu sync.Mutex
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t0 := time.Now()
					ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{})
					if err != nil || ex.Status != StatusSucceeded {
						b.Errorf("%v %+v", err, ex)
						return
					}
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
			el := time.Since(start)
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) > 0 {
				b.ReportMetric(float64(len(lat))/el.Seconds(), "runs/s")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
			}
		})
	}
}

// Watching from a node that does not drive the execution streams its
// output live from the node that does; the record fills in after.
func TestClusterWatchFromAnotherNodeStreamsLive(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	svc := c.define(execSvc("sh", "-c", "echo out; echo err >&2; sleep 1; echo more"))
	ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]string{}
	var statusAtFirst Status
	final, err := r1.d.Watch(context.Background(), testCluster, ex.ID, func(s string, b []byte) {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			statusAtFirst = c.record(ex.ID).Status
		}
		got[s] += string(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if final.Status != StatusSucceeded || got[runner.Stdout] != "out\nmore\n" || got[runner.Stderr] != "err\n" {
		t.Fatalf("%+v %q", final, got)
	}
	if statusAtFirst.Terminal() {
		t.Fatalf("the first output arrived only once the execution was %s: not live", statusAtFirst)
	}
}

// If the driving node cannot stream (gone from gossip), the watcher gets
// the output from the record once the execution ends, once.
func TestClusterWatchFallsBackToRecord(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	svc := c.define(execSvc("sh", "-c", "sleep 0.3; echo out"))
	ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	c.runners.setStatus("gw", MemberSuspect) // watchRemote will not try it
	var got strings.Builder
	final, err := r1.d.Watch(context.Background(), testCluster, ex.ID, func(_ string, b []byte) { got.Write(b) })
	if err != nil || final.Status != StatusSucceeded || got.String() != "out\n" {
		t.Fatalf("%v %+v %q", err, final, got.String())
	}
}

// A runner that refuses this node (its gossip view does not know it yet)
// ran nothing: the run goes to another runner instead of failing.
func TestClusterRunnerThatRefusesTheCallerIsSkipped(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	tr := c.transportWith("a-refusing", func(peer, method string) error {
		return fmt.Errorf("%s is not a member here", peer)
	})
	ex := testExecutor(t)
	d, err := New(testConfig(), c.runners, &nodeStore{memStore: c.store}, tr, ex, "a-refusing", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(); _ = tr.Close() })
	c.runners.set(testCluster, Runner{Name: "a-refusing", RPCAddr: tr.Addr().String(), Roles: []string{RoleRunner}})
	c.add("b-ok", true, nil)
	for i := 0; i < 3; i++ {
		got, err := gw.d.Run(context.Background(), testCluster, c.define(execSvc("true")), nil, RunOptions{})
		if err != nil || got.Status != StatusSucceeded || got.Runner != "b-ok" {
			t.Fatalf("run %d: %v %+v", i, err, got)
		}
	}
}

func TestClusterRunnerWithoutExecutorIsSkipped(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	bad := c.add("a-noexec", false, nil)
	c.runners.set(testCluster, Runner{Name: bad.name, RPCAddr: bad.tr.Addr().String()}) // claims the runner role
	c.add("b-ok", true, nil)
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(execSvc("true")), nil, RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || ex.Runner != "b-ok" {
		t.Fatalf("%v %+v", err, ex)
	}
}

// BenchmarkProxyHTTP measures GETs of a small upstream response proxied
// client → gateway (httptest server) → QUIC → runner → upstream.
func BenchmarkProxyHTTP(b *testing.B) {
	c := newTCluster(b)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello"))
	}))
	defer up.Close()
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := gw.d.ProxyHTTP(w, r, testCluster, svc, "/"); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			resp, err := client.Get(front.URL + "/")
			if err != nil {
				b.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d: %s", resp.StatusCode, body)
				return
			}
			d := time.Since(t0)
			mu.Lock()
			lat = append(lat, d)
			mu.Unlock()
		}
	})
	el := time.Since(start)
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(len(lat))/el.Seconds(), "req/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	}
}

func TestClusterHTTPProxyRunnerDiesMidResponse(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("part\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer up.Close()
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	errs := make(chan error, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		errs <- gw.d.ProxyHTTP(w, r, testCluster, svc, "/")
	}))
	defer front.Close()
	resp, err := http.Get(front.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "part\n" {
		t.Fatalf("%q %v", line, err)
	}
	_ = r1.tr.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, ErrProxyAborted) {
			t.Fatalf("err %v, want ErrProxyAborted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("proxy did not notice the dead runner")
	}
}

// eatingCluster has a gateway and two runners: "a-eats" (first in round
// robin) reads a whole request body, then dies without answering; "b-ok"
// proxies to an echo upstream. hits counts upstream requests.
func eatingCluster(t *testing.T) (gw *tnode, svc Service, hits *atomic.Int64) {
	c := newTCluster(t)
	gw = c.add("gw", false, nil)
	tr := c.transport("a-eats")
	tr.HandleStream(MethodHTTP, func(ctx context.Context, s *transport.Stream) error {
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		go func() { _ = tr.Close() }()
		<-ctx.Done()
		return ctx.Err()
	})
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	c.runners.set(testCluster, Runner{Name: "a-eats", RPCAddr: tr.Addr().String()})
	c.add("b-ok", true, nil)
	hits = &atomic.Int64{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	t.Cleanup(up.Close)
	return gw, c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL}), hits
}

func TestClusterHTTPProxyReplaysIdempotentBody(t *testing.T) {
	gw, svc, hits := eatingCluster(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPut, "/svc/web/", strings.NewReader("payload"))
	if err := gw.d.ProxyHTTP(rec, req, testCluster, svc, "/"); err != nil || rec.Body.String() != "payload" {
		t.Fatalf("%v %q", err, rec.Body.String())
	}
	if hits.Load() != 1 {
		t.Fatalf("upstream hit %d times", hits.Load())
	}
}

func TestClusterHTTPProxyDoesNotResendConsumedPost(t *testing.T) {
	gw, svc, hits := eatingCluster(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/svc/web/", strings.NewReader("payload"))
	err := gw.d.ProxyHTTP(rec, req, testCluster, svc, "/")
	if !errors.Is(err, transport.ErrUnreachable) {
		t.Fatalf("err %v, want the runner loss", err)
	}
	if hits.Load() != 0 || rec.Body.Len() != 0 {
		t.Fatalf("POST resent: %d hits, body %q", hits.Load(), rec.Body.String())
	}
}

// watchLog records what a Watch callback is given, in order.
type watchLog struct {
	mu     sync.Mutex
	events []watchEvent
}

type watchEvent struct{ stream, data string }

func (w *watchLog) fn(stream string, chunk []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, watchEvent{stream, string(chunk)})
}

func (w *watchLog) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if strings.Contains(e.data, s) {
			return true
		}
	}
	return false
}

// afterLastMarker returns the last attempt marker's number, the stdout
// delivered after it, and all stdout delivered.
func (w *watchLog) afterLastMarker() (marker, after, all string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		switch e.stream {
		case StreamAttempt:
			marker, after = e.data, ""
		case runner.Stdout:
			after += e.data
			all += e.data
		}
	}
	return marker, after, all
}

// Issue 12, defect 8: the first attempt's runner dies after printing some
// output and the retry prints something else. A watcher on the driving
// node and one on another node each get the first attempt's output, then
// an "attempt 2" marker, then exactly the record's output.
func TestClusterWatchMarksAttempts(t *testing.T) {
	c := threeRunners(t)
	gw := c.nodes["gw"]
	wn := c.add("watcher", false, nil)
	flag := t.TempDir() + "/first"
	svc := execSvc("sh", "-c", `if [ ! -e "$1" ]; then : > "$1"; echo first-partial; sleep 30; fi; echo retry-output`, "sh", flag)
	svc.Retries = 1
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ex  Execution
		err error
	}
	logs := map[string]*watchLog{"gw": {}, "watcher": {}}
	done := make(chan result, 2)
	for name, d := range map[string]*Dispatcher{"gw": gw.d, "watcher": wn.d} {
		go func() {
			ex, err := d.Watch(context.Background(), testCluster, ex.ID, logs[name].fn)
			done <- result{ex, err}
		}()
	}
	waitFor(t, 10*time.Second, "both watchers to see the first attempt's output", func() bool {
		return logs["gw"].contains("first-partial") && logs["watcher"].contains("first-partial")
	})
	victim := c.record(ex.ID).Runner
	_ = c.nodes[victim].tr.Close()
	for range 2 {
		select {
		case r := <-done:
			if r.err != nil || r.ex.Status != StatusSucceeded {
				t.Fatalf("watch: %v %+v", r.err, r.ex)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("watch did not end")
		}
	}
	rec := c.record(ex.ID)
	if rec.Attempts != 2 || rec.Runner == victim || rec.Stdout != "retry-output\n" {
		t.Fatalf("record attempts=%d runner=%s (victim %s) stdout=%q", rec.Attempts, rec.Runner, victim, rec.Stdout)
	}
	for name, l := range logs {
		marker, after, all := l.afterLastMarker()
		if marker != "2" || after != rec.Stdout || !strings.HasPrefix(all, "first-partial\n") {
			t.Errorf("%s: marker %q, after it %q (record %q), all %q", name, marker, after, rec.Stdout, all)
		}
	}
}

// The node driving a watched execution dies mid-attempt and a recovery
// re-runs it elsewhere: the watcher's count of the first attempt's bytes
// must not be subtracted from the second's output (it used to hide it).
func TestClusterWatchAcrossRecovery(t *testing.T) {
	c := newTCluster(t)
	acc := c.add("acc", false, nil)
	c.add("r1", true, nil)
	leader := c.add("lead", false, nil)
	wn := c.add("watcher", false, nil)
	flag := t.TempDir() + "/first"
	svc := execSvc("sh", "-c", `if [ ! -e "$1" ]; then : > "$1"; echo a-long-first-partial-line; sleep 30; fi; echo two`, "sh", flag)
	svc.Retries = 1
	ex, err := acc.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	var l watchLog
	type result struct {
		ex  Execution
		err error
	}
	done := make(chan result, 1)
	go func() {
		ex, err := wn.d.Watch(context.Background(), testCluster, ex.ID, l.fn)
		done <- result{ex, err}
	}()
	waitFor(t, 10*time.Second, "the first attempt's output", func() bool { return l.contains("first-partial") })
	c.kill("acc")
	leader.store.leader.Store(true)
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("watch did not end")
	}
	if r.err != nil || r.ex.Status != StatusSucceeded || r.ex.Attempts != 2 || r.ex.Stdout != "two\n" {
		t.Fatalf("watch: %v %+v", r.err, r.ex)
	}
	if marker, after, all := l.afterLastMarker(); marker != "2" || after != "two\n" {
		t.Fatalf("marker %q, after it %q, all %q", marker, after, all)
	}
}

// TestCallerThatStopsReadingIsCut: a node that calls a runner's exec and
// then stops reading the stream (a stalled client behind it, a wedged
// gateway) holds neither the process nor the runner's slot: the first
// output frame that cannot go within OutputWriteTimeout cancels the run.
func TestCallerThatStopsReadingIsCut(t *testing.T) {
	c := newTCluster(t)
	r1 := c.add("r1", true, func(cfg *Config) { cfg.OutputWriteTimeout = 300 * time.Millisecond })
	caller := c.transport("caller")
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caller.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := caller.Stream(ctx, r1.tr.Addr().String(), MethodExec)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 2 MiB of output, beyond a stream's unread receive window, then a
	// sleep far past the test: only the cut ends it in time.
	flood := c.define(Service{Name: "flood", Type: TypeExec, Timeout: Duration(time.Minute),
		Command: []string{"sh", "-c", "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; sleep 60"}})
	req, _ := json.Marshal(wireFor(flood, ""))
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if f, err := s.Recv(); err != nil || len(f) == 0 || f[0] != tagAck {
		t.Fatalf("ack: %q %v", f, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r1.ex.InFlight() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	for r1.ex.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the runner's slot is still held by a caller that stopped reading")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("slot free %s after the run started", time.Since(start).Round(time.Millisecond))
}

// TestProxyCallerThatStopsReadingIsCut: the same for an http service: a
// gateway that stops reading a proxied response (its client stalled) holds
// no HTTP slot of the runner past OutputWriteTimeout.
func TestProxyCallerThatStopsReadingIsCut(t *testing.T) {
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 256; i++ { // 16 MiB, beyond every window and buffer
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	c := newTCluster(t)
	r1 := c.add("r1", true, func(cfg *Config) { cfg.OutputWriteTimeout = 300 * time.Millisecond })
	caller := c.transport("caller")
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caller.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := caller.Stream(ctx, r1.tr.Addr().String(), MethodHTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	hdr, _ := json.Marshal(httpReqWire{Method: "GET", Path: "/", Upstream: up.URL}) // as an earlier build
	if err := s.Send(hdr); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil { // the response header, then nothing is read
		t.Fatal(err)
	}
	if r1.ex.HTTPInFlight() != 1 {
		t.Fatalf("%d proxied requests in flight, want the stalled one", r1.ex.HTTPInFlight())
	}
	start := time.Now()
	for r1.ex.HTTPInFlight() != 0 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the runner's HTTP slot is still held by a caller that stopped reading")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("HTTP slot free %s after the response started", time.Since(start).Round(time.Millisecond))
}
