package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/centrallog"
)

// homeTokens is a TokenStore whose one secret (run) belongs to cluster
// home: asked for any other cluster's tokens, it knows none.
type homeTokens struct{ oneToken }

func (h homeTokens) LookupSecret(ctx context.Context, cluster, hash string) (Token, error) {
	if cluster != "home" {
		return Token{}, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	return h.oneToken.LookupSecret(ctx, cluster, hash)
}

type homeBackend struct{ fakeBackend }

func (homeBackend) LocalCluster() string { return "home" }

// TestDataPlaneRulesOnEveryFront: the rules of a /svc/ call — the token,
// the cluster it belongs to, the limits, the path check, the central log
// entry — give the same answers on the API port, on the data plane served
// natively and on the data plane converting to net/http's types; and the
// native one does serve the plain calls natively.
func TestDataPlaneRulesOnEveryFront(t *testing.T) {
	var seen atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		w.WriteHeader(http.StatusCreated)
	}))
	defer up.Close()
	var native atomic.Int64
	log := &memLog{}
	api := New(DefaultConfig(), &homeBackend{}, zerolog.Nop(), WithACL(homeTokens{oneToken{"s3cret"}}),
		WithThrottle(&fakeThrottler{}), WithCentralLog(log),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL, native: &native}))
	bearer := []string{"Authorization", "Bearer s3cret"}
	for front, base := range fronts(t, api) {
		for _, tc := range []struct {
			name, method, target string
			hdr                  []string
			status               int
			code                 string
		}{
			{"no token", "GET", "/svc/web/x", nil, 401, "unauthorized"},
			{"a wrong token", "GET", "/svc/web/x", []string{"X-Meshgw-Token", "nope"}, 401, "unauthorized"},
			{"its cluster", "GET", "/svc/web/x?cluster=home", bearer, 201, ""},
			{"another cluster", "GET", "/svc/web/x?cluster=away", bearer, 401, "unauthorized"},
			{"another cluster, encoded key", "GET", "/svc/web/x?clust%65r=away", bearer, 401, "unauthorized"},
			{"two clusters", "GET", "/svc/web/x?cluster=home&cluster=away", bearer, 400, "bad_query"},
			{"over its limit", "GET", "/svc/hot/x", bearer, 429, "rate_limited"},
			{"a bad name", "GET", "/svc/-bad/x", bearer, 404, "not_found"},
			{"an encoded slash", "GET", "/svc/web/a%2Fb", bearer, 400, "bad_path"},
			{"a body", "POST", "/svc/web/x", bearer, 201, ""},
		} {
			before := seen.Load()
			var body *strings.Reader
			if tc.method == "POST" {
				body = strings.NewReader("payload")
			}
			var req *http.Request
			if body != nil {
				req = newReq(t, tc.method, base+tc.target, body)
			} else {
				req = newReq(t, tc.method, base+tc.target, nil)
			}
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, got := send(t, req)
			if resp.StatusCode != tc.status || (tc.code != "" && errorCode(t, got) != tc.code) {
				t.Errorf("%s, %s: %d %s, want %d %s", front, tc.name, resp.StatusCode, got, tc.status, tc.code)
			}
			if reached := seen.Load() > before; reached != (tc.status == 201) {
				t.Errorf("%s, %s: upstream reached %v", front, tc.name, reached)
			}
			if tc.status == 429 && resp.Header.Get("RateLimit-Limit") != "5" {
				t.Errorf("%s, %s: RateLimit-Limit %q", front, tc.name, resp.Header.Get("RateLimit-Limit"))
			}
		}
	}
	if n := native.Load(); n != 2 {
		t.Errorf("%d calls served natively, want 2 (the data plane's two that reach the upstream)", n)
	}
	// One entry per call that passed access, the same on every front.
	log.mu.Lock()
	defer log.mu.Unlock()
	byFront := map[string]int{}
	bytesOut := map[string]map[int64]bool{} // the body bytes each front logged
	for _, e := range log.entries {
		if e.Kind != centrallog.KindHTTP || e.Cluster != "home" || e.TokenAccessor != "a1" || e.ClientIP != "127.0.0.1" {
			t.Errorf("entry %+v", e)
		}
		k := e.Path + " " + e.Method + " " + http.StatusText(e.Status)
		byFront[k]++
		if bytesOut[k] == nil {
			bytesOut[k] = map[int64]bool{}
		}
		bytesOut[k][e.BytesOut] = true
	}
	for k, outs := range bytesOut {
		if len(outs) != 1 || (!strings.Contains(k, "Created") && outs[0]) {
			t.Errorf("%q logged bytes out %v: want one non-zero length on every front", k, outs)
		}
	}
	for k, n := range byFront {
		if n != 3 {
			t.Errorf("%q logged %d times, want once per front", k, n)
		}
	}
	if len(log.entries) != 3*5 {
		t.Errorf("%d entries, want 15 (5 calls past access, 3 fronts)", len(log.entries))
	}
}

// TestNativeTarget: only targets net/http reads the same way, and its mux
// would not redirect, are served natively.
func TestNativeTarget(t *testing.T) {
	for _, tc := range []struct {
		uri, path, query string
		ok               bool
	}{
		{"/svc/web/x?a=1&b", "/svc/web/x", "a=1&b", true},
		{"/svc/web", "/svc/web", "", true},
		{"/svc/web/x?", "/svc/web/x", "", true},
		{"/svc/web/a.b/c", "/svc/web/a.b/c", "", true},
		{"/svc/web/a%20b", "", "", false},
		{"/svc/web//x", "", "", false},
		{"/svc/web/./x", "", "", false},
		{"/svc/web/../x", "", "", false},
		{"/svc/web/..", "", "", false},
		{"http://h/svc/web/x", "", "", false},
		{"*", "", "", false},
		{"/svc/web/x?q=%2F", "/svc/web/x", "q=%2F", true},
	} {
		p, q, ok := nativeTarget([]byte(tc.uri))
		if ok != tc.ok || p != tc.path || q != tc.query {
			t.Errorf("%q: %q %q %v, want %q %q %v", tc.uri, p, q, ok, tc.path, tc.query, tc.ok)
		}
	}
}

// The native path reads requests as Request; fastRequest must say what
// netRequest says of the same request.
func TestFastRequestReadsLikeNetRequest(t *testing.T) {
	var rc fasthttp.RequestCtx
	rc.Request.SetRequestURI("/svc/web/x?a=1")
	rc.Request.Header.SetMethod("PUT")
	rc.Request.Header.SetHost("gw.example")
	rc.Request.Header.Add("Vary-Me", "1")
	rc.Request.Header.Add("vary-me", "2")
	rc.Request.Header.SetContentLength(7)
	f := &fastRequest{ctx: &rc, method: "PUT", host: "gw.example", path: "/svc/web/x", query: "a=1"}
	n := httptest.NewRequest("PUT", "http://gw.example/svc/web/x?a=1", strings.NewReader("payload"))
	n.Header.Add("Vary-Me", "1")
	n.Header.Add("vary-me", "2")
	nr := netRequest{n}
	if f.Header("VARY-ME") != nr.Header("VARY-ME") || strings.Join(f.HeaderValues("vary-me"), ",") != strings.Join(nr.HeaderValues("vary-me"), ",") ||
		f.ContentLength() != nr.ContentLength() || f.RawQuery() != nr.RawQuery() || f.Path() != nr.Path() ||
		f.EscapedPath() != nr.EscapedPath() || f.Host() != nr.Host() || f.Method() != nr.Method() {
		t.Errorf("fast %q %v %d %q, net %q %v %d %q", f.Header("vary-me"), f.HeaderValues("vary-me"), f.ContentLength(), f.RawQuery(),
			nr.Header("vary-me"), nr.HeaderValues("vary-me"), nr.ContentLength(), nr.RawQuery())
	}
}
