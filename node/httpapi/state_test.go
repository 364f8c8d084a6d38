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
	cur, ok := m.svcs[cluster+"/"+svc.Name]
	if cas != nil && (*cas == 0 && ok || *cas != 0 && (!ok || cur.Version != *cas)) {
		return 0, Errorf(http.StatusConflict, "conflict", "version mismatch")
	}
	m.rev++
	svc.Version = m.rev
	m.svcs[cluster+"/"+svc.Name] = svc
	return m.rev, nil
}
func (m *memState) GetService(ctx context.Context, cluster, name string) (dispatch.Service, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.svcs[cluster+"/"+name]
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

// memTokens is an in-memory TokenStore of several clusters' groups, as
// the agent's is: tokens and the ACL switch are per cluster.
type memTokens struct {
	mu     sync.Mutex
	byHash map[string]Token // cluster + " " + hash
	on     map[string]bool  // cluster → its state says ACLs are on
	down   map[string]bool  // cluster → its state cannot be read
}

func (m *memTokens) ACLEnabled(ctx context.Context, cluster string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down[cluster] {
		return false, Errorf(http.StatusServiceUnavailable, "no_quorum", "cluster %s: no quorum", cluster)
	}
	return m.on[cluster], nil
}
func (m *memTokens) enable(cluster string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.on == nil {
		m.on = map[string]bool{}
	}
	m.on[cluster] = true
}
func (m *memTokens) LookupSecret(ctx context.Context, cluster, hash string) (Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.byHash[cluster+" "+hash]
	if !ok {
		return t, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	return t, nil
}
func (m *memTokens) Bootstrap(ctx context.Context, cluster string) (Token, string, error) {
	m.enable(cluster)
	return m.CreateToken(ctx, cluster, Token{Description: cluster + "-boot", Policies: []string{PermManage}})
}
func (m *memTokens) CreateToken(ctx context.Context, cluster string, t Token) (Token, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	secret := "s" + t.Description
	t.AccessorID = "a" + t.Description
	m.byHash[cluster+" "+HashSecret(secret)] = t
	return t, secret, nil
}
func (m *memTokens) ListTokens(ctx context.Context, cluster string) ([]Token, error) {
	return nil, nil
}
func (m *memTokens) RevokeToken(ctx context.Context, cluster, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, t := range m.byHash {
		if t.AccessorID == id && strings.HasPrefix(h, cluster+" ") {
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

// TestTokenBelongsToItsCluster: a request is authorized by the ACL state
// and the tokens of the cluster it is for (?cluster=), whichever node
// serves it; a node without -acl enforces a cluster whose state says ACLs
// are on, and is no way into one.
func TestTokenBelongsToItsCluster(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}} // both clusters' groups
	node := func(cluster string, acl bool) *API {
		o := WithTokens(tok)
		if acl {
			o = WithACL(tok)
		}
		return New(DefaultConfig(), &fakeBackend{cluster: cluster}, zerolog.Nop(), WithState(st), o)
	}
	aOpen, aACL, bACL := node("a", false), node("a", true), node("b", true)
	tok.enable("b") // what b's -acl agents record in b's group
	bearer := func(secret string) []string { return []string{"Authorization", "Bearer " + secret} }
	boot := func(a *API, target string) string {
		t.Helper()
		rec := req(t, a, "POST", target, "")
		var out struct {
			SecretID string `json:"secret_id"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &out); rec.Code != 200 || out.SecretID == "" {
			t.Fatalf("bootstrap %s: %d %s", target, rec.Code, rec.Body)
		}
		return out.SecretID
	}
	def := `{"name":"x","type":"exec","command":["true"]}`
	expect := func(what string, a *API, method, target string, want int, hdr ...string) {
		t.Helper()
		if rec := req(t, a, method, target, def, hdr...); rec.Code != want {
			t.Errorf("%s: %s %s: %d %s, want %d", what, method, target, rec.Code, rec.Body, want)
		}
	}

	// Cluster a has no ACLs: its node without -acl is open for a, not for b.
	expect("a open", aOpen, "GET", "/v1/services", 200)
	for _, r := range [][2]string{{"GET", "/v1/services?cluster=b"}, {"PUT", "/v1/services/x?cluster=b"},
		{"POST", "/v1/services/x/run?cluster=b"}, {"GET", "/svc/x/y?cluster=b"},
		{"GET", "/v1/executions?cluster=b"}, {"GET", "/v1/snapshot?cluster=b"}} {
		expect("b through a node of a without -acl, no token", aOpen, r[0], r[1], 401)
	}
	expect("minting tokens in an open cluster", aOpen, "POST", "/v1/acl/tokens", 400)
	expect("bootstrapping an open cluster", aOpen, "POST", "/v1/acl/bootstrap", 400)
	expect("bootstrapping b through a node of a", aOpen, "POST", "/v1/acl/bootstrap?cluster=b", 403)
	expect("bootstrapping b through a node of a", aACL, "POST", "/v1/acl/bootstrap?cluster=b", 403)
	expect("two clusters named", aOpen, "GET", "/v1/services?cluster=a&cluster=b", 400)
	expect("a node with -acl checks every cluster", aACL, "GET", "/v1/services?cluster=c", 401)

	bTok := boot(bACL, "/v1/acl/bootstrap")
	aTok := boot(aACL, "/v1/acl/bootstrap") // records a's ACLs as on
	for _, n := range []struct {
		name string
		api  *API
	}{{"node of a without -acl", aOpen}, {"node of a with -acl", aACL}, {"node of b", bACL}} {
		expect("a's token on b, "+n.name, n.api, "GET", "/v1/services?cluster=b", 401, bearer(aTok)...)
		expect("a's token on b, "+n.name, n.api, "PUT", "/v1/services/x?cluster=b", 401, bearer(aTok)...)
		expect("a's token on b, "+n.name, n.api, "GET", "/svc/x/y?cluster=b", 401, bearer(aTok)...)
		expect("b's token on b, "+n.name, n.api, "GET", "/v1/services?cluster=b", 200, bearer(bTok)...)
		expect("b's token on a, "+n.name, n.api, "GET", "/v1/services?cluster=a", 401, bearer(bTok)...)
	}
	expect("a's state says ACLs on: a's node without -acl checks", aOpen, "GET", "/v1/services", 401)
	expect("b's token on its own node, no ?cluster=", bACL, "GET", "/v1/services", 200, bearer(bTok)...)
	expect("a's token on b's node, no ?cluster=", bACL, "GET", "/v1/services", 401, bearer(aTok)...)

	// b's token, through a node of a, acts on b and only on b.
	expect("b's token writing in b through a", aOpen, "PUT", "/v1/services/x?cluster=b", 200, bearer(bTok)...)
	if _, ok := st.svcs["b/x"]; !ok || len(st.svcs) != 1 {
		t.Errorf("the write landed in %v, want b/x only", st.svcs)
	}
	rec := req(t, aACL, "POST", "/v1/acl/tokens?cluster=b", `{"description":"b-reader","policies":["read"]}`, bearer(bTok)...)
	if rec.Code != 200 {
		t.Fatalf("b's token minting a token of b through a: %d %s", rec.Code, rec.Body)
	}
	expect("token minted for b, on b", bACL, "GET", "/v1/services", 200, bearer("sb-reader")...)
	expect("token minted for b, on a", aACL, "GET", "/v1/services", 401, bearer("sb-reader")...)
}

// TestUnreadableACLStateKeepsNodeViewsOpen: while a cluster's state cannot
// be read (no group yet, no quorum), a node without -acl still shows its
// own read-only views, and refuses everything else with a 503.
func TestUnreadableACLStateKeepsNodeViewsOpen(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}, down: map[string]bool{"default": true}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithTokens(tok))
	for _, p := range []string{"/v1/members", "/v1/runners", "/v1/status", "/v1/health"} {
		if rec := req(t, a, "GET", p, ""); rec.Code != 200 {
			t.Errorf("GET %s: %d %s, want 200", p, rec.Code, rec.Body)
		}
	}
	for _, r := range [][2]string{{"GET", "/v1/services"}, {"PUT", "/v1/services/x"}, {"POST", "/v1/agent/leave"},
		{"GET", "/v1/keyring"}, {"POST", "/v1/acl/tokens"}} {
		if rec := req(t, a, r[0], r[1], `{"name":"x","type":"exec","command":["true"]}`); rec.Code != 503 {
			t.Errorf("%s %s: %d %s, want 503", r[0], r[1], rec.Code, rec.Body)
		}
	}
}
