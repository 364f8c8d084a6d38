package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
)

// oneToken is a TokenStore that knows one secret, granting run.
type oneToken struct{ secret string }

func (oneToken) ACLEnabled(context.Context, string) (bool, error) { return true, nil }
func (s oneToken) LookupSecret(ctx context.Context, cluster, hash string) (Token, error) {
	if hash != HashSecret(s.secret) {
		return Token{}, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	return Token{AccessorID: "a1", Policies: []string{PermRun}}, nil
}
func (oneToken) Bootstrap(context.Context, string) (Token, string, error) { return Token{}, "", nil }
func (oneToken) CreateToken(context.Context, string, Token) (Token, string, error) {
	return Token{}, "", nil
}
func (oneToken) ListTokens(context.Context, string) ([]Token, error) { return nil, nil }
func (oneToken) RevokeToken(context.Context, string, string) error   { return nil }

// proxyOnly is an ExecBackend that proxies every /svc/ call through e to
// upstream, as a runner of the service would: on the data plane in place
// (ProxyFast: runner.ServeInPlace, counted in native when set), else
// through ProxyHTTP.
type proxyOnly struct {
	ExecBackend
	e        *runner.Executor
	upstream string
	native   *atomic.Int64
	// decline: ProxyFast declines every call, as for a gateway hop, so
	// the data plane converts after deciding natively.
	decline bool
}

func (p proxyOnly) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error {
	if p.decline {
		// As over the gateway hop: only r is sent on, the server's own
		// request (FastRequest) is out of reach.
		w = struct{ http.ResponseWriter }{w}
	}
	return p.e.ServeProxy(w, r, p.upstream, path)
}

func (p proxyOnly) ProxyFast(ctx context.Context, w http.ResponseWriter, rc *fasthttp.RequestCtx, r Request,
	cluster, service, path string) (bool, error) {
	if p.e == nil || p.decline {
		return false, nil
	}
	served, _, err := p.e.ServeInPlace(ctx, rc, p.upstream, path)
	if served && p.native != nil {
		p.native.Add(1)
	}
	return served, err
}

var (
	_ ExecBackend = proxyOnly{}
	_ FastProxy   = proxyOnly{}
)

// fronts serves api on its three ways in: the API port (net/http), the
// data plane natively (fasthttp's request, read through Request) and the
// data plane converting every request to net/http's types first (h is then
// not the API, as for any handler). Trust rules are checked on all three.
func fronts(t *testing.T, api *API) map[string]string {
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return map[string]string{"api": srv.URL, "dataplane": startDataPlane(t, api, 4<<20),
		"dataplane-converted": startDataPlane(t, http.HandlerFunc(api.ServeHTTP), 4<<20)}
}

// TestUpstreamNeverSeesTheMeshgwToken: with ACLs on, the credential meshgw
// authenticated the call with is not forwarded, on either listener, while
// every other header is.
func TestUpstreamNeverSeesTheMeshgwToken(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("auth=%q token=%q custom=%q", r.Header.Get("Authorization"),
			r.Header.Get("X-Meshgw-Token"), r.Header.Get("X-Custom")))
	}))
	defer up.Close()
	var native atomic.Int64
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL, native: &native}))
	listeners := fronts(t, api)
	for name, base := range listeners {
		for _, tc := range []struct{ header, value, want string }{
			{"Authorization", "Bearer s3cret", `auth="" token="" custom="kept"`},
			{"X-Meshgw-Token", "s3cret", `auth="" token="" custom="kept"`},
		} {
			got.Store("")
			req := newReq(t, "GET", base+"/svc/web/x", nil)
			req.Header.Set(tc.header, tc.value)
			req.Header.Set("X-Custom", "kept")
			resp, body := send(t, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %s: %d %s", name, tc.header, resp.StatusCode, body)
			}
			if got.Load() != tc.want {
				t.Errorf("%s, token in %s: upstream saw %v, want %s", name, tc.header, got.Load(), tc.want)
			}
		}
	}
	// Without ACLs meshgw reads no Authorization: it is the upstream's.
	var openNative atomic.Int64
	open := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL, native: &openNative}))
	for name, base := range fronts(t, open) {
		got.Store("")
		req := newReq(t, "GET", base+"/svc/web/x", nil)
		req.Header.Set("Authorization", "Bearer upstream-own")
		req.Header.Set("X-Meshgw-Token", "x")
		if resp, body := send(t, req); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s, no ACL: %d %s", name, resp.StatusCode, body)
		}
		if want := `auth="Bearer upstream-own" token="" custom=""`; got.Load() != want {
			t.Errorf("%s, no ACL: upstream saw %v, want %s", name, got.Load(), want)
		}
	}
	if native.Load() != 2 || openNative.Load() != 1 {
		t.Errorf("served in place on the data plane: %d and %d calls, want 2 and 1 (its own)", native.Load(), openNative.Load())
	}
}

// TestProxyPathStaysUnderTheBase: a path that could climb out of the
// upstream's base path is refused with 400 bad_path on both listeners and
// never reaches the upstream; a plain one is joined under the base.
func TestProxyPathStaysUnderTheBase(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.RequestURI)
	}))
	defer up.Close()
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL + "/public"}))
	listeners := fronts(t, api)
	for name, base := range listeners {
		for _, p := range []string{"%2e%2e/private/secret", "%2E%2e/x", "a/%2e%2e/%2e%2e/x",
			"..%2fprivate", "..%5cprivate", "%252e%252e/private", "a%00b", "%2e/x"} {
			got.Store("")
			resp, body := send(t, newReq(t, "GET", base+"/svc/web/"+p, nil))
			if resp.StatusCode != http.StatusBadRequest || errorCode(t, body) != "bad_path" {
				t.Errorf("%s %s: %d %s, want 400 bad_path", name, p, resp.StatusCode, body)
			}
			if got.Load() != "" {
				t.Errorf("%s %s: upstream saw %v", name, p, got.Load())
			}
		}
		resp, body := send(t, newReq(t, "GET", base+"/svc/web/a/b%20c", nil))
		if resp.StatusCode != http.StatusOK || got.Load() != "/public/a/b%20c" {
			t.Errorf("%s: %d %s, upstream saw %v", name, resp.StatusCode, body, got.Load())
		}
	}
}

// statePolicies answers ProxyPolicy from a memState, as node does from its
// service cache: an unknown service has the zero policy.
type statePolicies struct{ m *memState }

func (p statePolicies) ProxyPolicy(ctx context.Context, cluster, name string) (ProxyPolicy, error) {
	svc, err := p.m.GetService(ctx, cluster, name)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusNotFound {
			return ProxyPolicy{}, nil
		}
		return ProxyPolicy{}, err
	}
	return ProxyPolicy{Public: svc.Public, PassAuthorization: svc.PassAuthorization}, nil
}

// policyAPI is an -acl API knowing the secret s3cret (run only) with the
// http services pub (public), pass (pass_authorization) and priv, all
// proxied to upstream; it returns the API and data-plane base URLs.
func policyAPI(t *testing.T, upstream string) map[string]string {
	ms := &memState{svcs: map[string]dispatch.Service{}}
	for _, s := range []dispatch.Service{
		{Name: "pub", Type: dispatch.TypeHTTP, Upstream: upstream, Public: true},
		{Name: "pass", Type: dispatch.TypeHTTP, Upstream: upstream, PassAuthorization: true},
		{Name: "priv", Type: dispatch.TypeHTTP, Upstream: upstream},
	} {
		if _, err := ms.PutService(context.Background(), "default", s, nil); err != nil {
			t.Fatal(err)
		}
	}
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithState(ms), WithProxyPolicies(statePolicies{ms}),
		WithExec(proxyOnly{e: executor(t, nil), upstream: upstream}))
	hop := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithState(ms), WithProxyPolicies(statePolicies{ms}),
		WithExec(proxyOnly{e: executor(t, nil), upstream: upstream, decline: true}))
	f := fronts(t, api)
	f["dataplane-declined"] = startDataPlane(t, hop, 4<<20)
	return f
}

// TestPublicServiceUnderACL: a public http service answers /svc/ without
// a token on both listeners (and a token sent anyway does not reach its
// upstream), a non-public one is 401, and the public one's definition
// still needs a token.
func TestPublicServiceUnderACL(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("auth=%q token=%q", r.Header.Get("Authorization"), r.Header.Get("X-Meshgw-Token")))
	}))
	defer up.Close()
	listeners := policyAPI(t, up.URL)
	for name, base := range listeners {
		if resp, body := send(t, newReq(t, "GET", base+"/svc/pub/x", nil)); resp.StatusCode != 200 {
			t.Errorf("%s: public service without a token: %d %s", name, resp.StatusCode, body)
		}
		if resp, body := send(t, newReq(t, "GET", base+"/svc/priv/x", nil)); resp.StatusCode != 401 {
			t.Errorf("%s: private service without a token: %d %s, want 401", name, resp.StatusCode, body)
		}
		if resp, body := send(t, newReq(t, "GET", base+"/svc/nosuch/x", nil)); resp.StatusCode != 401 {
			t.Errorf("%s: unknown service without a token: %d %s, want 401", name, resp.StatusCode, body)
		}
		got.Store("")
		req := newReq(t, "GET", base+"/svc/pub/x", nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		req.Header.Set("X-Meshgw-Token", "s3cret")
		if resp, body := send(t, req); resp.StatusCode != 200 || got.Load() != `auth="" token=""` {
			t.Errorf("%s: public service with a token: %d %s, upstream saw %v", name, resp.StatusCode, body, got.Load())
		}
	}
	if resp, body := send(t, newReq(t, "GET", listeners["api"]+"/v1/services/pub", nil)); resp.StatusCode != 401 {
		t.Errorf("definition of the public service without a token: %d %s, want 401", resp.StatusCode, body)
	}
	for _, p := range []string{"/v1/services", "/v1/executions"} {
		if resp, body := send(t, newReq(t, "GET", listeners["api"]+p, nil)); resp.StatusCode != 401 {
			t.Errorf("%s without a token: %d %s, want 401", p, resp.StatusCode, body)
		}
	}
}

// TestPassAuthorization: a pass_authorization service's upstream gets the
// caller's own Authorization; meshgw takes its token from X-Meshgw-Token
// only (and strips it), on both listeners.
func TestPassAuthorization(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("auth=%q token=%q", r.Header.Get("Authorization"), r.Header.Get("X-Meshgw-Token")))
	}))
	defer up.Close()
	for name, base := range policyAPI(t, up.URL) {
		got.Store("")
		req := newReq(t, "GET", base+"/svc/pass/x", nil)
		req.Header.Set("Authorization", "Bearer upstream-own")
		req.Header.Set("X-Meshgw-Token", "s3cret")
		if resp, body := send(t, req); resp.StatusCode != 200 || got.Load() != `auth="Bearer upstream-own" token=""` {
			t.Errorf("%s: %d %s, upstream saw %v", name, resp.StatusCode, body, got.Load())
		}
		req = newReq(t, "GET", base+"/svc/pass/x", nil)
		req.Header.Set("Authorization", "Bearer s3cret") // not meshgw's header for this service
		if resp, body := send(t, req); resp.StatusCode != 401 {
			t.Errorf("%s: token in Authorization only: %d %s, want 401", name, resp.StatusCode, body)
		}
		got.Store("")
		req = newReq(t, "GET", base+"/svc/priv/x", nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		if resp, body := send(t, req); resp.StatusCode != 200 || got.Load() != `auth="" token=""` {
			t.Errorf("%s: other service: %d %s, upstream saw %v", name, resp.StatusCode, body, got.Load())
		}
	}
}

// TestPublicIsForHTTPServices: an exec service cannot be public nor pass
// Authorization: 400 naming the field.
func TestPublicIsForHTTPServices(t *testing.T) {
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(&memState{svcs: map[string]dispatch.Service{}}))
	for _, field := range []string{"public", "pass_authorization"} {
		rec := req(t, api, "PUT", "/v1/services/x", `{"type":"exec","command":["true"],"`+field+`":true}`)
		var e Error
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != 400 || e.Path != field || !strings.Contains(e.Message, field) {
			t.Errorf("exec service with %s: %d %s", field, rec.Code, rec.Body)
		}
	}
	rec := req(t, api, "PUT", "/v1/services/x", `{"type":"http","upstream":"http://h:1","public":true,"pass_authorization":true}`)
	if rec.Code != 200 {
		t.Errorf("public http service: %d %s", rec.Code, rec.Body)
	}
}

type failingPolicies struct{}

func (failingPolicies) ProxyPolicy(context.Context, string, string) (ProxyPolicy, error) {
	return ProxyPolicy{}, Errorf(http.StatusServiceUnavailable, "no_quorum", "no quorum")
}

// TestUnreadablePolicyFailsClosed: when a service's definition cannot be
// read, its /svc/ calls are checked as a private service's: 401 without a
// token (as before public services existed), and a token's Bearer is
// still stripped.
func TestUnreadablePolicyFailsClosed(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("auth=%q", r.Header.Get("Authorization")))
	}))
	defer up.Close()
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithProxyPolicies(failingPolicies{}), WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL}))
	if rec := req(t, api, "GET", "/svc/pub/x", ""); rec.Code != 401 {
		t.Errorf("no token: %d %s, want 401", rec.Code, rec.Body)
	}
	if rec := req(t, api, "GET", "/svc/pub/x", "", "Authorization", "Bearer s3cret"); rec.Code != 200 || got.Load() != `auth=""` {
		t.Errorf("token: %d %s, upstream saw %v", rec.Code, rec.Body, got.Load())
	}
}
