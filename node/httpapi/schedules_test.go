package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/schedule"
)

type memSchedules struct {
	mu sync.Mutex
	m  map[string]schedule.Schedule
}

func (m *memSchedules) PutSchedule(_ context.Context, _ string, s schedule.Schedule, cas *uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cas != nil && m.m[s.Name].Version != *cas {
		return 0, Errorf(http.StatusConflict, "conflict", "schedule %q is not at version %d", s.Name, *cas)
	}
	s.Version = m.m[s.Name].Version + 1
	m.m[s.Name] = s
	return s.Version, nil
}

func (m *memSchedules) GetSchedule(_ context.Context, _, name string) (schedule.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.m[name]
	if !ok {
		return schedule.Status{}, Errorf(http.StatusNotFound, "not_found", "schedule %q not found", name)
	}
	return schedule.Status{Schedule: s}, nil
}

func (m *memSchedules) ListSchedules(context.Context, string) ([]schedule.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []schedule.Status
	for _, s := range m.m {
		out = append(out, schedule.Status{Schedule: s})
	}
	return out, nil
}

func (m *memSchedules) DeleteSchedule(_ context.Context, _, name string, _ *uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[name]; !ok {
		return Errorf(http.StatusNotFound, "not_found", "schedule %q not found", name)
	}
	delete(m.m, name)
	return nil
}

// aclAPI builds an API with ACLs on and returns it with a token minter.
func aclAPI(t *testing.T, opts ...Option) (*API, func(policies ...string) []string) {
	t.Helper()
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), append(opts, WithACL(&memTokens{byHash: map[string]Token{}}))...)
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &boot); err != nil || rec.Code != 200 {
		t.Fatalf("bootstrap: %d %s", rec.Code, rec.Body)
	}
	n := 0
	return a, func(policies ...string) []string {
		if len(policies) == 1 && policies[0] == PermManage {
			return []string{"Authorization", "Bearer " + boot.SecretID}
		}
		n++ // memTokens derives the secret from the description
		body, _ := json.Marshal(map[string]any{"description": fmt.Sprintf("t%d", n), "policies": policies})
		rec := req(t, a, "POST", "/v1/acl/tokens", string(body), "Authorization", "Bearer "+boot.SecretID)
		var tok struct {
			SecretID string `json:"secret_id"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &tok); err != nil || rec.Code != 200 {
			t.Fatalf("token %v: %d %s", policies, rec.Code, rec.Body)
		}
		return []string{"Authorization", "Bearer " + tok.SecretID}
	}
}

// TestSchedulesAccess: reading needs read; writing needs write, and a put
// also run on the schedule's service; a bad definition is a 400 naming
// the field.
func TestSchedulesAccess(t *testing.T) {
	ms := &memSchedules{m: map[string]schedule.Schedule{}}
	a, mint := aclAPI(t, WithSchedules(ms))
	def := `{"name":"nightly","service":"backup","cron":"0 3 * * *"}`
	none, read, write := mint("run:other"), mint(PermRead), mint(PermWrite)
	writeRun, writeOther := mint(PermWrite, "run:back*"), mint(PermWrite, "run:other")
	for _, c := range []struct {
		method, path, body string
		hdr                []string
		want               int
	}{
		{"GET", "/v1/schedules", "", nil, 401},
		{"GET", "/v1/schedules", "", none, 403},
		{"PUT", "/v1/schedules/nightly", def, read, 403},
		{"PUT", "/v1/schedules/nightly", def, write, 403},      // write without run:backup
		{"PUT", "/v1/schedules/nightly", def, writeOther, 403}, // run on another service
		{"PUT", "/v1/schedules/nightly", def, writeRun, 200},
		{"PUT", "/v1/schedules/nightly", `{"service":"backup","cron":"0 3 * *"}`, writeRun, 400},
		{"GET", "/v1/schedules", "", read, 200},
		{"GET", "/v1/schedules/nightly", "", none, 403},
		{"GET", "/v1/schedules/nightly", "", read, 200},
		{"DELETE", "/v1/schedules/nightly", "", read, 403},
		{"DELETE", "/v1/schedules/nightly", "", write, 200},
		{"GET", "/v1/schedules/nightly", "", read, 404},
	} {
		rec := req(t, a, c.method, c.path, c.body, c.hdr...)
		if rec.Code != c.want {
			t.Errorf("%s %s with %v: %d %s, want %d", c.method, c.path, c.hdr, rec.Code, rec.Body, c.want)
		}
	}
	rec := req(t, a, "PUT", "/v1/schedules/x", `{"service":"backup","cron":"0 3 * *"}`, writeRun...)
	var e Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Path != "cron" {
		t.Errorf("bad cron: %s, want path cron", rec.Body)
	}
}
