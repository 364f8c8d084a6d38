package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// memRepos is a RepositoryBackend over a map, per cluster, with versions
// and CAS like the store's.
type memRepos struct {
	mu    sync.Mutex
	repos map[string]dispatch.Repository // cluster/name
	ver   uint64
}

func (m *memRepos) PutRepository(_ context.Context, c string, r dispatch.Repository, cas *uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.repos[c+"/"+r.Name]
	if cas != nil && (*cas == 0 && ok || *cas != 0 && cur.Version != *cas) {
		return 0, Errorf(http.StatusConflict, "conflict", "repository %q is not at version %d", r.Name, *cas)
	}
	m.ver++
	r.Version = m.ver
	m.repos[c+"/"+r.Name] = r
	return m.ver, nil
}

func (m *memRepos) GetRepository(_ context.Context, c, name string) (dispatch.Repository, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.repos[c+"/"+name]
	if !ok {
		return r, Errorf(http.StatusNotFound, "not_found", "repository %q not found", name)
	}
	return r, nil
}

func (m *memRepos) ListRepositories(_ context.Context, c string) ([]dispatch.Repository, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dispatch.Repository
	for k, r := range m.repos {
		if strings.HasPrefix(k, c+"/") {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *memRepos) DeleteRepository(_ context.Context, c, name string, cas *uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.repos[c+"/"+name]; !ok {
		return Errorf(http.StatusNotFound, "not_found", "repository %q not found", name)
	}
	delete(m.repos, c+"/"+name)
	return nil
}

func TestRepositoryRoutesAccessValidationAndCluster(t *testing.T) {
	repos := &memRepos{repos: map[string]dispatch.Repository{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(&memTokens{byHash: map[string]Token{}}), WithRepositories(repos))
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
	read, run, write := mint("read"), mint("run"), mint("write")
	def := `{"name":"ops","url":"https://git.example/ops.git","ref":"main","credentials":{"secret":"git-token"},"poll":"30s"}`
	for _, c := range []struct {
		what, method, path, body string
		hdr                      []string
		want                     int
	}{
		{"put without a token", "PUT", "/v1/repositories/ops", def, nil, 401},
		{"put with read", "PUT", "/v1/repositories/ops", def, read, 403},
		{"put with run", "PUT", "/v1/repositories/ops", def, run, 403},
		{"put with write", "PUT", "/v1/repositories/ops", def, write, 200},
		{"a token of this cluster in another", "PUT", "/v1/repositories/ops?cluster=c2", def, write, 401},
		{"get without a token", "GET", "/v1/repositories/ops", "", nil, 401},
		{"get with run", "GET", "/v1/repositories/ops", "", run, 403},
		{"get with read", "GET", "/v1/repositories/ops", "", read, 200},
		{"list with run", "GET", "/v1/repositories", "", run, 403},
		{"list with read", "GET", "/v1/repositories", "", read, 200},
		{"delete with read", "DELETE", "/v1/repositories/ops", "", read, 403},
		{"get unknown", "GET", "/v1/repositories/nope", "", read, 404},
		{"bad url", "PUT", "/v1/repositories/x", `{"url":"ssh://h/x","ref":"main"}`, write, 400},
		{"name mismatch", "PUT", "/v1/repositories/x", def, write, 400},
		{"stale cas", "PUT", "/v1/repositories/ops?cas=999", def, write, 409},
		{"delete with write", "DELETE", "/v1/repositories/ops", "", write, 200},
		{"delete again", "DELETE", "/v1/repositories/ops", "", write, 404},
	} {
		rec := req(t, a, c.method, c.path, c.body, c.hdr...)
		if rec.Code != c.want {
			t.Fatalf("%s: %d %s, want %d", c.what, rec.Code, rec.Body, c.want)
		}
	}
	rec = req(t, a, "PUT", "/v1/repositories/x", `{"url":"https://h/x","ref":"main","poll":"1ms"}`, write...)
	var e struct{ Error, Code, Path string }
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != "invalid_repository" || e.Path != "poll" ||
		!strings.HasPrefix(e.Error, "invalid repository: poll:") {
		t.Errorf("bad poll: %d %s", rec.Code, rec.Body)
	}
	// The path's name fills a body without one.
	if rec := req(t, a, "PUT", "/v1/repositories/y", `{"url":"file:///srv/y.git","ref":"v1"}`, write...); rec.Code != 200 {
		t.Errorf("nameless body: %d %s", rec.Code, rec.Body)
	}
	if _, ok := repos.repos["c2/ops"]; ok {
		t.Error("a refused write reached another cluster")
	}
	rec = req(t, a, "GET", "/v1/repositories", "", read...)
	var list []dispatch.Repository
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 1 || list[0].Name != "y" || list[0].Ref != "v1" {
		t.Errorf("list: %s", rec.Body)
	}
}
