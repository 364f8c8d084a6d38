package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The observer gets the route pattern (not the path), the status sent,
// also for requests refused before routing (401) and for unknown paths.
func TestRequestObserverSeesRoutesAndCodes(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	obs := func(route string, code int, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if took < 0 {
			t.Errorf("took %v", took)
		}
		seen = append(seen, fmt.Sprintf("%s=%d", route, code))
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(readToken{oneToken{"s3cret"}}),
		WithMetrics(metrics, false), WithRequestObserver(obs), WithExec(proxyOnly{}))
	base := startDataPlane(t, api, 4<<20) // the data plane serves /v1/health only
	for _, c := range []struct {
		url, token string
		want       int
	}{
		{base + "/v1/health", "", 200},
		{base + "/svc/some-name/deep/path", "", 401},
	} {
		req := newReq(t, "GET", c.url, nil)
		if resp, body := send(t, req); resp.StatusCode != c.want {
			t.Fatalf("%s: %d %s", c.url, resp.StatusCode, body)
		}
	}
	rec := func(path, token string) int {
		w := &recorder{h: http.Header{}}
		req := newReq(t, "GET", "http://x"+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		api.ServeHTTP(w, req)
		return w.code
	}
	if c := rec("/metrics", ""); c != 401 {
		t.Fatalf("/metrics without token: %d, want 401 (not public)", c)
	}
	if c := rec("/metrics", "s3cret"); c != 200 {
		t.Fatalf("/metrics with token: %d", c)
	}
	if c := rec("/no/such/route", "s3cret"); c != 404 {
		t.Fatalf("unknown route: %d", c)
	}
	if c := rec("/v1/../metrics", "s3cret"); c != http.StatusTemporaryRedirect {
		t.Fatalf("unclean path: %d, want ServeMux's redirect", c)
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(seen)
	// The unclean path's redirect counts under the route it leads to.
	want := []string{"/=404", "/svc/{name}/{path...}=401", "GET /metrics=200", "GET /metrics=307", "GET /metrics=401",
		"GET /v1/health=200"}
	if strings.Join(seen, " ") != strings.Join(want, " ") {
		t.Fatalf("observed %v\nwant     %v", seen, want)
	}
}

// With public metrics, /metrics needs no token under ACLs; every other
// route still does.
func TestPublicMetricsOpensOnlyMetrics(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}), WithMetrics(metrics, true))
	for path, want := range map[string]int{"/metrics": 200, "/v1/status": 401, "/v1/members": 401} {
		w := &recorder{h: http.Header{}}
		api.ServeHTTP(w, newReq(t, "GET", "http://x"+path, nil))
		if w.code != want {
			t.Errorf("%s without token: %d, want %d", path, w.code, want)
		}
	}
}

// readToken is oneToken granting read.
type readToken struct{ oneToken }

func (s readToken) LookupSecret(ctx context.Context, cluster, hash string) (Token, error) {
	t, err := s.oneToken.LookupSecret(ctx, cluster, hash)
	t.Policies = []string{PermRead}
	return t, err
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	h    http.Header
	code int
	body strings.Builder
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(c int) {
	if r.code == 0 {
		r.code = c
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.body.Write(p)
}
