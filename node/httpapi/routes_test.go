package httpapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/upstreams"
	"github.com/rs/zerolog"
)

type fakeRoutes struct{}

func (fakeRoutes) RouteTable(context.Context) (RouteTable, error) {
	return RouteTable{Node: "n1", Cluster: "default", Revision: "abc",
		Routes: []upstreams.Route{{Host: "*", Prefix: "/v2/", Strip: true, Service: "api"}}}, nil
}

// GET /v1/routes needs read: a token with run only gets 403, no token 401.
func TestRoutesACL(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok), WithRoutes(fakeRoutes{}))
	if rec := req(t, a, "GET", "/v1/routes", ""); rec.Code != 401 {
		t.Fatalf("no token: %d, want 401", rec.Code)
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &boot)
	mgmt := []string{"Authorization", "Bearer " + boot.SecretID}
	secret := func(policy string) string {
		rec := req(t, a, "POST", "/v1/acl/tokens", `{"policies":["`+policy+`"]}`, mgmt...)
		var tk struct {
			SecretID string `json:"secret_id"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &tk)
		return tk.SecretID
	}
	if rec := req(t, a, "GET", "/v1/routes", "", "Authorization", "Bearer "+secret("run")); rec.Code != 403 {
		t.Fatalf("run-only token: %d %s, want 403", rec.Code, rec.Body)
	}
	rec = req(t, a, "GET", "/v1/routes", "", "Authorization", "Bearer "+secret("read"))
	if rec.Code != 200 {
		t.Fatalf("read token: %d %s", rec.Code, rec.Body)
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["revision"] != "abc" || got["services"] == nil {
		t.Fatalf("body %s", rec.Body)
	}
	if rec := req(t, a, "GET", "/v1/routes?x=1", "", mgmt...); rec.Code != 400 {
		t.Fatalf("unknown query: %d", rec.Code)
	}
}
