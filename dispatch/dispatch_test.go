package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/rs/zerolog"
)

const testCluster = "c1"

type localEnv struct {
	d       *Dispatcher
	store   *memStore
	runners *memRunners
	exec    *runner.Executor
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Clusters = []string{testCluster}
	cfg.Cluster = testCluster
	cfg.AttemptGrace = time.Second
	cfg.PenaltyBox = 10 * time.Second
	cfg.RecoveryInterval = 50 * time.Millisecond
	cfg.RecoveryMargin = 100 * time.Millisecond
	cfg.WatchPoll = 20 * time.Millisecond
	cfg.NoRunnerWait = 500 * time.Millisecond
	cfg.QueueLease = 2 * time.Second
	cfg.StoreRetryFor = 300 * time.Millisecond
	return cfg
}

func testExecutor(t testing.TB) *runner.Executor {
	rc := runner.DefaultConfig()
	rc.KillGrace = 200 * time.Millisecond
	ex, err := runner.New(rc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ex.Close() })
	return ex
}

// newLocal builds a dispatcher on node "n1", which is also the cluster's
// only runner (no network: runs take the local path).
func newLocal(t testing.TB, mod func(*Config)) *localEnv {
	t.Helper()
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	st := newMemStore()
	rs := newMemRunners()
	rs.set(testCluster, Runner{Name: "n1"})
	ex := testExecutor(t)
	d, err := New(cfg, rs, st, nil, ex, "n1", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return &localEnv{d: d, store: st, runners: rs, exec: ex}
}

func execSvc(cmd ...string) Service {
	return Service{Name: "svc", Type: TypeExec, Command: cmd, Timeout: Duration(10 * time.Second)}
}

func (e *localEnv) record(t testing.TB, id string) Execution {
	t.Helper()
	ex, err := e.d.Get(context.Background(), testCluster, id)
	if err != nil {
		t.Fatal(err)
	}
	return ex
}

func TestConfigDefaultsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.NoRunnerWait = c.QueueLease
	if c.Validate() == nil {
		t.Fatal("NoRunnerWait >= QueueLease accepted")
	}
}

func TestRunSyncRecordsResult(t *testing.T) {
	e := newLocal(t, nil)
	var mu sync.Mutex
	var streamed strings.Builder
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("cat"), []byte(`{"a":1}`), RunOptions{
		OnOutput: func(_ string, c []byte) { mu.Lock(); streamed.Write(c); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusSucceeded || ex.Stdout != `{"a":1}` || ex.Attempts != 1 || ex.Runner != "n1" || ex.ExitCode != 0 {
		t.Fatalf("%+v", ex)
	}
	mu.Lock()
	if streamed.String() != ex.Stdout {
		t.Fatalf("streamed %q", streamed.String())
	}
	mu.Unlock()
	rec := e.record(t, ex.ID)
	if rec.Status != StatusSucceeded || rec.Stdout != ex.Stdout || rec.AcceptedBy != "n1" || rec.FinishedAt.IsZero() ||
		rec.ServiceDef == nil || len(rec.History) != 1 || rec.History[0].Outcome != string(StatusSucceeded) {
		t.Fatalf("record %+v", rec)
	}
	// Two writes for a sync run: running, then terminal.
	if e.store.writes != 2 {
		t.Fatalf("%d store writes, want 2", e.store.writes)
	}
}

func TestRunFailedAndTimedOut(t *testing.T) {
	e := newLocal(t, nil)
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("sh", "-c", "exit 7"), nil, RunOptions{})
	if err != nil || ex.Status != StatusFailed || ex.ExitCode != 7 {
		t.Fatalf("%v %+v", err, ex)
	}
	svc := execSvc("sleep", "60")
	svc.Timeout = Duration(300 * time.Millisecond)
	start := time.Now()
	ex, err = e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{})
	if err != nil || ex.Status != StatusTimedOut {
		t.Fatalf("%v %+v", err, ex)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout took %v", time.Since(start))
	}
	if e.record(t, ex.ID).Status != StatusTimedOut {
		t.Fatal("record not timed_out")
	}
}

func TestRunSchemaViolationRunsNothing(t *testing.T) {
	e := newLocal(t, nil)
	svc := execSvc("touch", t.TempDir()+"/ran")
	svc.Decorator = json.RawMessage(`{"type":"object","required":["name"]}`)
	_, err := e.d.Run(context.Background(), testCluster, svc, []byte(`{"x":1}`), RunOptions{})
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("err %v", err)
	}
	if n := e.store.count(testCluster, "exec/"); n != 0 {
		t.Fatalf("%d records written", n)
	}
	if _, err := e.d.Run(context.Background(), testCluster, execSvc("true"), make([]byte, 2<<20), RunOptions{}); !errors.Is(err, ErrInputTooLarge) {
		t.Fatalf("big input: %v", err)
	}
}

func TestRunNoRunner(t *testing.T) {
	e := newLocal(t, nil)
	e.runners.setStatus("n1", MemberSuspect)
	if _, err := e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{}); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("err %v", err)
	}
	e.runners.setStatus("n1", MemberAlive)
	svc := execSvc("true")
	svc.RunnerTags = map[string]string{"gpu": "yes"}
	if _, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{}); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("tags: err %v", err)
	}
	if _, err := e.d.Run(context.Background(), "other", execSvc("true"), nil, RunOptions{}); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("other cluster: err %v", err)
	}
	if e.store.count(testCluster, "") != 0 {
		t.Fatal("records written")
	}
}

func TestRunStoreUnavailable(t *testing.T) {
	e := newLocal(t, nil)
	e.store.failPuts = errUnavailable
	if _, err := e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{}); !errors.Is(err, errUnavailable) {
		t.Fatalf("err %v, want the store's error", err)
	}
}

// Record writes whose outcome the store cannot tell: each case applies the
// write and then answers as a store does when a leader or a replica dies
// at the wrong moment. The run must succeed, recorded once.
func TestRunRecordWritesWithUnknownOutcome(t *testing.T) {
	cases := []struct {
		name  string
		retry time.Duration
		set   func(*memStore)
	}{
		// Applied, then "no quorum": retried, and the retry's conflict is
		// recognised as the first write.
		{"applied then unavailable", 0, func(m *memStore) { m.lyingPuts = 2 }},
		// As above while the group is still electing: reading the record
		// back must wait for the election too, not call the run a
		// conflict (a process test saw 409s when the Raft leader was
		// killed as runs were being created).
		{"read-back during the election", 5 * time.Second, func(m *memStore) { m.lyingPuts = 1; m.failingGets = 3 }},
		// Applied, then re-sent by a lower layer: a conflict on the first
		// try that is our own write.
		{"replayed by a lower layer", 0, func(m *memStore) { m.replayedPuts = 2 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newLocal(t, func(cfg *Config) {
				if c.retry > 0 {
					cfg.StoreRetryFor = c.retry
				}
			})
			e.store.mu.Lock()
			c.set(e.store)
			e.store.mu.Unlock()
			ex, err := e.d.Run(context.Background(), testCluster, execSvc("echo", "hi"), nil, RunOptions{})
			if err != nil || ex.Status != StatusSucceeded || ex.Stdout != "hi\n" {
				t.Fatalf("%v %+v", err, ex)
			}
			if rec := e.store.count(testCluster, ""); rec != 1 {
				t.Fatalf("%d records, want 1", rec)
			}
		})
	}
}

func TestRunAsync(t *testing.T) {
	e := newLocal(t, nil)
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("sh", "-c", "sleep 0.2; echo done"), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusQueued || !ex.Async {
		t.Fatalf("%+v", ex)
	}
	// Durable before the answer.
	if e.record(t, ex.ID).Status.Terminal() {
		t.Fatal("already terminal")
	}
	var out strings.Builder
	final, err := e.d.Watch(context.Background(), testCluster, ex.ID, func(_ string, c []byte) { out.Write(c) })
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusSucceeded || final.Stdout != "done\n" || out.String() != "done\n" {
		t.Fatalf("%+v watched %q", final, out.String())
	}
}

func TestIdempotencyReturnsFirstExecution(t *testing.T) {
	e := newLocal(t, nil)
	dir := t.TempDir()
	svc := execSvc("sh", "-c", "echo x >> "+dir+"/count; sleep 0.2; echo ok")
	first, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true, IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	// A sync retry with the same key waits for the first and returns it.
	second, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || second.Status != StatusSucceeded || second.Stdout != "ok\n" {
		t.Fatalf("second %+v", second)
	}
	third, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true, IdempotencyKey: "k1"})
	if err != nil || third.ID != first.ID {
		t.Fatalf("third %v %+v", err, third)
	}
	if n := e.store.count(testCluster, "exec/"); n != 1 {
		t.Fatalf("%d executions recorded, want 1", n)
	}
	// A replay answers even when no runner is live.
	e.runners.setStatus("n1", MemberFailed)
	replay, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{IdempotencyKey: "k1"})
	if err != nil || replay.ID != first.ID {
		t.Fatalf("replay without runner: %v %+v", err, replay)
	}
	e.runners.setStatus("n1", MemberAlive)
	other, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{IdempotencyKey: "k2"})
	if err != nil || other.ID == first.ID {
		t.Fatalf("other key %v %+v", err, other)
	}
	if _, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{IdempotencyKey: "bad key"}); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("bad key: %v", err)
	}
}

func TestStaleAttemptCannotOverwrite(t *testing.T) {
	e := newLocal(t, nil)
	type result struct {
		ex  Execution
		err error
	}
	done := make(chan result, 1)
	go func() {
		ex, err := e.d.Run(context.Background(), testCluster, execSvc("sh", "-c", "sleep 0.5; echo stale"), nil, RunOptions{})
		done <- result{ex, err}
	}()
	// Wait for the running record, then take it over as a recovery on
	// another node would: a newer attempt, written by CAS.
	var id string
	waitFor(t, 5*time.Second, "running record", func() bool {
		es, _ := e.d.List(context.Background(), testCluster, ListFilter{Status: StatusRunning})
		if len(es) == 1 {
			id = es[0].ID
			return true
		}
		return false
	})
	cur := e.record(t, id)
	cur.Attempts++
	cur.Runner = "n2"
	cur.Owner = "n9"
	b, _ := json.Marshal(cur)
	ver := cur.Version
	newVer, err := e.store.Put(context.Background(), testCluster, ExecKey(id), b, &ver)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	after := e.record(t, id)
	if after.Version != newVer || after.Owner != "n9" || after.Status != StatusRunning || after.Stdout != "" {
		t.Fatalf("stale attempt overwrote the record: %+v", after)
	}
	if r.ex.Owner != "n9" {
		t.Fatalf("superseded run returned %+v, want the current record", r.ex)
	}
}

func TestRecoveryRedispatchesAsyncOfFailedNode(t *testing.T) {
	e := newLocal(t, nil)
	e.runners.setStatus("dead", MemberFailed)
	// An async execution accepted by "dead", running attempt 1 there.
	svc := execSvc("sh", "-c", "echo recovered")
	svc.Retries = 1
	svc.Normalize()
	now := time.Now()
	rec := Execution{
		ID: NewID(now), Service: svc.Name, Cluster: testCluster, Status: StatusRunning, Runner: "dead",
		Attempts: 1, Owner: "dead", AcceptedBy: "dead", Async: true, CreatedAt: now, StartedAt: now,
		LeaseExpires: now.Add(time.Hour), ServiceDef: &svc,
		History: []Attempt{{N: 1, Runner: "dead", Owner: "dead", StartedAt: now}},
	}
	b, _ := json.Marshal(rec)
	zero := uint64(0)
	if _, err := e.store.Put(context.Background(), testCluster, ExecKey(rec.ID), b, &zero); err != nil {
		t.Fatal(err)
	}
	// A sync one from the same dead node: its client is gone → lost.
	sync := rec
	sync.ID = NewID(now.Add(time.Millisecond))
	sync.Async = false
	b, _ = json.Marshal(sync)
	if _, err := e.store.Put(context.Background(), testCluster, ExecKey(sync.ID), b, &zero); err != nil {
		t.Fatal(err)
	}
	// Not the leader: nothing happens.
	time.Sleep(3 * testConfig().RecoveryInterval)
	if e.record(t, rec.ID).Status != StatusRunning {
		t.Fatal("recovery ran without leadership")
	}
	e.store.setLeader(testCluster, true)
	waitFor(t, 10*time.Second, "re-dispatched execution to end", func() bool {
		return e.record(t, rec.ID).Status.Terminal() && e.record(t, sync.ID).Status.Terminal()
	})
	got := e.record(t, rec.ID)
	if got.Status != StatusSucceeded || got.Attempts != 2 || got.Stdout != "recovered\n" || got.Owner != "n1" ||
		got.History[0].Outcome != string(StatusLost) {
		t.Fatalf("async %+v", got)
	}
	gs := e.record(t, sync.ID)
	if gs.Status != StatusLost || !strings.Contains(gs.Error, "dead is failed") {
		t.Fatalf("sync %+v", gs)
	}
}

func TestRecoveryStaleLeaseAndNoRetries(t *testing.T) {
	e := newLocal(t, nil)
	e.runners.setStatus("slow", MemberAlive)
	svc := execSvc("true")
	svc.Normalize()
	now := time.Now()
	rec := Execution{
		ID: NewID(now), Service: svc.Name, Cluster: testCluster, Status: StatusRunning, Runner: "slow",
		Attempts: 1, Owner: "slow", AcceptedBy: "slow", Async: true, CreatedAt: now, StartedAt: now,
		LeaseExpires: now.Add(-time.Minute), ServiceDef: &svc,
		History: []Attempt{{N: 1, Runner: "slow", Owner: "slow", StartedAt: now}},
	}
	b, _ := json.Marshal(rec)
	zero := uint64(0)
	if _, err := e.store.Put(context.Background(), testCluster, ExecKey(rec.ID), b, &zero); err != nil {
		t.Fatal(err)
	}
	if n, err := e.d.Recover(testCluster); err != nil || n != 1 {
		t.Fatalf("recover %d %v", n, err)
	}
	got := e.record(t, rec.ID)
	if got.Status != StatusLost || !strings.Contains(got.Error, "no retries left") || !strings.Contains(got.Error, "lease") {
		t.Fatalf("%+v", got)
	}
}

func TestStopReleasesAsync(t *testing.T) {
	e := newLocal(t, nil)
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("sleep", "60"), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "running", func() bool { return e.record(t, ex.ID).Status == StatusRunning })
	if err := e.d.Stop(); err != nil {
		t.Fatal(err)
	}
	got := e.record(t, ex.ID)
	if got.Status != StatusQueued || got.Owner != "" {
		t.Fatalf("after stop %+v", got)
	}
	if e.exec.InFlight() != 0 {
		t.Fatal("process still running")
	}
	if _, err := e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("run after stop: %v", err)
	}
}

func TestRetention(t *testing.T) {
	now := time.Now()
	e := newLocal(t, func(c *Config) {
		c.RetentionCount = 5
		c.RetentionAge = time.Hour
		c.RetentionBatch = 100
		c.Now = func() time.Time { return now }
	})
	put := func(at time.Time, st Status, idem string) string {
		ex := Execution{ID: NewID(at), Service: "svc", Cluster: testCluster, Status: st, CreatedAt: at, IdempotencyKey: idem}
		b, _ := json.Marshal(ex)
		if _, err := e.store.Put(context.Background(), testCluster, ExecKey(ex.ID), b, nil); err != nil {
			t.Fatal(err)
		}
		if idem != "" {
			_, _ = e.store.Put(context.Background(), testCluster, IdemKey("svc", idem), []byte(ex.ID), nil)
		}
		return ex.ID
	}
	old := put(now.Add(-2*time.Hour), StatusSucceeded, "old")
	oldRunning := put(now.Add(-2*time.Hour+time.Second), StatusRunning, "")
	var recent []string
	for i := 0; i < 8; i++ {
		recent = append(recent, put(now.Add(time.Duration(i-10)*time.Minute), StatusFailed, ""))
	}
	n, err := e.d.Retain(testCluster)
	if err != nil {
		t.Fatal(err)
	}
	// old (age) + the 3 oldest recent ones beyond the newest 5 (the
	// non-terminal one counts but is kept).
	if n != 4 {
		t.Fatalf("deleted %d, want 4", n)
	}
	for _, id := range []string{old, recent[0], recent[1], recent[2]} {
		if _, err := e.d.Get(context.Background(), testCluster, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s still there", id)
		}
	}
	for _, id := range append([]string{oldRunning}, recent[3:]...) {
		if _, err := e.d.Get(context.Background(), testCluster, id); err != nil {
			t.Fatalf("%s gone: %v", id, err)
		}
	}
	if _, _, found, _ := e.store.Get(context.Background(), testCluster, IdemKey("svc", "old")); found {
		t.Fatal("idempotency key of a deleted execution kept")
	}
}

func TestListAndGet(t *testing.T) {
	e := newLocal(t, nil)
	a, _ := e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{})
	other := execSvc("false")
	other.Name = "other"
	b, _ := e.d.Run(context.Background(), testCluster, other, nil, RunOptions{})
	all, err := e.d.List(context.Background(), testCluster, ListFilter{})
	if err != nil || len(all) != 2 || all[0].ID != b.ID || all[1].ID != a.ID {
		t.Fatalf("%v %+v", err, all)
	}
	fs, _ := e.d.List(context.Background(), testCluster, ListFilter{Service: "other"})
	if len(fs) != 1 || fs[0].ID != b.ID {
		t.Fatalf("by service %+v", fs)
	}
	fs, _ = e.d.List(context.Background(), testCluster, ListFilter{Status: StatusSucceeded})
	if len(fs) != 1 || fs[0].ID != a.ID {
		t.Fatalf("by status %+v", fs)
	}
	fs, _ = e.d.List(context.Background(), testCluster, ListFilter{Limit: 1})
	if len(fs) != 1 {
		t.Fatalf("limit %+v", fs)
	}
	if _, err := e.d.Get(context.Background(), testCluster, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := e.d.Get(context.Background(), testCluster, NewID(time.Now())); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestRecordOutputCapped(t *testing.T) {
	e := newLocal(t, func(c *Config) { c.RecordOutputCap = 100 })
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("head", "-c", "5000", "/dev/zero"), nil, RunOptions{})
	if err != nil || len(ex.Stdout) != 5000 {
		t.Fatalf("%v len %d", err, len(ex.Stdout))
	}
	rec := e.record(t, ex.ID)
	if !rec.Truncated || len(rec.Stdout) != 100+len(runner.TruncationMarker) {
		t.Fatalf("record stdout %d truncated=%v", len(rec.Stdout), rec.Truncated)
	}
}

func TestPickStrategies(t *testing.T) {
	st := newMemStore()
	rs := newMemRunners()
	for _, n := range []string{"a", "b", "c"} {
		rs.set(testCluster, Runner{Name: n, RPCAddr: n + ":1"})
	}
	rs.set(testCluster, Runner{Name: "gw", RPCAddr: "gw:1", Roles: []string{"gateway"}})
	rs.set(testCluster, Runner{Name: "sus", RPCAddr: "s:1", Status: MemberSuspect})
	d, err := New(testConfig(), rs, st, nil, nil, "gw", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	svc := execSvc("true")
	seen := map[string]int{}
	for i := 0; i < 9; i++ {
		r, err := d.pick(testCluster, &svc, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		seen[r.Name]++
	}
	if seen["a"] != 3 || seen["b"] != 3 || seen["c"] != 3 {
		t.Fatalf("round robin %v", seen)
	}
	// Penalty box: b is skipped while others live, used as a last resort.
	d.penalize("b")
	for i := 0; i < 6; i++ {
		if r, _ := d.pick(testCluster, &svc, nil, true); r.Name == "b" {
			t.Fatal("penalized runner chosen")
		}
	}
	if r, err := d.pick(testCluster, &svc, map[string]bool{"a": true, "c": true}, true); err != nil || r.Name != "b" {
		t.Fatalf("fallback %v %v", r, err)
	}
	if _, err := d.pick(testCluster, &svc, map[string]bool{"a": true, "c": true}, false); !errors.Is(err, ErrNoRunner) {
		t.Fatalf("retry must not fall back to a penalized runner: %v", err)
	}
	d.clearPenalty("b")
	// Least loaded.
	svc.Strategy = StrategyLeastLoaded
	d.acquireRunner("a")
	d.acquireRunner("a")
	d.acquireRunner("c")
	for i := 0; i < 4; i++ {
		if r, _ := d.pick(testCluster, &svc, nil, true); r.Name != "b" {
			t.Fatalf("least loaded chose %s", r.Name)
		}
	}
}

func TestProxyHTTPLocal(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(r.Method))
	}))
	defer up.Close()
	e := newLocal(t, nil)
	svc := Service{Name: "web", Type: TypeHTTP, Upstream: up.URL}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodDelete, "/svc/web/a/b", nil)
	if err := e.d.ProxyHTTP(rec, req, testCluster, svc, "/a/b"); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusAccepted || rec.Body.String() != "DELETE" || rec.Header().Get("X-Path") != "/a/b" {
		t.Fatalf("%d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	if err := e.d.ProxyHTTP(httptest.NewRecorder(), req, testCluster, execSvc("true"), "/"); !errors.Is(err, ErrWrongType) {
		t.Fatal(err)
	}
	if _, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{}); !errors.Is(err, ErrWrongType) {
		t.Fatal(err)
	}
}

func TestRunAllRunnersBusy(t *testing.T) {
	st := newMemStore()
	rs := newMemRunners()
	rs.set(testCluster, Runner{Name: "n1"})
	rc := runner.DefaultConfig()
	rc.MaxConcurrent = 1
	ex, err := runner.New(rc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	d, err := New(testConfig(), rs, st, nil, ex, "n1", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = d.Run(ctx, testCluster, execSvc("sleep", "60"), nil, RunOptions{})
	}()
	waitFor(t, 5*time.Second, "first run", func() bool { return ex.InFlight() == 1 })
	got, err := d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("err %v, want ErrBusy (%+v)", err, got)
	}
	cancel()
	<-done
	rec, _ := d.Get(context.Background(), testCluster, got.ID)
	if rec.Status != StatusFailed || !strings.Contains(rec.Error, "busy") {
		t.Fatalf("busy record %+v", rec)
	}
}

func TestAsyncNoRunnerFailsAfterWait(t *testing.T) {
	e := newLocal(t, nil)
	// A queued async record taken over while no runner is live waits
	// Config.NoRunnerWait, then fails.
	// Deterministic: a queued record taken over while no runner is live.
	e.runners.setStatus("n1", MemberSuspect)
	svc := execSvc("true")
	svc.Normalize()
	now := time.Now()
	q := Execution{ID: NewID(now), Service: "svc", Cluster: testCluster, Status: StatusQueued, Async: true,
		AcceptedBy: "gone", Owner: "gone", CreatedAt: now, LeaseExpires: now.Add(time.Minute), ServiceDef: &svc}
	b, _ := json.Marshal(q)
	if _, err := e.store.Put(context.Background(), testCluster, ExecKey(q.ID), b, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := e.d.Recover(testCluster); err != nil || n != 1 {
		t.Fatalf("recover %d %v", n, err)
	}
	final, err := e.d.Watch(context.Background(), testCluster, q.ID, nil)
	if err != nil || final.Status != StatusFailed || !strings.Contains(final.Error, "no live runner") {
		t.Fatalf("%v %+v", err, final)
	}
}

func TestRecoveryCursorSkipsTerminalHistory(t *testing.T) {
	e := newLocal(t, nil)
	now := time.Now()
	e.runners.setStatus("busy", MemberAlive)
	svc := execSvc("true")
	svc.Normalize()
	put := func(at time.Time, st Status) Execution {
		ex := Execution{ID: NewID(at), Service: "svc", Cluster: testCluster, Status: st, Owner: "busy", AcceptedBy: "busy",
			Async: true, CreatedAt: at, LeaseExpires: now.Add(time.Hour), ServiceDef: &svc}
		b, _ := json.Marshal(ex)
		if _, err := e.store.Put(context.Background(), testCluster, ExecKey(ex.ID), b, nil); err != nil {
			t.Fatal(err)
		}
		return ex
	}
	put(now.Add(-2*time.Hour), StatusSucceeded)
	if _, err := e.d.Recover(testCluster); err != nil {
		t.Fatal(err)
	}
	if c := e.d.cursor(testCluster); c < timeKey(now.Add(-cursorLag)) || c > timeKey(time.Now().Add(-cursorLag)) {
		t.Fatalf("cursor %s with nothing in flight", c)
	}
	running := put(now.Add(-time.Hour), StatusRunning)
	if _, err := e.d.Recover(testCluster); err != nil {
		t.Fatal(err)
	}
	if c := e.d.cursor(testCluster); c != timeKey(IDTime(running.ID)) {
		t.Fatalf("cursor %s, want just before the running execution", c)
	}
	// An incremental pass from the cursor still sees it.
	e.runners.setStatus("busy", MemberFailed)
	if n, err := e.d.recoverFrom(e.d.ctx, testCluster, e.d.cursor(testCluster)); err != nil || n != 1 {
		t.Fatalf("incremental pass took over %d (%v)", n, err)
	}
}

func TestIdempotencyConcurrentRunsOnce(t *testing.T) {
	e := newLocal(t, nil)
	svc := execSvc("sh", "-c", "sleep 0.2; echo once")
	var wg sync.WaitGroup
	ids := make([]string, 5)
	errs := make([]error, 5)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ex, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{IdempotencyKey: "same"})
			ids[i], errs[i] = ex.ID, err
			if err == nil && (ex.Status != StatusSucceeded || ex.Stdout != "once\n") {
				errs[i] = errors.New("not the terminal execution: " + string(ex.Status))
			}
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("run %d: %v id %s vs %s", i, errs[i], ids[i], ids[0])
		}
	}
	if n := e.store.count(testCluster, "exec/"); n != 1 {
		t.Fatalf("%d executions", n)
	}
}

func TestRetentionIncremental(t *testing.T) {
	e := newLocal(t, func(c *Config) { c.RetentionCount = 5; c.RetentionBatch = 100 })
	base := time.Now().Add(-time.Hour)
	var ids []string
	put := func(n int) {
		for i := 0; i < n; i++ {
			at := base.Add(time.Duration(len(ids)) * time.Second)
			ex := Execution{ID: NewID(at), Service: "svc", Cluster: testCluster, Status: StatusSucceeded, CreatedAt: at}
			b, _ := json.Marshal(ex)
			if _, err := e.store.Put(context.Background(), testCluster, ExecKey(ex.ID), b, nil); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ex.ID)
		}
	}
	kept := func() []string {
		es, _ := e.store.List(context.Background(), testCluster, "exec/", ListOptions{})
		var out []string
		for _, x := range es {
			out = append(out, strings.TrimPrefix(x.Key, "exec/"))
		}
		return out
	}
	retain := func(want int) {
		t.Helper()
		n, err := e.d.Retain(testCluster)
		if err != nil || n != want {
			t.Fatalf("deleted %d (%v), want %d", n, err, want)
		}
		if got, newest := kept(), ids[max(0, len(ids)-5):]; strings.Join(got, ",") != strings.Join(newest, ",") {
			t.Fatalf("kept %v, want the newest %v", got, newest)
		}
	}
	put(3)
	retain(0) // fewer than RetentionCount
	put(4)
	retain(2) // the window filled: full walk
	put(4)
	retain(4) // incremental: slide by 4
	retain(0)
	put(1)
	retain(1)
	if st := e.d.retention(testCluster); st == nil || st.passes == 0 {
		t.Fatalf("no incremental state: %+v", st)
	}
}

// Retention deletes a record and its idempotency key in one command: a
// store that fails between two commands must not leave the key behind.
func TestRetentionDeletesKeyWithRecord(t *testing.T) {
	now := time.Now()
	e := newLocal(t, func(c *Config) {
		c.RetentionAge = time.Hour
		c.Now = func() time.Time { return now }
	})
	at := now.Add(-2 * time.Hour)
	ex := Execution{ID: NewID(at), Service: "svc", Cluster: testCluster, Status: StatusSucceeded,
		CreatedAt: at, IdempotencyKey: "k"}
	b, _ := json.Marshal(ex)
	ctx := context.Background()
	if _, err := e.store.PutMulti(ctx, testCluster, []KV{
		{Key: ExecKey(ex.ID), Value: b}, {Key: IdemKey("svc", "k"), Value: []byte(ex.ID)}}); err != nil {
		t.Fatal(err)
	}
	e.store.mu.Lock()
	e.store.limitWrites, e.store.writesLeft = true, 1
	e.store.mu.Unlock()
	_, _ = e.d.Retain(testCluster)
	_, _, recFound, _ := e.store.Get(ctx, testCluster, ExecKey(ex.ID))
	_, _, keyFound, _ := e.store.Get(ctx, testCluster, IdemKey("svc", "k"))
	if recFound != keyFound {
		t.Fatalf("record present %v, idempotency key present %v: they must go together", recFound, keyFound)
	}
	if recFound {
		t.Fatal("retention deleted nothing with one write available")
	}
}

// A key whose record is gone is treated as absent: the run goes ahead and
// the key is replaced to point at the new execution.
func TestIdempotencyDanglingKeyRunsAgain(t *testing.T) {
	e := newLocal(t, nil)
	ctx := context.Background()
	gone := NewID(time.Now().Add(-time.Hour))
	if _, err := e.store.Put(ctx, testCluster, IdemKey("svc", "k"), []byte(gone), nil); err != nil {
		t.Fatal(err)
	}
	ex, err := e.d.Run(ctx, testCluster, execSvc("echo", "hi"), nil, RunOptions{IdempotencyKey: "k"})
	if err != nil {
		t.Fatalf("run with a dangling key: %v", err)
	}
	if ex.Status != StatusSucceeded || ex.ID == gone {
		t.Fatalf("%+v", ex)
	}
	b, _, _, _ := e.store.Get(ctx, testCluster, IdemKey("svc", "k"))
	if string(b) != ex.ID {
		t.Fatalf("key points at %q, want %q", b, ex.ID)
	}
	again, err := e.d.Run(ctx, testCluster, execSvc("echo", "hi"), nil, RunOptions{IdempotencyKey: "k"})
	if err != nil || again.ID != ex.ID {
		t.Fatalf("replay: %v %+v", err, again)
	}
}
