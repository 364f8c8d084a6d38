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

type memDecorators struct {
	mu      sync.Mutex
	schemas map[string][]byte
	inUse   map[string]string
}

func (m *memDecorators) PutDecorator(_ context.Context, c, name string, schema []byte, cas *uint64) (Decorator, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.schemas[name] = schema
	return Decorator{Name: name, Cluster: c, Version: 1, Schema: schema, UsedBy: []string{}}, nil
}

func (m *memDecorators) GetDecorator(_ context.Context, c, name string) (Decorator, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.schemas[name]
	if !ok {
		return Decorator{}, Errorf(http.StatusNotFound, "not_found", "decorator %q not found", name)
	}
	return Decorator{Name: name, Cluster: c, Version: 1, Schema: s, UsedBy: []string{}}, nil
}

func (m *memDecorators) ListDecorators(_ context.Context, c string) ([]Decorator, error) {
	return nil, nil
}

func (m *memDecorators) DeleteDecorator(_ context.Context, c, name string, cas *uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.inUse[name]; u != "" {
		return Errorf(http.StatusConflict, "in_use", "decorator %q is used by service %q", name, u)
	}
	delete(m.schemas, name)
	return nil
}

func TestDecoratorsRoutesAccessAndValidation(t *testing.T) {
	dec := &memDecorators{schemas: map[string][]byte{}, inUse: map[string]string{"used": "svc-a"}}
	st := &memState{svcs: map[string]dispatch.Service{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st),
		WithACL(&memTokens{byHash: map[string]Token{}}), WithDecorators(dec))
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
	read, write, run, secrets := mint("read"), mint("write"), mint("run"), mint("secrets")
	schema := `{"type":"object","required":["n"]}`
	for _, c := range []struct {
		what         string
		method, path string
		body         string
		hdr          []string
		want         int
	}{
		{"no token", "GET", "/v1/decorators", "", nil, 401},
		{"read puts", "PUT", "/v1/decorators/order", schema, read, 403},
		{"run puts", "PUT", "/v1/decorators/order", schema, run, 403},
		{"secrets puts", "PUT", "/v1/decorators/order", schema, secrets, 403},
		{"run reads", "GET", "/v1/decorators/order", "", run, 403},
		{"run lists", "GET", "/v1/decorators", "", run, 403},
		{"secrets lists", "GET", "/v1/decorators", "", secrets, 403},
		{"run deletes", "DELETE", "/v1/decorators/order", "", run, 403},
		{"secrets deletes", "DELETE", "/v1/decorators/order", "", secrets, 403},
		{"write puts", "PUT", "/v1/decorators/order", schema, write, 200},
		{"read gets", "GET", "/v1/decorators/order", "", read, 200},
		{"read lists", "GET", "/v1/decorators", "", read, 200},
		{"read deletes", "DELETE", "/v1/decorators/order", "", read, 403},
		{"bad schema", "PUT", "/v1/decorators/bad", `{"type": 5}`, write, 400},
		{"not JSON", "PUT", "/v1/decorators/bad", `{`, write, 400},
		{"bad name", "PUT", "/v1/decorators/-x", schema, write, 400},
		{"in use", "DELETE", "/v1/decorators/used", "", write, 409},
		{"write deletes", "DELETE", "/v1/decorators/order", "", write, 200},
	} {
		rec := req(t, a, c.method, c.path, c.body, c.hdr...)
		if rec.Code != c.want {
			t.Fatalf("%s: %s %s: %d %s, want %d", c.what, c.method, c.path, rec.Code, rec.Body, c.want)
		}
		if c.what == "bad schema" && !strings.Contains(rec.Body.String(), `"path":"schema"`) {
			t.Fatalf("bad schema answer does not name the schema: %s", rec.Body)
		}
		if c.what == "in use" && !strings.Contains(rec.Body.String(), "svc-a") {
			t.Fatalf("in-use answer does not name the service: %s", rec.Body)
		}
	}
}
