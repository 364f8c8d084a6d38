package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
)

// wireFor is the exec request a driving node sends for svc (drive).
func wireFor(svc Service, input string) execWire {
	svc.Normalize()
	w := execWire{ID: "e1", Attempt: 1, Service: svc.Name, Cluster: testCluster, ServiceVersion: svc.Version,
		Command: svc.Command, Env: svc.Env, Dir: svc.Dir, User: svc.User,
		TimeoutMs: svc.EffectiveTimeout().Milliseconds(), Input: []byte(input)}
	for _, r := range svc.Secrets {
		w.Secrets = append(w.Secrets, secretWire{Name: r.Name, Value: []byte("value"), Env: r.Env, File: r.File})
	}
	return w
}

func remoteCode(err error) string {
	var re *transport.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	return ""
}

// A runner checks a remote caller's request against its own cluster's
// definition of the service: anything else is refused before it runs.
func TestVerifyExecRefusesWhatTheClusterDoesNotDefine(t *testing.T) {
	e := newLocal(t, nil)
	ctx := context.Background()
	svc := defineIn(t, e.store, Service{Name: "svc", Type: TypeExec, Command: []string{"cat"},
		Env: map[string]string{"A": "1"}, Timeout: Duration(10 * time.Second),
		Secrets:   []SecretRef{{Name: "db", Env: "DB"}},
		Decorator: json.RawMessage(`{"type":"object","required":["n"]}`)})
	good := wireFor(svc, `{"n":1}`)
	if _, err := e.d.verifyExec(ctx, "gw", &good); err != nil {
		t.Fatalf("the defined service refused: %v", err)
	}
	old := good
	old.Cluster, old.ServiceVersion = "", 0 // an older caller: the runner's cluster, a fresh read
	if _, err := e.d.verifyExec(ctx, "gw", &old); err != nil {
		t.Fatalf("a request without cluster and version refused: %v", err)
	}
	for _, c := range []struct {
		name, want string
		forge      func(w *execWire)
	}{
		{"command", "command", func(w *execWire) { w.Command = []string{"sh", "-c", "touch /tmp/owned"} }},
		{"extra argument", "command", func(w *execWire) { w.Command = append(w.Command, "/etc/shadow") }},
		{"env value", "env", func(w *execWire) { w.Env = map[string]string{"A": "2"} }},
		{"env added", "env", func(w *execWire) { w.Env = map[string]string{"A": "1", "LD_PRELOAD": "/x.so"} }},
		{"dir", "dir", func(w *execWire) { w.Dir = "/root" }},
		{"user", "user", func(w *execWire) { w.User = "root" }},
		{"timeout", "timeout", func(w *execWire) { w.TimeoutMs = MaxTimeout.Milliseconds() }},
		{"secret dropped", "secrets list", func(w *execWire) { w.Secrets = nil }},
		{"secret moved", "secrets list", func(w *execWire) { w.Secrets[0].Env = "PATH" }},
		{"source added", "source", func(w *execWire) { w.Source = &sourceWire{Kind: TypeExec, Path: "/bin/sh"} }},
		{"input against the decorator", "decorator", func(w *execWire) { w.Input = []byte(`{}`) }},
		{"another cluster", `not cluster "c2"`, func(w *execWire) { w.Cluster = "c2" }},
		{"unknown service", "no such service", func(w *execWire) { w.Service = "nope" }},
		{"not a name", "not a service name", func(w *execWire) { w.Service = "../svc" }},
	} {
		w := good
		w.Secrets = append([]secretWire(nil), good.Secrets...)
		c.forge(&w)
		_, err := e.d.verifyExec(ctx, "evil", &w)
		if remoteCode(err) != codeRefused || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want code %s naming %q", c.name, err, codeRefused, c.want)
		}
	}

	// Rewritten after the execution was accepted: the old request no
	// longer matches, and says why; one that matches the new version runs.
	svc2 := svc
	svc2.Command = []string{"cat", "-u"}
	svc2 = defineIn(t, e.store, svc2)
	e.d.defs.forget("svc") // as defCacheTTL after the rewrite
	if _, err := e.d.verifyExec(ctx, "gw", &good); remoteCode(err) != codeChanged ||
		!strings.Contains(err.Error(), "run the service again") {
		t.Errorf("stale request: %v", err)
	}
	forged := good
	forged.ServiceVersion = svc2.Version // claims the new version, sends the old command
	if _, err := e.d.verifyExec(ctx, "evil", &forged); remoteCode(err) != codeRefused {
		t.Errorf("old command under the new version: %v", err)
	}
	cur := wireFor(svc2, `{"n":1}`)
	if _, err := e.d.verifyExec(ctx, "gw", &cur); err != nil {
		t.Errorf("the new version refused: %v", err)
	}
	// An http service runs no process, whatever the request says.
	defineIn(t, e.store, Service{Name: "web", Type: TypeHTTP, Upstream: "http://127.0.0.1:1"})
	web := wireFor(Service{Name: "web", Type: TypeExec, Command: []string{"true"}}, "")
	if _, err := e.d.verifyExec(ctx, "evil", &web); remoteCode(err) != codeRefused {
		t.Errorf("http service as exec: %v", err)
	}

	// A runner that cannot read its state to check says so; the driving
	// node tries another runner (one with the definition cached may answer).
	e.store.mu.Lock()
	e.store.armGets, e.store.failingGets = true, 1
	e.store.mu.Unlock()
	unknown := cur
	unknown.ServiceVersion = 0 // forces a read
	_, err := e.d.verifyExec(ctx, "gw", &unknown)
	if remoteCode(err) != codeUnverified {
		t.Fatalf("store down: %v", err)
	}
	if ae, ok := e.d.classify(ctx, Runner{Name: "r"}, err).(*attemptError); !ok || ae.kind != "busy" {
		t.Errorf("unverified classified as %v", ae)
	}
	for _, code := range []string{codeRefused, codeChanged} {
		ae, ok := e.d.classify(ctx, Runner{Name: "r"}, transport.Errorf(code, "x")).(*attemptError)
		if !ok || ae.kind != "invalid" {
			t.Errorf("%s classified as %v, want not retried", code, ae)
		}
	}
}

// forgeExec sends req to the runner at addr as the caller tr and returns
// the call's error (nil only if the runner sent a result).
func forgeExec(t *testing.T, tr *transport.Transport, addr string, req execWire) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := tr.Stream(ctx, addr, MethodExec)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, _ := json.Marshal(req)
	if err := s.Send(b); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := s.Recv()
		if err != nil {
			return err
		}
		if len(f) > 0 && f[0] == tagResult {
			return nil
		}
	}
}

// A member of the mesh with a valid certificate that calls a runner's
// MethodExec directly, with a command of its own under a defined service's
// name, runs nothing; the service itself still runs.
func TestClusterForgedExecOverQUICRunsNothing(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	evil := c.transport("evil") // same CA: a certificate the runner accepts
	if err := evil.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = evil.Close() })
	svc := c.define(execSvc("echo", "legit"))
	marker := filepath.Join(t.TempDir(), "owned")

	forged := wireFor(svc, "")
	forged.Command = []string{"touch", marker}
	err := forgeExec(t, evil, r1.tr.Addr().String(), forged)
	if remoteCode(err) != codeRefused || !strings.Contains(err.Error(), "command") {
		t.Fatalf("forged command: %v", err)
	}
	other := forged
	other.Cluster, other.Command = "c2", svc.Command
	if err := forgeExec(t, evil, r1.tr.Addr().String(), other); remoteCode(err) != codeRefused {
		t.Fatalf("another cluster's run: %v", err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the forged command ran: %v", err)
	}
	// The request as the cluster defines it runs, from any caller.
	if err := forgeExec(t, evil, r1.tr.Addr().String(), wireFor(svc, "")); err != nil {
		t.Fatalf("the defined service, sent directly: %v", err)
	}
	ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || ex.Stdout != "legit\n" || ex.Runner != "r1" {
		t.Fatalf("run through gw: %v %+v", err, ex)
	}
}

// Runs of a service from a repository and with a shared decorator keep
// working on a remote runner, which checks the source and the input
// against its own state.
func TestClusterRemoteRunFromRepositoryAndDecorator(t *testing.T) {
	g := newBareRepo(t)
	commit := g.commit(map[string]string{"hello.sh": "#!/bin/sh\necho from-git $(cat)\n"})
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	src := t.TempDir()
	r1 := c.add("r1", true, func(cfg *Config) { cfg.SourceDir = src })
	ctx := context.Background()
	repo, _ := json.Marshal(Repository{Name: "ops", URL: g.URL, Ref: "main"})
	if _, err := c.store.Put(ctx, testCluster, RepositoryKey("ops"), repo, nil); err != nil {
		t.Fatal(err)
	}
	schema := []byte(`{"type":"object","required":["n"]}`)
	if _, err := c.store.Put(ctx, testCluster, DecoratorKey("order"), schema, nil); err != nil {
		t.Fatal(err)
	}
	svc := c.define(Service{Name: "hello", Type: TypeExec, Repository: "ops", Path: "hello.sh",
		Decorator: json.RawMessage(`"order"`), Timeout: Duration(20 * time.Second)})
	ex, err := gw.d.Run(ctx, testCluster, svc, []byte(`{"n":1}`), RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || ex.Commit != commit || ex.Stdout != "from-git {\"n\":1}\n" {
		t.Fatalf("run: %v %+v", err, ex)
	}

	// The same service pointed at another repository, or fed an input its
	// decorator refuses, is not run.
	evilRepo := newBareRepo(t)
	evilRepo.commit(map[string]string{"hello.sh": "#!/bin/sh\necho owned\n"})
	w := wireFor(svc, `{"n":1}`)
	w.Source, err = gw.d.sourceFor(ctx, testCluster, &svc)
	if err != nil {
		t.Fatal(err)
	}
	if err := forgeExec(t, gw.tr, r1.tr.Addr().String(), w); err != nil {
		t.Fatalf("the defined source, sent directly: %v", err)
	}
	bad := w
	bad.Source = &sourceWire{}
	*bad.Source = *w.Source
	bad.Source.URL = evilRepo.URL
	if err := forgeExec(t, gw.tr, r1.tr.Addr().String(), bad); remoteCode(err) != codeRefused ||
		!strings.Contains(err.Error(), "source") {
		t.Fatalf("another repository: %v", err)
	}
	bad = w
	bad.Input = []byte(`{"m":1}`)
	if err := forgeExec(t, gw.tr, r1.tr.Addr().String(), bad); remoteCode(err) != codeRefused ||
		!strings.Contains(err.Error(), "decorator") {
		t.Fatalf("input the decorator refuses: %v", err)
	}
}

// BenchmarkVerifyExec measures a runner's check of a request whose
// definition it has cached (the steady state), beside what it guards: the
// executor running `true`, alternated in the same run.
func BenchmarkVerifyExec(b *testing.B) {
	e := newLocal(b, nil)
	ctx := context.Background()
	svc := defineIn(b, e.store, Service{Name: "svc", Type: TypeExec, Command: []string{"true"},
		Env: map[string]string{"A": "1"}, Timeout: Duration(10 * time.Second),
		Decorator: json.RawMessage(`{"type":"object","required":["n"]}`)})
	w := wireFor(svc, `{"n":1}`)
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			req := w
			if _, err := e.d.verifyExec(ctx, "gw", &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("exec", func(b *testing.B) {
		for b.Loop() {
			res, err := e.exec.Exec(ctx, runner.ExecRequest{Command: []string{"true"}, Timeout: 10 * time.Second})
			if err != nil || res.Status != runner.Succeeded {
				b.Fatal(err, res.Status)
			}
		}
	})
}
