package httpapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/rs/zerolog"
)

type fakeRoles struct{ asked []string }

func (f *fakeRoles) Roles(ctx context.Context, cluster string) ([]RoleStatus, error) {
	f.asked = append(f.asked, cluster)
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []RoleStatus{
		{Cluster: "default", Role: "retention", Active: "n1", Standbys: []string{"n2", "n3"}, Since: &since, Fence: 4, State: "active"},
		{Cluster: "default", Role: "other", State: "starting"},
	}, nil
}

func TestRolesShape(t *testing.T) {
	fr := &fakeRoles{}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithRoles(fr))
	rec := do(t, a, "GET", "/v1/roles?cluster=c2")
	if rec.Code != 200 {
		t.Fatalf("GET /v1/roles: %d %s", rec.Code, rec.Body)
	}
	var got []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got) != 2 {
		t.Fatalf("body %s: %v", rec.Body, err)
	}
	for _, k := range []string{"cluster", "role", "active", "standbys", "since", "fence"} {
		if _, ok := got[0][k]; !ok {
			t.Fatalf("field %q missing from %s", k, rec.Body)
		}
		if _, ok := got[1][k]; !ok {
			t.Fatalf("field %q missing from the inactive role in %s", k, rec.Body)
		}
	}
	if got[0]["since"] != "2026-01-02T03:04:05Z" || got[0]["fence"] != float64(4) || got[1]["since"] != nil {
		t.Fatalf("body %s", rec.Body)
	}
	if sb, _ := got[1]["standbys"].([]any); sb == nil {
		t.Fatalf("standbys must be [] not null: %s", rec.Body)
	}
	if len(fr.asked) != 1 || fr.asked[0] != "c2" {
		t.Fatalf("asked %v", fr.asked)
	}
	if rec := do(t, a, "GET", "/v1/roles?bogus=1"); rec.Code != 400 {
		t.Fatalf("unknown query key: %d", rec.Code)
	}
}

// GET /v1/roles has the ACL of /v1/status: a token with read.
func TestRolesACL(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok), WithRoles(&fakeRoles{}))
	if rec := req(t, a, "GET", "/v1/roles", ""); rec.Code != 401 {
		t.Fatalf("no token: %d, want 401", rec.Code)
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &boot)
	mgmt := []string{"Authorization", "Bearer " + boot.SecretID}
	rec = req(t, a, "POST", "/v1/acl/tokens", `{"description":"reader","policies":["read"]}`, mgmt...)
	var rt struct {
		SecretID string `json:"secret_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &rt)
	if rec.Code != 200 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	for _, path := range []string{"/v1/status", "/v1/roles"} {
		if rec := req(t, a, "GET", path, "", "Authorization", "Bearer "+rt.SecretID); rec.Code != 200 {
			t.Fatalf("read token on %s: %d %s", path, rec.Code, rec.Body)
		}
	}
}
