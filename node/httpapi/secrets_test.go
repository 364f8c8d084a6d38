package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// memSecrets keeps values in memory, like the node's backend keeps them
// sealed: no method returns one.
type memSecrets struct {
	mu   sync.Mutex
	vals map[string][]byte
	ver  map[string]uint64
}

func (m *memSecrets) PutSecret(_ context.Context, c, name string, v []byte, cas *uint64) (SecretMeta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cas != nil && *cas != m.ver[name] {
		return SecretMeta{}, Errorf(http.StatusConflict, "conflict", "secret %q is not at version %d", name, *cas)
	}
	m.vals[name] = v
	m.ver[name]++
	return SecretMeta{Name: name, Cluster: c, Version: m.ver[name], UsedBy: []string{}}, nil
}

func (m *memSecrets) GetSecret(_ context.Context, c, name string) (SecretMeta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vals[name]; !ok {
		return SecretMeta{}, Errorf(http.StatusNotFound, "not_found", "secret %q not found", name)
	}
	return SecretMeta{Name: name, Cluster: c, Version: m.ver[name], UsedBy: []string{}}, nil
}

func (m *memSecrets) ListSecrets(_ context.Context, c string) ([]SecretMeta, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SecretMeta
	for n := range m.vals {
		out = append(out, SecretMeta{Name: n, Cluster: c, Version: m.ver[n]})
	}
	return out, nil
}

func (m *memSecrets) DeleteSecret(_ context.Context, c, name string, cas *uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.vals[name]; !ok {
		return Errorf(http.StatusNotFound, "not_found", "secret %q not found", name)
	}
	delete(m.vals, name)
	return nil
}

func (m *memSecrets) RewrapSecrets(_ context.Context, c string) (RewrapReport, error) {
	return RewrapReport{Cluster: c, Rewrapped: []string{}, Failed: []string{}}, nil
}

func TestSecretsRoutesNeedTheSecretsPolicy(t *testing.T) {
	sec := &memSecrets{vals: map[string][]byte{}, ver: map[string]uint64{}}
	st := &memState{svcs: map[string]dispatch.Service{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st),
		WithACL(&memTokens{byHash: map[string]Token{}}), WithSecrets(sec))
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &boot); err != nil || rec.Code != 200 {
		t.Fatalf("bootstrap: %d %s", rec.Code, rec.Body)
	}
	mint := func(policy string) []string {
		rec := req(t, a, "POST", "/v1/acl/tokens", `{"description":"`+policy+`","policies":["`+policy+`"]}`, "Authorization", "Bearer "+boot.SecretID)
		var tok struct {
			SecretID string `json:"secret_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || rec.Code != 200 {
			t.Fatalf("token %s: %d %s", policy, rec.Code, rec.Body)
		}
		return []string{"Authorization", "Bearer " + tok.SecretID}
	}
	secrets, manage := mint("secrets"), []string{"Authorization", "Bearer " + boot.SecretID}
	routes := []struct{ method, path, body string }{
		{"PUT", "/v1/secrets/db-pass", `{"value":"hunter2-long"}`},
		{"GET", "/v1/secrets/db-pass", ""},
		{"GET", "/v1/secrets", ""},
		{"POST", "/v1/secrets/rewrap", ""},
		{"DELETE", "/v1/secrets/db-pass", ""},
	}
	for _, policy := range []string{"read", "write", "run", "run:*"} {
		hdr := mint(policy)
		for _, r := range routes {
			if rec := req(t, a, r.method, r.path, r.body, hdr...); rec.Code != 403 {
				t.Fatalf("%s token: %s %s: %d %s, want 403", policy, r.method, r.path, rec.Code, rec.Body)
			}
		}
	}
	for _, r := range routes {
		if rec := req(t, a, r.method, r.path, r.body); rec.Code != 401 {
			t.Fatalf("no token: %s %s: %d", r.method, r.path, rec.Code)
		}
	}
	for _, hdr := range [][]string{secrets, manage} {
		for _, r := range routes {
			rec := req(t, a, r.method, r.path, r.body, hdr...)
			if rec.Code != 200 {
				t.Fatalf("%s %s: %d %s", r.method, r.path, rec.Code, rec.Body)
			}
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Fatalf("%s %s returned the value: %s", r.method, r.path, rec.Body)
			}
		}
	}
	if !ValidPolicy("secrets") {
		t.Fatal("secrets is not a valid policy")
	}
}

func TestSecretPutValidation(t *testing.T) {
	sec := &memSecrets{vals: map[string][]byte{}, ver: map[string]uint64{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithSecrets(sec))
	for _, c := range []struct {
		path, body string
		want       int
		says       string
	}{
		{"/v1/secrets/db-pass", `{}`, 400, "value: missing"},
		{"/v1/secrets/db-pass", `{"value":"abc"}`, 400, "value: shorter"},
		{"/v1/secrets/db-pass", `{"value":"a\u0000bcdef"}`, 400, "NUL"},
		{"/v1/secrets/db-pass", `{"value":"x` + strings.Repeat("y", dispatch.MaxSecretValue) + `"}`, 400, "longer"},
		{"/v1/secrets/db-pass", `{"value":"s3cret-value","extra":1}`, 400, "malformed"},
		{"/v1/secrets/bad%2Fname", `{"value":"s3cret-value"}`, 400, "secret name"},
		{"/v1/secrets/db-pass", `{"value":"s3cret-value"}`, 200, `"version":1`},
		{"/v1/secrets/db-pass?cas=7", `{"value":"s3cret-value"}`, 409, "version 7"},
	} {
		rec := req(t, a, "PUT", c.path, c.body)
		if rec.Code != c.want || !strings.Contains(rec.Body.String(), c.says) {
			t.Fatalf("PUT %s %.40s: %d %s, want %d %q", c.path, c.body, rec.Code, rec.Body, c.want, c.says)
		}
		if strings.Contains(rec.Body.String(), "s3cret") {
			t.Fatalf("answer shows the value: %s", rec.Body)
		}
	}
	if string(sec.vals["db-pass"]) != "s3cret-value" {
		t.Fatalf("stored %q", sec.vals["db-pass"])
	}
}
