package httpapi

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/rs/zerolog"
)

type fakeCache struct{ purged []string }

func (f *fakeCache) CacheReport(ctx context.Context) (CacheReport, error) {
	return CacheReport{Services: []CacheServiceStats{{Service: "web", Entries: 4, Bytes: 100, Hits: 9, Misses: 1, HitRatio: 0.9}},
		Nodes: []CacheNodeStatus{{Node: "n1"}}}, nil
}

func (f *fakeCache) PurgeCache(ctx context.Context, service, prefix string) (CachePurge, error) {
	f.purged = append(f.purged, service+prefix)
	return CachePurge{Service: service, Prefix: prefix, Epoch: 1, Acknowledged: []string{"n1"}}, nil
}

func TestCacheRoutes(t *testing.T) {
	fc := &fakeCache{}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithCache(fc))
	rec := do(t, a, "GET", "/v1/cache")
	var rep CacheReport
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &rep) != nil || len(rep.Services) != 1 || rep.Services[0].HitRatio != 0.9 {
		t.Fatalf("GET /v1/cache: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, a, "DELETE", "/v1/cache/web?prefix=/img/"); rec.Code != 200 || len(fc.purged) != 1 || fc.purged[0] != "web/img/" {
		t.Fatalf("DELETE: %d %s %v", rec.Code, rec.Body, fc.purged)
	}
	for _, bad := range []string{"/v1/cache/-x", "/v1/cache/web?prefix=img", "/v1/cache/web?bogus=1"} {
		if rec := do(t, a, "DELETE", bad); rec.Code != 400 {
			t.Errorf("DELETE %s: %d, want 400", bad, rec.Code)
		}
	}
	if len(fc.purged) != 1 {
		t.Fatal("a refused purge reached the cache")
	}
}

// GET /v1/cache needs read, DELETE /v1/cache/{service} write: a read
// token gets 403 on the purge, and nothing is purged.
func TestCacheACL(t *testing.T) {
	fc := &fakeCache{}
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok), WithCache(fc))
	if rec := req(t, a, "GET", "/v1/cache", ""); rec.Code != 401 {
		t.Fatalf("no token: %d, want 401", rec.Code)
	}
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &boot)
	mgmt := []string{"Authorization", "Bearer " + boot.SecretID}
	mint := func(pol string) string {
		rec := req(t, a, "POST", "/v1/acl/tokens", `{"description":"t-`+pol+`","policies":["`+pol+`"]}`, mgmt...)
		var rt struct {
			SecretID string `json:"secret_id"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &rt)
		if rec.Code != 200 {
			t.Fatalf("create: %d %s", rec.Code, rec.Body)
		}
		return "Bearer " + rt.SecretID
	}
	reader, runner, writer := mint("read"), mint("run"), mint("write")
	if rec := req(t, a, "GET", "/v1/cache", "", "Authorization", reader); rec.Code != 200 {
		t.Fatalf("read token on GET: %d %s", rec.Code, rec.Body)
	}
	for _, tk := range []string{reader, runner} {
		if rec := req(t, a, "DELETE", "/v1/cache/web", "", "Authorization", tk); rec.Code != 403 {
			t.Fatalf("DELETE without write: %d %s, want 403", rec.Code, rec.Body)
		}
	}
	if rec := req(t, a, "GET", "/v1/cache", "", "Authorization", runner); rec.Code != 403 {
		t.Fatalf("run token on GET: %d, want 403", rec.Code)
	}
	if len(fc.purged) != 0 {
		t.Fatal("a forbidden purge reached the cache")
	}
	if rec := req(t, a, "DELETE", "/v1/cache/web", "", "Authorization", writer); rec.Code != 200 || len(fc.purged) != 1 {
		t.Fatalf("write token: %d %s", rec.Code, rec.Body)
	}
}
