package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// seenRequest is what the upstream saw of one request.
type seenRequest struct {
	path, auth, token string
}

// Issue 11 items 1 and 2 on real agents (3 nodes, -acl, one with -proxy,
// so requests reach the upstream from a local runner and through another
// node's runner over QUIC): the meshgw credential a call carried never
// reaches the upstream, other headers do, and a path never climbs out of
// the upstream's base path, whatever its encoding.
func TestCredentialAndPathStayInside(t *testing.T) {
	var mu sync.Mutex
	var seen []seenRequest
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, seenRequest{r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("X-Meshgw-Token")})
		mu.Unlock()
		fmt.Fprintf(w, "custom=%s", r.Header.Get("X-Custom"))
	}))
	defer up.Close()

	dp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		if i == 0 {
			return []string{"-acl", "-proxy", dp}
		}
		return []string{"-acl"}
	}})
	var secret string
	Eventually(t, 60*time.Second, func() error {
		out, stderr, code := CLI(t, "acl", "bootstrap", "-http-addr", c.Nodes[0].HTTP, "-format", "json")
		if code != 0 {
			return fmt.Errorf("bootstrap: %s %s", out, stderr)
		}
		var b struct {
			Secret string `json:"secret_id"`
		}
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			return err
		}
		secret = b.Secret
		return nil
	})
	send := func(base, path string, hdr map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		return resp.StatusCode, b.String()
	}
	def := map[string]any{"name": "web", "type": "http", "upstream": up.URL + "/public"}
	body, _ := json.Marshal(def)
	req, _ := http.NewRequest("PUT", "http://"+c.Nodes[1].HTTP+"/v1/services/web", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+secret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("put web: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	bases := []string{"http://" + c.Nodes[0].HTTP, "http://" + c.Nodes[1].HTTP, "http://" + c.Nodes[2].HTTP, "http://" + dp}
	creds := []map[string]string{
		{"Authorization": "Bearer " + secret, "X-Custom": "kept"},
		{"X-Meshgw-Token": secret, "X-Custom": "kept"},
	}
	for _, base := range bases {
		for _, h := range creds {
			// Many calls, so runs land on every runner (local and remote).
			for i := 0; i < 6; i++ {
				code, out := send(base, "/svc/web/hello", h)
				if code != 200 || out != "custom=kept" {
					t.Fatalf("%s /svc/web/hello: %d %q", base, code, out)
				}
			}
		}
		for _, p := range []string{"/svc/web/%2e%2e/private/secret", "/svc/web/..%2fprivate/secret",
			"/svc/web/%252e%252e/private", "/svc/web/a/%2e%2e/%2e%2e/private", "/svc/web/..%5cprivate"} {
			if code, out := send(base, p, creds[0]); code != 400 || !strings.Contains(out, "bad_path") {
				t.Errorf("%s%s: %d %q, want 400 bad_path", base, p, code, out)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(bases)*len(creds)*6 {
		t.Errorf("upstream saw %d requests, want %d: a refused path reached it?", len(seen), len(bases)*len(creds)*6)
	}
	for _, s := range seen {
		if s.path != "/public/hello" {
			t.Errorf("upstream saw path %q, want /public/hello", s.path)
		}
		if s.auth != "" || s.token != "" {
			t.Errorf("upstream saw the meshgw credential: Authorization %q, X-Meshgw-Token %q", s.auth, s.token)
		}
	}
}
