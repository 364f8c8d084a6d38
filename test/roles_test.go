package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

type roleEntry struct {
	Cluster  string     `json:"cluster"`
	Role     string     `json:"role"`
	Active   string     `json:"active"`
	Standbys []string   `json:"standbys"`
	Since    *time.Time `json:"since"`
	Fence    uint64     `json:"fence"`
	State    string     `json:"state"`
}

func retentionRole(n *Node) (roleEntry, error) {
	var rs []roleEntry
	if err := n.GetJSON("/v1/roles", &rs); err != nil {
		return roleEntry{}, err
	}
	for _, r := range rs {
		if r.Role == "retention" {
			return r, nil
		}
	}
	return roleEntry{}, fmt.Errorf("%s lists no retention role: %+v", n.Name, rs)
}

// TestRolesMoveWithTheLeader: the retention role runs on the Raft leader,
// fenced by its term, with the other voters standing by. After kill -9 of
// the leader, a survivor shows the new active, with a higher fence, within
// 3 s plus the lease, from `meshgw roles` too; the node without a replica
// shows it from the fence key; and the new active recovers an async
// execution the dead leader had accepted (recovery is the role's work).
func TestRolesMoveWithTheLeader(t *testing.T) {
	c := StartCluster(t, 4, Options{BootstrapExpect: 3, Extra: func(i int) []string {
		if i == 3 {
			return []string{"-roles", "gateway"}
		}
		return nil
	}})
	voters := c.Nodes[:3]
	leader := byName(voters, WaitLeader(t, voters, "default"))
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	var before roleEntry
	Eventually(t, 30*time.Second, func() error {
		g, err := leader.Group("default")
		if err != nil {
			return err
		}
		for _, n := range c.Nodes {
			r, err := retentionRole(n)
			if err != nil {
				return err
			}
			if r.State != "active" || r.Active != leader.Name || r.Fence != g.Term || r.Since == nil {
				return fmt.Errorf("%s shows %+v, want %s active at term %d", n.Name, r, leader.Name, g.Term)
			}
			if len(r.Standbys) != 2 || strings.Contains(strings.Join(r.Standbys, ","), leader.Name) ||
				strings.Contains(strings.Join(r.Standbys, ","), c.Nodes[3].Name) {
				return fmt.Errorf("%s shows standbys %v: want the two other voters", n.Name, r.Standbys)
			}
			before = r
		}
		return nil
	})

	var lease time.Duration
	var st struct {
		Groups []struct {
			ElectionTimeoutMs int64 `json:"election_timeout_ms"`
		} `json:"groups"`
	}
	if err := leader.GetJSON("/v1/status", &st); err != nil || len(st.Groups) == 0 {
		t.Fatalf("status: %v %+v", err, st)
	}
	lease = 3 * time.Duration(st.Groups[0].ElectionTimeoutMs) * time.Millisecond

	// An async run accepted by the leader, still running when it dies.
	putService(t, leader, map[string]any{"name": "slow", "type": "exec",
		"command": []string{"sh", "-c", "sleep 2; echo ok"}, "retries": 2, "runner_tags": map[string]string{}})
	var run runResult
	if code, err := leader.Do("POST", "/v1/services/slow/run?async=true", map[string]any{}, &run); err != nil || code != 202 {
		t.Fatalf("async run on the leader: %d %v", code, err)
	}

	leader.Kill()
	killed := time.Now()
	var survivor *Node
	for _, n := range voters {
		if n != leader {
			survivor = n
			break
		}
	}
	var after roleEntry
	bound := 3*time.Second + lease
	for {
		r, err := retentionRole(survivor)
		if err == nil && r.State == "active" && r.Active != "" && r.Active != leader.Name {
			after = r
			break
		}
		if time.Since(killed) > bound {
			t.Fatalf("no new active on %s %s after kill -9 of %s (bound 3s + lease %s): last %+v %v",
				survivor.Name, time.Since(killed).Round(time.Millisecond), leader.Name, lease, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(killed)
	t.Logf("new active %s at fence %d, %s after kill -9 (lease %s)", after.Active, after.Fence, took.Round(time.Millisecond), lease)
	if after.Fence <= before.Fence {
		t.Fatalf("fence %d after the hand-over, want above %d", after.Fence, before.Fence)
	}
	if after.Since == nil || !after.Since.After(*before.Since) {
		t.Fatalf("since %v, want after %v", after.Since, before.Since)
	}

	out, errOut, code := CLI(t, "roles", "-http-addr", survivor.HTTP, "-format", "json")
	var cli []roleEntry
	if code != 0 || json.Unmarshal([]byte(out), &cli) != nil || len(cli) == 0 ||
		cli[0].Active != after.Active || cli[0].Fence != after.Fence {
		t.Fatalf("meshgw roles -format json: exit %d, %q %q", code, out, errOut)
	}
	out, errOut, code = CLI(t, "roles", "-http-addr", c.Nodes[3].HTTP)
	if code != 0 || !strings.Contains(out, "retention") || !strings.Contains(out, after.Active) {
		t.Fatalf("meshgw roles on the node without a replica: exit %d, %q %q", code, out, errOut)
	}

	Eventually(t, 90*time.Second, func() error {
		// Taken over: driven to its end by another node than the dead
		// leader that accepted it.
		var rec struct {
			Status     string `json:"status"`
			Owner      string `json:"owner"`
			AcceptedBy string `json:"accepted_by"`
		}
		if _, err := survivor.Do("GET", "/v1/executions/"+run.ID, nil, &rec); err != nil {
			return err
		}
		if rec.Status != "succeeded" || rec.AcceptedBy != leader.Name || rec.Owner == leader.Name {
			return fmt.Errorf("execution %s: %+v", run.ID, rec)
		}
		return nil
	})
}
