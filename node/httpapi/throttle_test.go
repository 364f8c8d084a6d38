package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// fakeThrottler refuses service "hot" and admits the rest, counting
// releases.
type fakeThrottler struct{ admitted, released atomic.Int64 }

func (f *fakeThrottler) Admit(ctx context.Context, w http.ResponseWriter, r Request, tok *Token, cluster, service string) (func(), error) {
	if service == "hot" {
		h := w.Header()
		h.Set("RateLimit-Limit", "5")
		h.Set("RateLimit-Remaining", "0")
		h.Set("RateLimit-Reset", "1")
		return nil, Errorf(http.StatusTooManyRequests, "rate_limited", "hot: spent").WithRetryAfter(1)
	}
	f.admitted.Add(1)
	return func() { f.released.Add(1) }, nil
}

func (f *fakeThrottler) Throttles(ctx context.Context, cluster, service string) (any, error) {
	return map[string]any{"manager": "n1", "limits": []any{}}, nil
}

// runExec answers every run and proxied request, counting them.
type runExec struct {
	memExec
	calls atomic.Int64
}

func (e *runExec) Run(ctx context.Context, cluster, service string, input []byte, opts RunOptions) (dispatch.Execution, error) {
	e.calls.Add(1)
	return dispatch.Execution{ID: "x", Service: service, Status: dispatch.StatusSucceeded}, nil
}

func (e *runExec) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error {
	e.calls.Add(1)
	w.WriteHeader(http.StatusOK)
	return nil
}

// Limits are checked before anything runs or is proxied; GET /v1/throttles
// needs read.
func TestThrottleCheckedFirstAndThrottlesACL(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	ex := &runExec{}
	th := &fakeThrottler{}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(&memTokens{byHash: map[string]Token{}}),
		WithExec(ex), WithThrottle(th))
	if rec := req(t, a, "GET", "/v1/throttles", ""); rec.Code != 401 {
		t.Fatalf("no token: %d, want 401", rec.Code)
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &boot)
	mint := func(policy string) string {
		rec := req(t, a, "POST", "/v1/acl/tokens", `{"description":"`+policy+`","policies":["`+policy+`"]}`, "Authorization", "Bearer "+boot.SecretID)
		var tok struct {
			SecretID string `json:"secret_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || rec.Code != 200 {
			t.Fatalf("mint %s: %d %s", policy, rec.Code, rec.Body)
		}
		return "Bearer " + tok.SecretID
	}
	runOnly, reader, runner := mint("run:nothing"), mint("read"), mint("run")
	if rec := req(t, a, "GET", "/v1/throttles", "", "Authorization", runOnly); rec.Code != 403 {
		t.Fatalf("token without read: %d, want 403", rec.Code)
	}
	if rec := req(t, a, "GET", "/v1/throttles?service=web", "", "Authorization", reader); rec.Code != 200 {
		t.Fatalf("read token: %d %s", rec.Code, rec.Body)
	}
	if rec := req(t, a, "GET", "/v1/throttles?service=-bad", "", "Authorization", reader); rec.Code != 400 {
		t.Fatalf("bad service name: %d", rec.Code)
	}
	for _, path := range []string{"/svc/hot/x", "/v1/services/hot/run"} {
		method := "GET"
		if path == "/v1/services/hot/run" {
			method = "POST"
		}
		rec := req(t, a, method, path, "{}", "Authorization", runner)
		if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" || rec.Header().Get("RateLimit-Limit") != "5" ||
			rec.Header().Get("RateLimit-Remaining") != "0" || rec.Header().Get("RateLimit-Reset") != "1" {
			t.Fatalf("%s over the limit: %d %v", path, rec.Code, rec.Header())
		}
	}
	if ex.calls.Load() != 0 {
		t.Fatalf("a refused request reached the backend %d times", ex.calls.Load())
	}
	for _, path := range []string{"/svc/web/x", "/v1/services/job/run"} {
		method := "GET"
		if path == "/v1/services/job/run" {
			method = "POST"
		}
		if rec := req(t, a, method, path, "{}", "Authorization", runner); rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
	if th.admitted.Load() != 2 || th.released.Load() != 2 || ex.calls.Load() != 2 {
		t.Fatalf("admitted %d, released %d, backend calls %d; want 2 each", th.admitted.Load(), th.released.Load(), ex.calls.Load())
	}
}
