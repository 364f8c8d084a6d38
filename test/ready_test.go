package test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// readyState returns /v1/ready's status code and error message.
func readyState(n *Node) (int, string) {
	code, err := n.Do("GET", "/v1/ready", nil, nil)
	if err != nil {
		return code, err.Error()
	}
	return code, ""
}

// /v1/ready is 503 with the reason before the group exists and after it
// loses quorum, 200 otherwise; `meshgw wait` waits for it and says why it
// waits; leave refuses to take the group below quorum unless forced.
func TestReadinessAndLeaveGuard(t *testing.T) {
	c := StartCluster(t, 1, Options{BootstrapExpect: 3})
	n1 := c.Nodes[0]
	WaitHealthy(t, 20*time.Second, n1)
	// Live, not ready: 2 of bootstrap-expect 3 are missing.
	code, msg := readyState(n1)
	if code != 503 || !strings.Contains(msg, "waiting for 2 more node(s) of cluster default (bootstrap-expect 3") {
		t.Fatalf("ready before bootstrap: %d %s", code, msg)
	}
	_, stderr, exit := CLI(t, "wait", "-http-addr", n1.HTTP, "-timeout", "2s")
	if exit != 1 || !strings.Contains(stderr, "waiting: waiting for 2 more node(s)") ||
		!strings.Contains(stderr, "not ready after 2s") {
		t.Fatalf("wait before bootstrap: exit %d, stderr %q", exit, stderr)
	}

	c.Add(t, "n2", 1)
	c.Add(t, "n3", 2)
	out, stderr, exit := CLI(t, "wait", "-http-addr", n1.HTTP, "-timeout", "60s")
	if exit != 0 || !strings.Contains(out, "is ready") {
		t.Fatalf("wait: exit %d, out %q, stderr %q", exit, out, stderr)
	}
	for _, n := range c.Nodes {
		if code, msg := readyState(n); code != 200 {
			t.Fatalf("%s not ready with a leader: %d %s", n.Name, code, msg)
		}
	}

	// With n3 down, n2 leaving would leave n1 alone: refused, 409.
	c.Nodes[2].Kill()
	WaitMembers(t, 20*time.Second, c.Nodes[:2], map[string]string{"n3": "failed"})
	_, stderr, exit = CLI(t, "leave", "-http-addr", c.Nodes[1].HTTP)
	if exit == 0 || !strings.Contains(stderr, "below quorum") || !strings.Contains(stderr, "-force") {
		t.Fatalf("leave below quorum: exit %d, stderr %q", exit, stderr)
	}
	if !c.Nodes[1].Running() {
		t.Fatal("a refused leave stopped the agent")
	}

	// Quorum lost: 1 of 3 voters alive.
	c.Nodes[1].Kill()
	Eventually(t, 30*time.Second, func() error {
		code, msg := readyState(n1)
		if code != 503 || !strings.Contains(msg, "no quorum: 1 of 3 voters of cluster default reachable") {
			return fmt.Errorf("ready without quorum: %d %s", code, msg)
		}
		return nil
	})
	if _, stderr, exit := CLI(t, "wait", "-http-addr", n1.HTTP, "-timeout", "1s"); exit != 1 ||
		!strings.Contains(stderr, "no quorum") {
		t.Fatalf("wait without quorum: exit %d, stderr %q", exit, stderr)
	}

	// Back to quorum: ready again; a forced leave goes through even so.
	c.Nodes[1].Start()
	Eventually(t, 30*time.Second, func() error {
		if code, msg := readyState(n1); code != 200 {
			return fmt.Errorf("ready after n2 is back: %d %s", code, msg)
		}
		return nil
	})
	if _, stderr, exit := CLI(t, "leave", "-http-addr", c.Nodes[1].HTTP); exit == 0 {
		t.Fatalf("leave with n3 down again allowed: %q", stderr)
	}
	if _, stderr, exit := CLI(t, "leave", "-force", "-http-addr", c.Nodes[1].HTTP); exit != 0 {
		t.Fatalf("forced leave: exit %d, %q", exit, stderr)
	}
	WaitMembers(t, 20*time.Second, c.Nodes[:1], map[string]string{"n2": "left"})
}

// Under -acl, /v1/ready answers without a token (as /v1/health does: load
// balancers poll it), and leave, forced or not, still needs a manage token.
func TestReadinessNeedsNoTokenLeaveDoes(t *testing.T) {
	c := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-acl"} }})
	n := c.Nodes[0]
	Eventually(t, 30*time.Second, func() error {
		if code, msg := readyState(n); code != 200 {
			return fmt.Errorf("ready: %d %s", code, msg)
		}
		return nil
	})
	for _, path := range []string{"/v1/agent/leave", "/v1/agent/leave?force=true"} {
		if code, _ := n.Do("POST", path, nil, nil); code != 401 && code != 403 {
			t.Errorf("POST %s without a token: %d", path, code)
		}
	}
	if !n.Running() {
		t.Fatal("an unauthenticated leave stopped the agent")
	}
}
