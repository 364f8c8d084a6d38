package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/rs/zerolog"
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
// upstream, as a runner of the service would.
type proxyOnly struct {
	ExecBackend
	e        *runner.Executor
	upstream string
}

func (p proxyOnly) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error {
	return p.e.ServeProxy(w, r, p.upstream, path)
}

var _ ExecBackend = proxyOnly{}

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
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL}))
	srv := httptest.NewServer(api)
	defer srv.Close()
	listeners := map[string]string{"api": srv.URL, "dataplane": startDataPlane(t, api, 4<<20)}
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
	open := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(),
		WithExec(proxyOnly{e: executor(t, nil), upstream: up.URL}))
	base := startDataPlane(t, open, 4<<20)
	req := newReq(t, "GET", base+"/svc/web/x", nil)
	req.Header.Set("Authorization", "Bearer upstream-own")
	req.Header.Set("X-Meshgw-Token", "x")
	if resp, body := send(t, req); resp.StatusCode != http.StatusOK {
		t.Fatalf("no ACL: %d %s", resp.StatusCode, body)
	}
	if want := `auth="Bearer upstream-own" token="" custom=""`; got.Load() != want {
		t.Errorf("no ACL: upstream saw %v, want %s", got.Load(), want)
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
	srv := httptest.NewServer(api)
	defer srv.Close()
	listeners := map[string]string{"api": srv.URL, "dataplane": startDataPlane(t, api, 4<<20)}
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
