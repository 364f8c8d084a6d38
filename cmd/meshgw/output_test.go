package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// 64-bit numbers (shard IDs, indexes, versions) are printed exactly, not
// through float64.
func TestJSONOutputKeepsPrecision(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/status":
			w.Write([]byte(`{"node":"n1","groups":[{"cluster":"default","shard_id":18446744073709551615,` +
				`"applied_index":9007199254740993,"term":1}]}`))
		case "/v1/services/a":
			w.Write([]byte(`{"name":"a","type":"exec","version":9007199254740995}`))
		case "/v1/services":
			w.Write([]byte(`[{"name":"a","type":"exec","version":9007199254740995}]`))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"status"}, []string{"18446744073709551615", "9007199254740993"}},
		{[]string{"raft", "status", "-format", "json"}, []string{"18446744073709551615", "9007199254740993"}},
		{[]string{"services", "get", "a"}, []string{"9007199254740995"}},
		{[]string{"services", "list"}, []string{"9007199254740995"}},
		{[]string{"services", "list", "-format", "json"}, []string{"9007199254740995"}},
	} {
		out, errOut, code := runCLI(append(c.args, "-http-addr", addr)...)
		for _, w := range c.want {
			if code != 0 || !strings.Contains(out, w) {
				t.Errorf("%v: exit %d, %s missing in %q (stderr %q)", c.args, code, w, out, errOut)
			}
		}
	}
}

// A 404 without meshgw's error body came from something else; a meshgw
// 404 keeps its message and code. No error has ": :" or a doubled prefix.
func TestErrorMessagesNameWhatFailed(t *testing.T) {
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	mesh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"service \"nope\" not found","code":"not_found"}`))
	}))
	defer mesh.Close()
	otherAddr := strings.TrimPrefix(other.URL, "http://")
	meshAddr := strings.TrimPrefix(mesh.URL, "http://")

	_, e, code := runCLI("services", "get", "nope", "-http-addr", otherAddr)
	if code != 1 || !strings.Contains(e, "the server at "+otherAddr+" answered 404 and is not a meshgw agent?") {
		t.Errorf("404 from a non-meshgw server: exit %d, stderr %q", code, e)
	}
	_, e, code = runCLI("services", "get", "nope", "-http-addr", meshAddr)
	if code != 1 || !strings.Contains(e, `service "nope" not found (404 not_found)`) {
		t.Errorf("404 from meshgw: exit %d, stderr %q", code, e)
	}
	cases := [][]string{
		{"services", "get", "nope", "-http-addr", otherAddr},
		{"services", "get"},
		{"services", "put"},
		{"services", "put", "-f", "/nonexistent/x.json"},
		{"services", "delete", "a", "-cas", "x"},
		{"run"},
		{"run", "a", "-input", "{"},
		{"tls", "cert", "create"},
		{"tls", "ca", "create", "-days", "0"},
		{"raft", "recover"},
		{"members", "-tag", "novalue"},
		{"members", "-http-addr", "127.0.0.1:1"},
		{"executions", "list", "-limit", "0"},
		{"acl", "token", "create"},
		{"keyring"},
		{"get", "things"},
	}
	for _, args := range cases {
		_, e, code := runCLI(args...)
		msg := strings.TrimSpace(e)
		if code == 0 || msg == "" {
			t.Errorf("%v: exit %d, stderr %q: want an error", args, code, e)
			continue
		}
		if strings.Contains(msg, ": :") || strings.Contains(msg, "::") || strings.Count(msg, "\n") > 0 {
			t.Errorf("%v: malformed error %q", args, msg)
		}
		// The path of the command, once, then what failed: never the
		// path again, "usage: meshgw ..." or a segment twice in a row.
		segs := strings.Split(msg, ": ")
		if !strings.HasPrefix(segs[0], "meshgw ") || len(segs) < 2 {
			t.Errorf("%v: no command prefix in %q", args, msg)
			continue
		}
		for i, seg := range segs[1:] {
			if strings.HasPrefix(seg, "meshgw") || strings.HasPrefix(segs[0], "meshgw "+seg) ||
				seg == segs[i] {
				t.Errorf("%v: doubled prefix %q in %q", args, seg, msg)
			}
		}
		if strings.Contains(msg, "usage: meshgw") {
			t.Errorf("%v: old doubled usage prefix in %q", args, msg)
		}
	}
}
