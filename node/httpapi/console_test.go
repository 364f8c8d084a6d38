package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/rs/zerolog"
)

// fakeConsole stands for node/console's handler: it answers every path it
// is given, so a test sees exactly what the API routes to it.
var fakeConsole = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("asset " + r.URL.Path))
})

func consoleAPI(t *testing.T) (*API, string, string) {
	t.Helper()
	st := &memState{svcs: map[string]dispatch.Service{}}
	tok := &memTokens{byHash: map[string]Token{}}
	a := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok), WithRoles(&fakeRoles{}),
		WithExec(&memExec{}), WithConsole(fakeConsole))
	rec := req(t, a, "POST", "/v1/acl/bootstrap", "")
	var boot struct {
		SecretID string `json:"secret_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &boot); err != nil || boot.SecretID == "" {
		t.Fatalf("bootstrap: %d %s", rec.Code, rec.Body)
	}
	rec = req(t, a, "POST", "/v1/acl/tokens", `{"policies":["read"]}`, "Authorization", "Bearer "+boot.SecretID)
	var rt struct {
		SecretID string `json:"secret_id"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &rt); err != nil || rt.SecretID == "" {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	return a, boot.SecretID, rt.SecretID
}

// The console's assets are open under -acl (they hold no data); / sends a
// browser to them; without WithConsole there is no console.
func TestConsoleAssetsAreOpen(t *testing.T) {
	a, _, _ := consoleAPI(t)
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/app.css"} {
		rec := req(t, a, "GET", p, "")
		if rec.Code != 200 || rec.Body.String() != "asset "+p {
			t.Errorf("GET %s without a token: %d %q, want the asset", p, rec.Code, rec.Body)
		}
		if rec := req(t, a, "HEAD", p, ""); rec.Code != 200 {
			t.Errorf("HEAD %s: %d", p, rec.Code)
		}
	}
	rec := req(t, a, "GET", "/", "")
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("GET /: %d to %q, want 302 to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	if rec := req(t, a, "GET", "/ui", ""); rec.Code/100 != 3 || rec.Header().Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want a redirect to /ui/", rec.Code, rec.Header().Get("Location"))
	}
	// Only reads: any other method on /ui/ is checked like any route.
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		if rec := req(t, a, m, "/ui/", ""); rec.Code != 401 {
			t.Errorf("%s /ui/ without a token: %d, want 401", m, rec.Code)
		}
	}

	plain := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop())
	for _, p := range []string{"/", "/ui/"} {
		if rec := req(t, plain, "GET", p, ""); rec.Code != 404 {
			t.Errorf("GET %s without a console: %d, want 404", p, rec.Code)
		}
	}
}

// Serving the console opens no data route: every API call the page makes
// still needs a token (401 without one) with the route's permission (403
// with a read token for writes), and no path through /ui/ reaches one.
func TestConsoleOpensNoDataRoute(t *testing.T) {
	a, mgmt, read := consoleAPI(t)
	id := dispatch.NewID(time.Now())
	data := []struct{ method, path, body string }{
		{"GET", "/v1/members", ""},
		{"GET", "/v1/runners", ""},
		{"GET", "/v1/status", ""},
		{"GET", "/v1/clusters", ""},
		{"GET", "/v1/roles", ""},
		{"GET", "/v1/services", ""},
		{"GET", "/v1/services/s", ""},
		{"PUT", "/v1/services/s", `{"name":"s","type":"exec","command":["true"]}`},
		{"DELETE", "/v1/services/s", ""},
		{"POST", "/v1/services/s/run", `{}`},
		{"GET", "/v1/executions", ""},
		{"GET", "/v1/executions/" + id + "", ""},
		{"GET", "/v1/executions/" + id + "/watch", ""},
		{"POST", "/v1/executions/" + id + "/cancel", ""},
		{"GET", "/v1/acl/whoami", ""},
		{"GET", "/v1/acl/tokens", ""},
		{"GET", "/v1/snapshot", ""},
	}
	for _, d := range data {
		if rec := req(t, a, d.method, d.path, d.body); rec.Code != 401 {
			t.Errorf("%s %s without a token, console on: %d, want 401", d.method, d.path, rec.Code)
		}
	}
	for _, d := range data {
		if d.method == "GET" && !strings.HasPrefix(d.path, "/v1/acl/tokens") && d.path != "/v1/snapshot" {
			continue
		}
		if rec := req(t, a, d.method, d.path, d.body, "Authorization", "Bearer "+read); rec.Code != 403 {
			t.Errorf("%s %s with a read token: %d, want 403", d.method, d.path, rec.Code)
		}
	}
	if rec := req(t, a, "GET", "/v1/members", "", "Authorization", "Bearer "+mgmt); rec.Code != 200 {
		t.Errorf("GET /v1/members with a token: %d", rec.Code)
	}
	for _, p := range []string{"/ui/../v1/members", "/ui/..%2fv1/members", "//v1/members", "/ui//../v1/status"} {
		rec := req(t, a, "GET", p, "")
		if rec.Code == 200 || strings.Contains(rec.Body.String(), `"name"`) {
			t.Errorf("GET %s without a token: %d %s: a data route answered", p, rec.Code, rec.Body)
		}
	}
}
