package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLogsCommand(t *testing.T) {
	entry := `{"id":"e1","time":"2026-01-02T03:04:05Z","node":"n2","cluster":"default","kind":"admin","service":"web",` +
		`"method":"PUT","path":"/v1/services/web","status":200,"duration_ms":1.5,"client_ip":"10.0.0.9","token_accessor":"acc1"}`
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = append(asked, r.URL.RequestURI())
		if r.URL.Query().Get("follow") == "true" {
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = w.Write([]byte(entry + "\n" + entry + "\n")) // then the stream ends
			return
		}
		_, _ = w.Write([]byte("[" + entry + "]"))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"logs", "-http-addr", srv.URL, "-service", "web", "-kind", "admin", "-status", "2xx", "-limit", "5"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if want := "/v1/logs?kind=admin&limit=5&service=web&status=2xx"; asked[0] != want {
		t.Fatalf("asked %q, want %q", asked[0], want)
	}
	line := strings.TrimSpace(out.String())
	for _, want := range []string{"2026-01-02T03:04:05Z n2 admin web PUT /v1/services/web 200 1.5ms 10.0.0.9 acc1 e1"} {
		if line != want {
			t.Fatalf("line %q, want %q", line, want)
		}
	}
	out.Reset()
	if code := run([]string{"logs", "-f", "-http-addr", srv.URL, "-format", "json"}, &out, &errb); code != 0 {
		t.Fatalf("follow exit %d: %s", code, errb.String())
	}
	if !strings.Contains(asked[1], "follow=true") || strings.Count(out.String(), `"id":"e1"`) != 2 {
		t.Fatalf("follow asked %q, printed %q", asked[1], out.String())
	}
	if code := run([]string{"logs", "-http-addr", srv.URL, "-kind", "nope"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-kind") {
		t.Fatalf("bad kind: exit %d: %s", code, errb.String())
	}
}
