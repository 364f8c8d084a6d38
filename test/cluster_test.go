package test

import (
	"strings"
	"testing"
	"time"
)

// ?cluster=nope (no member of the mesh belongs to it) is 404
// unknown_cluster, which the CLI does not retry; the node's own cluster,
// which has a member but no group yet, stays a retryable 503.
func TestUnknownClusterIs404(t *testing.T) {
	c := StartCluster(t, 1, Options{BootstrapExpect: 3})
	n := c.Nodes[0]
	WaitHealthy(t, 20*time.Second, n)
	for _, p := range []string{"/v1/services?cluster=nope", "/v1/services/a?cluster=nope",
		"/v1/executions?cluster=nope"} {
		code, err := n.Do("GET", p, nil, nil)
		if code != 404 || err == nil || !strings.Contains(err.Error(), "unknown_cluster") {
			t.Errorf("GET %s: %d %v, want 404 unknown_cluster", p, code, err)
		}
	}
	if code, err := n.Do("POST", "/v1/services/a/run?cluster=nope", map[string]any{}, nil); code != 404 {
		t.Errorf("run in an unknown cluster: %d %v, want 404", code, err)
	}
	if code, err := n.Do("GET", "/v1/services?cluster=default", nil, nil); code != 503 {
		t.Errorf("cluster with a member but no group: %d %v, want 503", code, err)
	}
	start := time.Now()
	_, stderr, exit := CLI(t, "services", "list", "-cluster", "nope", "-http-addr", n.HTTP)
	if exit != 1 || !strings.Contains(stderr, `cluster "nope" is unknown`) ||
		!strings.Contains(stderr, "404 unknown_cluster") {
		t.Errorf("services list -cluster nope: exit %d, stderr %q", exit, stderr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("services list -cluster nope took %s: a 404 must not be retried", d)
	}
}
