package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

type fakeBackend struct {
	cluster string // "" is "default"
	members []Member
	ready   error
	left    bool
}

func (f *fakeBackend) Ready() error { return f.ready }
func (f *fakeBackend) LocalCluster() string {
	if f.cluster == "" {
		return "default"
	}
	return f.cluster
}
func (f *fakeBackend) Members(flt MemberFilter) []Member {
	var out []Member
	for _, m := range f.members {
		if flt.Cluster != "" && m.Cluster != flt.Cluster || flt.Status != "" && m.Status != flt.Status {
			continue
		}
		if flt.Role != "" {
			has := false
			for _, r := range m.Roles {
				has = has || r == flt.Role
			}
			if !has {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}
func (f *fakeBackend) Status(ctx context.Context) (Status, error) {
	return Status{Node: "n1", Cluster: "default"}, nil
}
func (f *fakeBackend) Leave(ctx context.Context) error { f.left = true; return nil }

func newTestAPI() (*API, *fakeBackend) {
	b := &fakeBackend{members: []Member{
		{Name: "a", Status: "alive", Cluster: "default", Roles: []string{"gateway", "runner"}},
		{Name: "b", Status: "failed", Cluster: "default", Roles: []string{"runner"}},
		{Name: "c", Status: "alive", Cluster: "other", Roles: []string{"gateway"}},
	}}
	return New(DefaultConfig(), b, zerolog.Nop()), b
}

func do(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestMembersAndRunnersFilters(t *testing.T) {
	a, _ := newTestAPI()
	cases := map[string][]string{
		"/v1/members":                 {"a", "b", "c"},
		"/v1/members?status=alive":    {"a", "c"},
		"/v1/members?cluster=other":   {"c"},
		"/v1/members?role=runner":     {"a", "b"},
		"/v1/runners":                 {"a", "b"},
		"/v1/runners?status=alive":    {"a"},
		"/v1/runners?cluster=nothing": {},
	}
	for target, want := range cases {
		rec := do(t, a, "GET", target)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
		}
		var got []Member
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		var names []string
		for _, m := range got {
			names = append(names, m.Name)
			if m.Tags == nil || m.Roles == nil {
				t.Errorf("%s: nil tags/roles must render as {} / []", target)
			}
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s: got %v want %v", target, names, want)
		}
	}
}

func TestBadQueriesAre400(t *testing.T) {
	a, _ := newTestAPI()
	for _, target := range []string{
		"/v1/members?status=sleepy",
		"/v1/members?role=chef",
		"/v1/members?tag=novalue",
		"/v1/members?cluster=bad%20id",
		"/v1/members?%zz",
		"/v1/members?bogus=1",
		"/v1/runners?role=gateway",
		"/v1/status?x=1",
	} {
		rec := do(t, a, "GET", target)
		if rec.Code != 400 {
			t.Errorf("%s: status %d, want 400", target, rec.Code)
			continue
		}
		var e map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" || e["code"] == "" {
			t.Errorf("%s: body %s is not a JSON error", target, rec.Body)
		}
	}
}

func TestHealthAndUnknownRoute(t *testing.T) {
	a, b := newTestAPI()
	if rec := do(t, a, "GET", "/v1/health"); rec.Code != 200 {
		t.Fatalf("health %d", rec.Code)
	}
	b.ready = errors.New("starting")
	rec := do(t, a, "GET", "/v1/health")
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("health while not ready: %d %v", rec.Code, rec.Header())
	}
	if rec := do(t, a, "GET", "/nope"); rec.Code != 404 {
		t.Fatalf("unknown route: %d", rec.Code)
	}
	if rec := do(t, a, "POST", "/v1/agent/leave"); rec.Code != 200 || !b.left {
		t.Fatalf("leave: %d", rec.Code)
	}
}
