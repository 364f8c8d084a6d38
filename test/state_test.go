package test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func svcDef(name string) map[string]any {
	return map[string]any{"name": name, "type": "exec", "command": []string{"echo", name}}
}

func byName(nodes []*Node, name string) *Node {
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Three nodes form a group; a write on one is read on all; kill -9 of the
// leader: the survivors elect a new one, take writes again, and every
// acknowledged write is there. The killed node restarted catches up.
func TestReplicatedStateSurvivesLeaderKill(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	leader := WaitLeader(t, c.Nodes, "default")
	if _, err := c.Nodes[0].Do("PUT", "/v1/services/first", svcDef("first"), nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		var s map[string]any
		if _, err := n.Do("GET", "/v1/services/first", nil, &s); err != nil || s["version"] == nil {
			t.Fatalf("read on %s: %v %v", n.Name, s, err)
		}
	}
	acked := []string{"first"}
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("pre%d", i)
		if _, err := c.Nodes[i%3].Do("PUT", "/v1/services/"+name, svcDef(name), nil); err == nil {
			acked = append(acked, name)
		}
	}
	ln := byName(c.Nodes, leader)
	killedAt := time.Now()
	ln.Kill()
	survivors := c.Others(ln)
	var recovered time.Duration
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("post%d", i)
		Eventually(t, 30*time.Second, func() error {
			_, err := survivors[i%2].Do("PUT", "/v1/services/"+name, svcDef(name), nil)
			return err
		})
		if i == 0 {
			recovered = time.Since(killedAt)
		}
		acked = append(acked, name)
	}
	t.Logf("first write acknowledged %s after kill -9 of the leader", recovered.Round(time.Millisecond))
	check := func(n *Node) error {
		var list []map[string]any
		if _, err := n.Do("GET", "/v1/services", nil, &list); err != nil {
			return err
		}
		have := map[string]bool{}
		for _, s := range list {
			have[s["name"].(string)] = true
		}
		for _, a := range acked {
			if !have[a] {
				return fmt.Errorf("%s lost acknowledged write %s", n.Name, a)
			}
		}
		return nil
	}
	for _, n := range survivors {
		if err := check(n); err != nil {
			t.Fatal(err)
		}
	}
	// The old leader comes back from its data dir and catches up.
	ln.Restart()
	Eventually(t, 60*time.Second, func() error {
		g, err := ln.Group("default")
		if err != nil {
			return err
		}
		ref, err := survivors[0].Group("default")
		if err != nil {
			return err
		}
		if g.AppliedIndex < ref.AppliedIndex || g.Leader == "" {
			return fmt.Errorf("restarted node at applied %d, survivor at %d", g.AppliedIndex, ref.AppliedIndex)
		}
		return check(ln)
	})
}

// Five nodes; kill -9 of a voter: after -autopilot-dead-after a live node
// is a voter and the dead one is gone.
func TestAutopilotReplacesKilledVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("5 processes")
	}
	c := StartCluster(t, 5, Options{BootstrapExpect: 3})
	leader := WaitLeader(t, c.Nodes[:3], "default")
	g, _ := byName(c.Nodes, leader).Group("default")
	var victim *Node
	for _, r := range g.Replicas {
		if r.Node != leader {
			victim = byName(c.Nodes, r.Node)
			break
		}
	}
	victim.Kill()
	start := time.Now()
	live := c.Others(victim)
	Eventually(t, 60*time.Second, func() error {
		g, err := byName(live, leader).Group("default")
		if err != nil {
			return err
		}
		var names []string
		for _, r := range g.Replicas {
			names = append(names, r.Node)
			if r.Node == victim.Name || byName(live, r.Node) == nil {
				return fmt.Errorf("voters %v still include a dead node", names)
			}
		}
		if len(names) != 3 {
			return fmt.Errorf("voters %v", names)
		}
		return nil
	})
	t.Logf("dead voter %s replaced %s after the kill (dead-after 3 s)", victim.Name, time.Since(start).Round(100*time.Millisecond))
	// Autopilot's changes show in its metrics, summed over the live nodes
	// (leadership may have moved while it worked).
	for _, action := range []string{"promote", "remove"} {
		total := 0.0
		for _, n := range live {
			_, body := scrape(t, n, "")
			v, _ := metricValue(parseMetrics(t, body), "meshgw_autopilot_actions_total",
				l("cluster", "default", "action", action, "result", "ok"))
			total += v
		}
		if total < 1 {
			t.Errorf("meshgw_autopilot_actions_total{action=%q,result=\"ok\"} = %v over the live nodes, want >= 1", action, total)
		}
	}
	Eventually(t, 20*time.Second, func() error {
		_, err := live[0].Do("PUT", "/v1/services/after", svcDef("after"), nil)
		return err
	})
}

// Two clusters in one mesh keep separate state; each node reads the other
// cluster's services by forwarding; a node with a foreign CA is refused by
// the RPC layer.
func TestTwoClustersAndForeignCA(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitLeader(t, c.Nodes, "default")
	b := c.NewNode(t, "b1", "-cluster", "blue", "-bootstrap-expect", "1", "-gossip-profile", "local", "-join", c.Nodes[0].Gossip)
	b.Start()
	WaitLeader(t, []*Node{b}, "blue")
	if _, err := c.Nodes[0].Do("PUT", "/v1/services/red-only", svcDef("red-only"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Do("PUT", "/v1/services/blue-only", svcDef("blue-only"), nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.Do("GET", "/v1/services/red-only", nil, nil); code != 404 {
		t.Errorf("blue sees red's service in its own state: %d", code)
	}
	if _, err := b.Do("GET", "/v1/services/red-only?cluster=default", nil, nil); err != nil {
		t.Errorf("blue node reading red's state by forwarding: %v", err)
	}
	if _, err := c.Nodes[1].Do("GET", "/v1/services/blue-only?cluster=blue", nil, nil); err != nil {
		t.Errorf("red node reading blue's state by forwarding: %v", err)
	}
	if _, err := c.Nodes[2].Do("PUT", "/v1/services/cross?cluster=blue", svcDef("cross"), nil); err != nil {
		t.Errorf("red node writing blue's state by forwarding: %v", err)
	}

	// A node whose TLS material comes from another CA joins gossip but no
	// peer answers its RPC calls.
	dir := t.TempDir()
	if _, stderr, code := CLI(t, "tls", "ca", "create", "-dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	if _, stderr, code := CLI(t, "tls", "cert", "create", "-dir", dir, "-node", "intruder"); code != 0 {
		t.Fatal(stderr)
	}
	x := NewNode(t, "intruder", "-cluster", "grey", "-bootstrap-expect", "0", "-gossip-profile", "local", "-join", c.Nodes[0].Gossip,
		"-ca-file", filepath.Join(dir, "ca.pem"), "-cert-file", filepath.Join(dir, "intruder.pem"), "-key-file", filepath.Join(dir, "intruder-key.pem"))
	x.Start()
	WaitHealthy(t, 20*time.Second, x)
	code, err := x.Do("GET", "/v1/services/red-only?cluster=default", nil, nil)
	if code == 200 {
		t.Fatal("a node with a foreign CA read the cluster's state")
	}
	t.Logf("foreign-CA node refused: %v", err)
	if code != 503 || !strings.Contains(err.Error(), "no_quorum") && !strings.Contains(err.Error(), "timeout") {
		t.Logf("(status %d)", code)
	}
}

// After a permanent loss of quorum (2 of 3 voters destroyed), `meshgw raft
// recover` on the survivor restores service from its data dir.
func TestRaftRecoverAfterQuorumLoss(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitLeader(t, c.Nodes, "default")
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("kept%d", i)
		if _, err := c.Nodes[0].Do("PUT", "/v1/services/"+name, svcDef(name), nil); err != nil {
			t.Fatal(err)
		}
	}
	c.Nodes[1].Kill()
	c.Nodes[2].Kill()
	s := c.Nodes[0]
	Eventually(t, 20*time.Second, func() error {
		code, _ := s.Do("PUT", "/v1/services/nope", svcDef("nope"), nil)
		if code != 503 {
			return fmt.Errorf("write without quorum: %d, want 503", code)
		}
		return nil
	})
	s.Kill()
	args := append([]string{"raft", "recover", "-yes", "-node", s.Name, "-bind", s.Gossip, "-rpc", s.RPC, "-raft", s.Raft,
		"-http", s.HTTP, "-data-dir", s.DataDir}, s.Args...)
	out, stderr, code := CLI(t, args...)
	if code != 0 || !strings.Contains(out, "recovered") || !strings.Contains(stderr, "lost") {
		t.Fatalf("raft recover: %d\n%s\n%s", code, out, stderr)
	}
	t.Logf("recover: %s", strings.TrimSpace(out))
	s.Restart()
	Eventually(t, 30*time.Second, func() error {
		_, err := s.Do("PUT", "/v1/services/after", svcDef("after"), nil)
		return err
	})
	var list []map[string]any
	if _, err := s.Do("GET", "/v1/services", nil, &list); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, x := range list {
		have[x["name"].(string)] = true
	}
	for i := 0; i < 5; i++ {
		if !have[fmt.Sprintf("kept%d", i)] {
			t.Errorf("kept%d lost by the recovery: %v", i, have)
		}
	}
}

// A snapshot of a cluster's state saved from one mesh restores into a new one.
func TestSnapshotSaveRestoreIntoNewMesh(t *testing.T) {
	a := NewNode(t, "old", "-dev")
	a.Start()
	WaitHealthy(t, 30*time.Second, a)
	Eventually(t, 30*time.Second, func() error {
		_, err := a.Do("PUT", "/v1/services/saved", svcDef("saved"), nil)
		return err
	})
	file := filepath.Join(t.TempDir(), "snap")
	if out, stderr, code := CLI(t, "snapshot", "save", file, "-http-addr", a.HTTP); code != 0 {
		t.Fatalf("save: %s %s", out, stderr)
	}
	b := NewNode(t, "new", "-dev")
	b.Start()
	WaitHealthy(t, 30*time.Second, b)
	Eventually(t, 30*time.Second, func() error {
		_, stderr, code := CLI(t, "snapshot", "restore", file, "-http-addr", b.HTTP)
		if code != 0 {
			return fmt.Errorf("restore: %s", stderr)
		}
		return nil
	})
	if _, err := b.Do("GET", "/v1/services/saved", nil, nil); err != nil {
		t.Fatalf("restored state: %v", err)
	}
	// The old mesh's role records do not come along: the new node holds
	// the retention role (again) under its own term.
	Eventually(t, 30*time.Second, func() error {
		r, err := retentionRole(b)
		if err != nil {
			return err
		}
		if r.State != "active" || r.Active != b.Name {
			return fmt.Errorf("retention after the restore: %+v", r)
		}
		return nil
	})
	if code, _ := b.Do("PUT", "/v1/snapshot", []byte("not a snapshot"), nil); code != 400 {
		t.Errorf("garbage snapshot: %d, want 400", code)
	}
	if _, err := b.Do("GET", "/v1/services/saved", nil, nil); err != nil {
		t.Fatalf("a rejected restore changed the state: %v", err)
	}
}
