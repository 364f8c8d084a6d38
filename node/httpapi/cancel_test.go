package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// memExec is an ExecBackend over a map of records; CancelExecution
// behaves like dispatch.Cancel (idempotent, 409 for another end).
type memExec struct {
	ExecBackend // runs and the proxy are not used here
	mu          sync.Mutex
	recs        map[string]dispatch.Execution
}

func (m *memExec) GetExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.recs[id]
	if !ok {
		return e, Errorf(http.StatusNotFound, "not_found", "execution %s not found", id)
	}
	return e, nil
}

func (m *memExec) CancelExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error) {
	if err := ctx.Err(); err != nil {
		return dispatch.Execution{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.recs[id]
	switch {
	case !ok:
		return e, Errorf(http.StatusNotFound, "not_found", "execution %s not found", id)
	case e.Status == dispatch.StatusCancelled:
	case e.Status.Terminal():
		return e, Errorf(http.StatusConflict, "already_finished", "execution %s is %s", id, e.Status)
	default:
		e.Status = dispatch.StatusCancelled
		m.recs[id] = e
	}
	return e, nil
}

func TestCancelExecutionAccessAndAnswers(t *testing.T) {
	now := time.Now()
	running, other, done := dispatch.NewID(now), dispatch.NewID(now.Add(1)), dispatch.NewID(now.Add(2))
	ex := &memExec{recs: map[string]dispatch.Execution{
		running: {ID: running, Service: "deploy-web", Status: dispatch.StatusRunning},
		other:   {ID: other, Service: "backup", Status: dispatch.StatusRunning},
		done:    {ID: done, Service: "deploy-web", Status: dispatch.StatusSucceeded},
	}}
	st := &memState{svcs: map[string]dispatch.Service{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(&memTokens{byHash: map[string]Token{}}), WithExec(ex))
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
	read, run, write := mint("read"), mint("run:deploy-*"), mint("write")
	cancel := func(id string, hdr ...string) (int, map[string]any) {
		rec := req(t, a, "POST", "/v1/executions/"+id+"/cancel", "", hdr...)
		var body map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		return rec.Code, body
	}
	for _, c := range []struct {
		what string
		id   string
		hdr  []string
		want int
	}{
		{"no token", running, nil, 401},
		{"read-only token", running, read, 403},
		{"run token for another service", other, run, 403},
		{"run token for the service", running, run, 200},
		{"second cancel", running, run, 200},
		{"write token", other, write, 200},
		{"cancel of a succeeded run", done, run, 409},
	} {
		code, body := cancel(c.id, c.hdr...)
		if code != c.want {
			t.Fatalf("%s: %d %v, want %d", c.what, code, body, c.want)
		}
		switch code {
		case 200:
			if body["status"] != "cancelled" || body["execution_id"] != c.id {
				t.Fatalf("%s: %v", c.what, body)
			}
		case 409:
			e, _ := body["execution"].(map[string]any)
			if body["code"] != "already_finished" || e["status"] != "succeeded" {
				t.Fatalf("%s: %v", c.what, body)
			}
		}
	}
	if st := ex.recs[other].Status; st != dispatch.StatusCancelled {
		t.Fatalf("backup: %s", st)
	}
}
