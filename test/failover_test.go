package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A client given a dead node first and a live one second works for
// members, services and run: it tries the next address when one is down.
func TestCLIHTTPAddrListSurvivesADeadNode(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitLeader(t, c.Nodes, "default")
	dead, live := c.Nodes[2], c.Nodes[0]
	dead.Kill()
	WaitMembers(t, 20*time.Second, c.Nodes[:2], map[string]string{dead.Name: "failed"})
	addrs := dead.HTTP + "," + live.HTTP

	out, stderr, code := CLI(t, "members", "-http-addr", addrs)
	if code != 0 || !strings.Contains(out, "n1") || !strings.Contains(out, "failed") {
		t.Fatalf("members: exit %d, out %q, stderr %q", code, out, stderr)
	}
	def := filepath.Join(t.TempDir(), "echo.json")
	if err := os.WriteFile(def, []byte(`{"name":"echo","type":"exec","command":["cat"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := CLI(t, "services", "put", "-f", def, "-http-addr", addrs); code != 0 {
		t.Fatalf("services put: exit %d, out %q, stderr %q", code, out, stderr)
	}
	if out, stderr, code := CLI(t, "services", "list", "-http-addr", addrs); code != 0 ||
		!strings.Contains(out, "echo") {
		t.Fatalf("services list: exit %d, out %q, stderr %q", code, out, stderr)
	}
	// run without an idempotency key: only the refused dial is retried.
	out, stderr, code = CLI(t, "run", "echo", "-input", `{"hello":1}`, "-http-addr", addrs)
	if code != 0 || !strings.Contains(out, `{"hello":1}`) {
		t.Fatalf("run: exit %d, out %q, stderr %q", code, out, stderr)
	}
	// Through the environment, the same list.
	t.Setenv("MESHGW_HTTP_ADDR", addrs)
	if out, stderr, code := CLI(t, "services", "get", "echo"); code != 0 || !strings.Contains(out, `"cat"`) {
		t.Fatalf("services get via MESHGW_HTTP_ADDR: exit %d, out %q, stderr %q", code, out, stderr)
	}
}
