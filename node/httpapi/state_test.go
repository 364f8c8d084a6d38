package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// memState is an in-memory StateBackend with versions and CAS.
type memState struct {
	mu   sync.Mutex
	rev  uint64
	svcs map[string]dispatch.Service
}

func (m *memState) PutService(ctx context.Context, cluster string, svc dispatch.Service, cas *uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.svcs[svc.Name]
	if cas != nil && (*cas == 0 && ok || *cas != 0 && (!ok || cur.Version != *cas)) {
		return 0, Errorf(http.StatusConflict, "conflict", "version mismatch")
	}
	m.rev++
	svc.Version = m.rev
	m.svcs[svc.Name] = svc
	return m.rev, nil
}
func (m *memState) GetService(ctx context.Context, cluster, name string) (dispatch.Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.svcs[name]
	if !ok {
		return s, Errorf(http.StatusNotFound, "not_found", "service %q not found", name)
	}
	return s, nil
}
func (m *memState) ListServices(ctx context.Context, cluster string) ([]dispatch.Service, error) {
	return nil, nil
}
func (m *memState) DeleteService(ctx context.Context, cluster, name string, cas *uint64) error {
	return nil
}
func (m *memState) Clusters(ctx context.Context) ([]Cluster, error)              { return nil, nil }
func (m *memState) Snapshot(ctx context.Context, cluster string) ([]byte, error) { return nil, nil }
func (m *memState) Restore(ctx context.Context, cluster string, data []byte) error {
	return nil
}

func req(t *testing.T, h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestServicePutGetCASAndValidation(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	a := New(Config{MaxBodyBytes: 8 << 10}, &fakeBackend{}, zerolog.Nop(), WithState(st))
	good := `{"name":"echo","type":"exec","command":["cat"]}`
	rec := req(t, a, "PUT", "/v1/services/echo", good)
	if rec.Code != 200 {
		t.Fatalf("put: %d %s", rec.Code, rec.Body)
	}
	var out struct{ Version uint64 }
	json.Unmarshal(rec.Body.Bytes(), &out)
	if out.Version == 0 {
		t.Fatalf("no version in %s", rec.Body)
	}
	if rec := req(t, a, "PUT", "/v1/services/echo?cas=999", good); rec.Code != 409 {
		t.Fatalf("stale cas: %d", rec.Code)
	}
	if rec := req(t, a, "GET", "/v1/services/echo", ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"version"`) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	if rec := req(t, a, "GET", "/v1/services/nope", ""); rec.Code != 404 {
		t.Fatalf("unknown: %d", rec.Code)
	}
	bad := map[string]string{
		`{"name":"echo","type":"exec"}`:                                "command",
		`{"name":"echo","type":"teleport","command":["x"]}`:            "type",
		`{"name":"other","type":"exec","command":["x"]}`:               "does not match",
		`{"name":"echo","type":"exec","command":["x"],"timeout":"1y"}`: "1y",
		`{not json`: "malformed",
		`{"name":"echo","type":"exec","command":["x"],"decorator":{"type":"nonsense"}}`: "decorator",
	}
	for body, want := range bad {
		rec := req(t, a, "PUT", "/v1/services/echo", body)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d %s, want 400 naming %q", body, rec.Code, rec.Body, want)
		}
	}
	if rec := req(t, a, "PUT", "/v1/services/echo", `{"name":"echo","type":"exec","command":["`+strings.Repeat("a", 9000)+`"]}`); rec.Code != 413 {
		t.Fatalf("huge body: %d", rec.Code)
	}
	if rec := req(t, a, "PUT", "/v1/services/bad%20name", good); rec.Code != 400 {
		t.Fatalf("bad name: %d", rec.Code)
	}
	if rec := req(t, a, "PUT", "/v1/services/echo?cas=abc", good); rec.Code != 400 {
		t.Fatalf("bad cas: %d", rec.Code)
	}
}

// memTokens is an in-memory TokenStore.
type memTokens struct{ byHash map[string]Token }

func (m *memTokens) LookupSecret(ctx context.Context, hash string) (Token, error) {
	t, ok := m.byHash[hash]
	if !ok {
		return t, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	return t, nil
}
func (m *memTokens) Bootstrap(ctx context.Context) (Token, string, error) {
	return m.CreateToken(ctx, Token{Policies: []string{PermManage}})
}
func (m *memTokens) CreateToken(ctx context.Context, t Token) (Token, string, error) {
	secret := "s" + t.Description
	t.AccessorID = "a" + t.Description
	m.byHash[HashSecret(secret)] = t
	return t, secret, nil
}
func (m *memTokens) ListTokens(ctx context.Context) ([]Token, error) { return nil, nil }
func (m *memTokens) RevokeToken(ctx context.Context, id string) error {
	for h, t := range m.byHash {
		if t.AccessorID == id {
			delete(m.byHash, h)
		}
	}
	return nil
}

func TestACL(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok))
	if rec := req(t, a, "GET", "/v1/health", ""); rec.Code != 200 {
		t.Fatalf("health must stay open: %d", rec.Code)
	}
	if rec := req(t, a, "GET", "/v1/members", ""); rec.Code != 401 {
		t.Fatalf("no token: %d", rec.Code)
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	json.Unmarshal(rec.Body.Bytes(), &boot)
	if rec.Code != 200 || boot.SecretID == "" {
		t.Fatalf("bootstrap: %d %s", rec.Code, rec.Body)
	}
	mgmt := []string{"Authorization", "Bearer " + boot.SecretID}
	if rec := req(t, a, "GET", "/v1/members", "", mgmt...); rec.Code != 200 {
		t.Fatalf("management token: %d", rec.Code)
	}
	rec = req(t, a, "POST", "/v1/acl/tokens", `{"description":"runner","policies":["run:deploy-*","read"]}`, mgmt...)
	var runTok struct {
		SecretID string `json:"secret_id"`
	}
	json.Unmarshal(rec.Body.Bytes(), &runTok)
	if rec.Code != 200 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	rt := []string{"Authorization", "Bearer " + runTok.SecretID}
	if rec := req(t, a, "PUT", "/v1/services/x", `{"name":"x","type":"exec","command":["true"]}`, rt...); rec.Code != 403 {
		t.Fatalf("run-only token writing a service: %d", rec.Code)
	}
	if rec := req(t, a, "GET", "/v1/services/x", "", rt...); rec.Code == 401 || rec.Code == 403 {
		t.Fatalf("read allowed: %d", rec.Code)
	}
	if rec := req(t, a, "POST", "/v1/acl/tokens", `{"policies":["root"]}`, mgmt...); rec.Code != 400 {
		t.Fatalf("unknown policy: %d", rec.Code)
	}
	if rec := req(t, a, "DELETE", "/v1/acl/tokens/arunner", "", mgmt...); rec.Code != 200 {
		t.Fatalf("revoke: %d", rec.Code)
	}
	if rec := req(t, a, "GET", "/v1/members", "", rt...); rec.Code != 401 {
		t.Fatalf("revoked token: %d", rec.Code)
	}
}

func TestTokenAllows(t *testing.T) {
	tk := Token{Policies: []string{"run:deploy-*", "read"}}
	if !tk.Allows(PermRun, "deploy-web") || tk.Allows(PermRun, "backup") || tk.Allows(PermWrite, "") || !tk.Allows(PermRead, "") {
		t.Fatal("policy matching is wrong")
	}
	if !(&Token{Policies: []string{PermManage}}).Allows(PermWrite, "") {
		t.Fatal("manage implies everything")
	}
}
