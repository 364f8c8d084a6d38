package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRolesCommand(t *testing.T) {
	body := `[{"cluster":"default","role":"retention","active":"n2","standbys":["n1","n3"],` +
		`"since":"2026-01-02T03:04:05Z","fence":7,"state":"active","leader":"n2","term":7}]`
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.RequestURI()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"roles", "-http-addr", srv.URL, "-cluster", "c2"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if asked != "/v1/roles?cluster=c2" {
		t.Fatalf("asked %q", asked)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ACTIVE") {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"default", "retention", "active", "n2", "7", "2026-01-02T03:04:05Z", "n1,n3"} {
		if !strings.Contains(lines[1], want) {
			t.Fatalf("row %q lacks %q", lines[1], want)
		}
	}
	out.Reset()
	if code := run([]string{"roles", "-http-addr", srv.URL, "-format", "json"}, &out, &errb); code != 0 {
		t.Fatalf("json exit %d: %s", code, errb.String())
	}
	var rs []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil || len(rs) != 1 || rs[0]["fence"] != float64(7) ||
		rs[0]["active"] != "n2" {
		t.Fatalf("json %s (%v)", out.String(), err)
	}
}
