package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
)

type memConfig struct{ imports []ImportOptions }

func (m *memConfig) Export(context.Context, string) (map[string]any, error) {
	return map[string]any{"format": 1, "services": []any{}}, nil
}

func (m *memConfig) Import(_ context.Context, _ string, body []byte, opts ImportOptions) (ImportResult, error) {
	if string(body) == "bad" {
		idx := 0
		return ImportResult{Problems: []ImportProblem{{Kind: "services", Index: &idx, Field: "timeout", Error: "services[0]: timeout"}}},
			Errorf(http.StatusBadRequest, "invalid_import", "1 problem(s)")
	}
	m.imports = append(m.imports, opts)
	return ImportResult{DryRun: opts.DryRun, Applied: !opts.DryRun, Changes: []ImportChange{}, Plan: "p"}, nil
}

func (m *memConfig) ServiceHistory(context.Context, string, string) ([]ServiceRevision, error) {
	return []ServiceRevision{{Revision: 1, Current: true, Definition: json.RawMessage(`{}`)}}, nil
}

func (m *memConfig) RevertService(context.Context, string, string, uint64) (uint64, error) {
	return 7, nil
}

// TestConfigRoutesAccess: export and history need read, revert write,
// import manage; a refused file answers its problems.
func TestConfigRoutesAccess(t *testing.T) {
	mc := &memConfig{}
	a, mint := aclAPI(t, WithConfig(mc))
	none, read, write, manage := mint("run"), mint(PermRead), mint(PermWrite), mint(PermManage)
	for _, c := range []struct {
		method, path, body string
		hdr                []string
		want               int
	}{
		{"GET", "/v1/export", "", nil, 401},
		{"GET", "/v1/export", "", none, 403},
		{"GET", "/v1/export", "", read, 200},
		{"POST", "/v1/import?dry_run=true", "{}", read, 403},
		{"POST", "/v1/import?dry_run=true", "{}", write, 403},
		{"POST", "/v1/import?dry_run=true&prune=true", "{}", manage, 200},
		{"POST", "/v1/import?plan=p", "{}", manage, 200},
		{"POST", "/v1/import", "bad", manage, 400},
		{"POST", "/v1/import?dry_run=maybe", "{}", manage, 400},
		{"GET", "/v1/services/web/history", "", none, 403},
		{"GET", "/v1/services/web/history", "", read, 200},
		{"POST", "/v1/services/web/revert?revision=1", "", read, 403},
		{"POST", "/v1/services/web/revert?revision=1", "", none, 403},
		{"POST", "/v1/services/web/revert?revision=x", "", write, 400},
		{"POST", "/v1/services/web/revert?revision=1", "", write, 200},
	} {
		rec := req(t, a, c.method, c.path, c.body, c.hdr...)
		if rec.Code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, rec.Code, rec.Body, c.want)
		}
	}
	if len(mc.imports) != 2 || !mc.imports[0].DryRun || !mc.imports[0].Prune || mc.imports[1].Plan != "p" {
		t.Errorf("imports: %+v", mc.imports)
	}
	rec := req(t, a, "POST", "/v1/import", "bad", manage...)
	var body struct {
		Code     string          `json:"code"`
		Problems []ImportProblem `json:"problems"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != "invalid_import" || len(body.Problems) != 1 ||
		body.Problems[0].Field != "timeout" {
		t.Errorf("refused file: %s", rec.Body)
	}
}
