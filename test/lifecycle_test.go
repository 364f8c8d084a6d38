package test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// voterIDs returns "node=replicaID" for every voter n sees in cluster's group.
func voterIDs(n *Node, cluster string) ([]string, error) {
	var st struct {
		Groups []struct {
			Cluster  string `json:"cluster"`
			Replicas []struct {
				ID   uint64 `json:"id"`
				Node string `json:"node"`
			} `json:"replicas"`
		} `json:"groups"`
	}
	if err := n.GetJSON("/v1/status", &st); err != nil {
		return nil, err
	}
	for _, g := range st.Groups {
		if g.Cluster != cluster {
			continue
		}
		var out []string
		for _, r := range g.Replicas {
			out = append(out, fmt.Sprintf("%s=%d", r.Node, r.ID))
		}
		sort.Strings(out)
		return out, nil
	}
	return nil, fmt.Errorf("%s hosts no replica of %s", n.Name, cluster)
}

// A rolling restart with SIGTERM is not a departure: every voter stops
// without leaving, comes back from its data dir, and the group's voters
// (nodes and replica IDs) are the same afterwards. The mesh takes writes
// while each node is down.
func TestRollingRestartKeepsVoters(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitLeader(t, c.Nodes, "default")
	before, err := voterIDs(c.Nodes[0], "default")
	if err != nil || len(before) != 3 {
		t.Fatalf("voters before: %v %v", before, err)
	}
	for i, n := range c.Nodes {
		if err := n.Term(); err != nil {
			t.Fatalf("SIGTERM %s: %v", n.Name, err)
		}
		if !n.logHas("stopped without leaving the mesh") {
			t.Errorf("%s: SIGTERM did not say it stopped without leaving", n.Name)
		}
		others := c.Others(n)
		// Not "left": the peers see a stopped node, and the group keeps it.
		WaitMembers(t, 20*time.Second, others, map[string]string{n.Name: "failed"})
		name := fmt.Sprintf("roll-%d", i)
		Eventually(t, 20*time.Second, func() error {
			_, err := others[0].Do("PUT", "/v1/services/"+name, svcDef(name), nil)
			return err
		})
		n.Start()
		WaitHealthy(t, 30*time.Second, c.Nodes...)
		WaitLeader(t, c.Nodes, "default")
		Eventually(t, 20*time.Second, func() error { return n.GetJSON("/v1/services/"+name, nil) })
	}
	Eventually(t, 20*time.Second, func() error {
		for _, n := range c.Nodes {
			after, err := voterIDs(n, "default")
			if err != nil {
				return err
			}
			if !reflect.DeepEqual(before, after) {
				return fmt.Errorf("%s: voters %v, before the restarts %v", n.Name, after, before)
			}
		}
		return nil
	})
}

// -leave-on-terminate makes SIGTERM a departure even on a voter.
func TestLeaveOnTerminate(t *testing.T) {
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		if i == 2 {
			return []string{"-leave-on-terminate"}
		}
		return nil
	}})
	WaitLeader(t, c.Nodes, "default")
	if err := c.Nodes[2].Term(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	WaitMembers(t, 15*time.Second, c.Nodes[:2], map[string]string{c.Nodes[2].Name: "left"})
	if !c.Nodes[2].logHas("left the mesh") {
		t.Error("SIGTERM with -leave-on-terminate did not log the leave")
	}
}

// SIGHUP re-reads the config file: the log level and the tags change
// without a restart; an option that needs a restart is named, not applied.
func TestSIGHUPReloadsLogLevelAndTags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.json")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"log-level": "info", "tag": ["zone=a"]}`)
	c := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-config", file} }})
	n := c.Nodes[0]
	WaitLeader(t, c.Nodes, "default")
	// A refused request is logged at debug: not at info.
	n.Do("GET", "/v1/services/absent-before", nil, nil)
	if n.logHas("absent-before") {
		t.Fatal("a debug line was written at log level info")
	}

	write(`{"log-level": "debug", "tag": ["zone=b"], "max-concurrent-execs": 1, "retention-count": 7}`)
	n.signal(syscall.SIGHUP)
	Eventually(t, 10*time.Second, func() error {
		if !n.logHas("SIGHUP: configuration reloaded") {
			return fmt.Errorf("no reload logged")
		}
		return nil
	})
	if !n.logHas(`"reloaded":["log-level","max-concurrent-execs","tag"]`) ||
		!n.logHas(`"need_restart":["retention-count"]`) {
		t.Error("the reload did not name what it applied and what needs a restart")
	}
	// The runner now runs one process at a time: a second concurrent run
	// is refused with 429.
	if err := n.PutJSON("/v1/services/slow", map[string]any{"name": "slow", "type": "exec",
		"command": []string{"sleep", "2"}}, nil); err != nil {
		t.Fatal(err)
	}
	first := make(chan int, 1)
	go func() {
		code, _ := n.Do("POST", "/v1/services/slow/run", map[string]any{}, nil)
		first <- code
	}()
	Eventually(t, 5*time.Second, func() error {
		var es []map[string]any
		if err := n.GetJSON("/v1/executions?service=slow&status=running", &es); err != nil {
			return err
		}
		if len(es) != 1 {
			return fmt.Errorf("%d running", len(es))
		}
		return nil
	})
	if code, err := n.Do("POST", "/v1/services/slow/run", map[string]any{}, nil); code != 429 {
		t.Errorf("second run while one runs: %d %v, want 429", code, err)
	}
	if code := <-first; code != 200 {
		t.Errorf("first run: %d", code)
	}
	Eventually(t, 10*time.Second, func() error {
		n.Do("GET", "/v1/services/absent-after", nil, nil)
		if !n.logHas("absent-after") {
			return fmt.Errorf("no debug line after the reload to debug")
		}
		return nil
	})
	Eventually(t, 10*time.Second, func() error {
		var ms []Member
		if err := n.GetJSON("/v1/members", &ms); err != nil {
			return err
		}
		if len(ms) != 1 || ms[0].Tags["zone"] != "b" {
			return fmt.Errorf("members after the reload: %+v", ms)
		}
		return nil
	})

	// A file that does not validate changes nothing and the agent runs on.
	write(`{"log-level": "loud"}`)
	n.signal(syscall.SIGHUP)
	Eventually(t, 10*time.Second, func() error {
		if !n.logHas("configuration not reloaded") {
			return fmt.Errorf("a bad file was not reported")
		}
		return nil
	})
	if !n.Running() {
		t.Fatal("SIGHUP stopped the agent")
	}
	WaitHealthy(t, 10*time.Second, n)
}

// -max-input-bytes bounds a run's input: over it is 413 before anything is
// recorded or run; a value over the record's room is refused at start,
// naming the option.
func TestMaxInputBytes(t *testing.T) {
	c := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-max-input-bytes", "64"} }})
	n := c.Nodes[0]
	WaitLeader(t, c.Nodes, "default")
	if err := n.PutJSON("/v1/services/echo", map[string]any{"name": "echo", "type": "exec",
		"command": []string{"cat"}}, nil); err != nil {
		t.Fatal(err)
	}
	small := map[string]string{"m": "hi"}
	if code, err := n.Do("POST", "/v1/services/echo/run", small, nil); code != 200 {
		t.Fatalf("a small input: %d %v", code, err)
	}
	big := map[string]string{"m": strings.Repeat("x", 100)}
	if code, err := n.Do("POST", "/v1/services/echo/run", big, nil); code != 413 {
		t.Fatalf("an input over -max-input-bytes: %d %v, want 413", code, err)
	}
	var es []map[string]any
	if err := n.GetJSON("/v1/executions?service=echo", &es); err != nil || len(es) != 1 {
		t.Fatalf("executions recorded: %d %v, want only the small run's", len(es), err)
	}
	_, stderr, code := CLI(t, "agent", "-dev", "-max-input-bytes", "3000000")
	if code == 0 || !strings.Contains(stderr, "max-input-bytes") {
		t.Fatalf("an oversized -max-input-bytes: exit %d, %q", code, stderr)
	}
}
