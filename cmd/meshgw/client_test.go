package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// deadAddr is an address nothing listens on: a dial is refused at once.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A dead first address costs one refused dial; the next one answers, and
// the environment variable takes the same list.
func TestClientTriesNextAddressWhenOneIsDown(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/v1/members" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"name":"n1","addr":"x","status":"alive","cluster":"default"}]`))
	}))
	defer srv.Close()
	live := strings.TrimPrefix(srv.URL, "http://")
	dead := deadAddr(t)

	var out, errb bytes.Buffer
	if code := run([]string{"members", "-http-addr", dead + "," + live}, &out, &errb); code != 0 {
		t.Fatalf("members with a dead first address: exit %d, stderr %q", code, errb.String())
	}
	if !strings.Contains(out.String(), "n1") {
		t.Fatalf("members: %q", out.String())
	}
	t.Setenv("MESHGW_HTTP_ADDR", dead+", "+live)
	out.Reset()
	if code := run([]string{"members"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "n1") {
		t.Fatalf("members through MESHGW_HTTP_ADDR: exit %d, out %q, stderr %q", code, out.String(), errb.String())
	}

	// All down: one line that names every address.
	errb.Reset()
	dead2 := deadAddr(t)
	if code := run([]string{"members", "-http-addr", dead + "," + dead2}, &out, &errb); code != 1 {
		t.Fatalf("all down: exit %d", code)
	}
	if msg := errb.String(); !strings.Contains(msg, dead) || !strings.Contains(msg, dead2) ||
		strings.Count(strings.TrimSpace(msg), "\n") > 0 {
		t.Fatalf("all down: stderr %q", msg)
	}
}

// A 503 with Retry-After is sent again for a GET, a PUT and a run with an
// idempotency key, never for a run without one.
func TestClientRetriesIdempotentCallsOn503(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 { // every first call of a pair is refused
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"no quorum","code":"no_quorum"}`))
			return
		}
		switch {
		case r.Method == "GET":
			w.Write([]byte(`[]`))
		case r.Method == "PUT":
			w.Write([]byte(`{"version":7}`))
		default:
			w.Write([]byte(`{"execution_id":"e1","status":"succeeded","exit_code":0}`))
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	def := t.TempDir() + "/svc.json"
	if err := writeFile(def, `{"name":"a","type":"exec","command":["true"]}`); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"services", "list"},
		{"services", "put", "-f", def},
		{"run", "a", "-idempotency-key", "k1"},
	} {
		calls.Store(0)
		var out, errb bytes.Buffer
		if code := run(append(args, "-http-addr", addr), &out, &errb); code != 0 || calls.Load() != 2 {
			t.Fatalf("%v: exit %d after %d calls, stderr %q", args, code, calls.Load(), errb.String())
		}
	}
	calls.Store(0)
	var out, errb bytes.Buffer
	if code := run([]string{"run", "a", "-http-addr", addr}, &out, &errb); code != 1 || calls.Load() != 1 {
		t.Fatalf("run without a key: exit %d after %d calls (want 1, not retried)", code, calls.Load())
	}
	if !strings.Contains(errb.String(), "no quorum") {
		t.Fatalf("run without a key: stderr %q", errb.String())
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
