package httpapi

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/centrallog"
	"github.com/meshgw/meshgw/dispatch"
)

// memLog is a CentralLog that keeps entries in memory, as the real one
// would return them (oldest first, cursor = count).
type memLog struct {
	mu      sync.Mutex
	entries []centrallog.Entry
}

func (l *memLog) Record(e centrallog.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
}

func (l *memLog) Logs(_ context.Context, q centrallog.Query) (centrallog.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out centrallog.Result
	for i, e := range l.entries {
		if uint64(i+1) > q.After && (q.Kind == "" || e.Kind == q.Kind) && (q.Service == "" || e.Service == q.Service) {
			out.Entries = append(out.Entries, centrallog.Stored{Seq: uint64(i + 1), Entry: e})
		}
	}
	out.Cursor = uint64(len(l.entries))
	return out, nil
}

func (l *memLog) KPIs(context.Context, centrallog.KPIQuery) ([]centrallog.KPI, error) {
	return []centrallog.KPI{{Service: "x", Count: len(l.entries)}}, nil
}

func (l *memLog) all() []centrallog.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]centrallog.Entry(nil), l.entries...)
}

func TestCentralLogRoutesAccessAndAdminEntries(t *testing.T) {
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	lg := &memLog{}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok), WithCentralLog(lg))
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		Accessor string `json:"accessor_id"`
		SecretID string `json:"secret_id"`
	}
	json.Unmarshal(rec.Body.Bytes(), &boot)
	mgmt := []string{"Authorization", "Bearer " + boot.SecretID}
	token := func(policies string) []string { // the fake store keys tokens by description
		rec := req(t, a, "POST", "/v1/acl/tokens", `{"description":`+strconv.Quote(policies)+`,"policies":`+policies+`}`, mgmt...)
		var out struct {
			SecretID string `json:"secret_id"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &out) != nil || rec.Code != 200 {
			t.Fatalf("create %s: %d %s", policies, rec.Code, rec.Body)
		}
		return []string{"Authorization", "Bearer " + out.SecretID}
	}
	read, runOnly := token(`["read"]`), token(`["run:web"]`)
	for _, c := range []struct {
		name, path string
		hdr        []string
		want       int
	}{
		{"no token", "/v1/logs", nil, 401},
		{"read token", "/v1/logs", read, 403},
		{"read token following", "/v1/logs?follow=true", read, 403},
		{"manage token", "/v1/logs", mgmt, 200},
		{"kpis without read", "/v1/kpis", runOnly, 403},
		{"kpis with read", "/v1/kpis", read, 200},
		{"bad kind", "/v1/logs?kind=nope", mgmt, 400},
		{"bad status", "/v1/logs?status=5x", mgmt, 400},
		{"bad limit", "/v1/logs?limit=0", mgmt, 400},
		{"bad window", "/v1/kpis?window=1ms", read, 400},
	} {
		if rec := req(t, a, "GET", c.path, "", c.hdr...); rec.Code != c.want {
			t.Errorf("%s: GET %s: %d %s, want %d", c.name, c.path, rec.Code, rec.Body, c.want)
		}
	}
	before := len(lg.all())
	if rec := req(t, a, "PUT", "/v1/services/x", `{"name":"x","type":"exec","command":["true"]}`, mgmt...); rec.Code != 200 {
		t.Fatalf("put: %d %s", rec.Code, rec.Body)
	}
	if rec := req(t, a, "PUT", "/v1/services/x", `{"name":"x","type":"exec","command":["true"]}`, read...); rec.Code != 403 {
		t.Fatalf("put with read: %d", rec.Code)
	}
	es := lg.all()[before:]
	if len(es) != 1 {
		t.Fatalf("entries after a put and a refused put: %+v", es)
	}
	e := es[0]
	if e.Kind != centrallog.KindAdmin || e.Service != "x" || e.Method != "PUT" || e.Status != 200 ||
		e.TokenAccessor != boot.Accessor || e.Cluster != "default" || e.BytesIn == 0 {
		t.Fatalf("admin entry %+v, want a PUT of x by %s", e, boot.Accessor)
	}
	rec = req(t, a, "GET", "/v1/logs?kind=admin", "", mgmt...)
	var listed []centrallog.Entry
	if json.Unmarshal(rec.Body.Bytes(), &listed) != nil || rec.Header().Get("X-Log-Cursor") == "" || len(listed) == 0 {
		t.Fatalf("logs: %d %s %v", rec.Code, rec.Body, rec.Header())
	}
	// Token creation is an admin change too; reading is not.
	kinds := map[string]int{}
	for _, e := range lg.all() {
		kinds[e.Kind+" "+e.Method+" "+e.Path]++
	}
	if kinds["admin POST /v1/acl/tokens"] != 2 || kinds["admin POST /v1/acl/bootstrap"] != 1 || kinds["admin GET /v1/logs"] != 0 {
		t.Fatalf("entries by route: %v", kinds)
	}
}
