package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
)

func init() { InstallLibraryLoggers(zerolog.Nop()) }

func do(method, addr, path string, body any, out any) (int, error) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+addr+path, rd)
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, buf.String())
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(buf.Bytes(), out)
	}
	return resp.StatusCode, nil
}

func leaderOf(addr string) (string, error) {
	var st httpapi.Status
	if _, err := do("GET", addr, "/v1/status", nil, &st); err != nil {
		return "", err
	}
	for _, g := range st.Groups {
		if g.Cluster == "default" && g.Leader != "" {
			return g.Leader, nil
		}
	}
	return "", fmt.Errorf("no leader in %+v", st.Groups)
}

func TestReplicatedServicesSurviveLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node Raft cluster")
	}
	a1 := startAgent(t, testConfig(t, "s1", nil))
	join := []string{a1.cfg.BindAddr}
	agents := map[string]*Agent{"s1": a1}
	for _, n := range []string{"s2", "s3"} {
		agents[n] = startAgent(t, testConfig(t, n, func(c *config.Runtime) { c.Join = join }))
	}
	// A node of another cluster holds no replica of "default" and forwards.
	other := startAgent(t, testConfig(t, "o1", func(c *config.Runtime) { c.Join = join; c.Cluster = "other" }))

	svc := func(i int) map[string]any {
		return map[string]any{"name": fmt.Sprintf("svc%d", i), "type": "exec", "command": []string{"echo", fmt.Sprint(i)}}
	}
	eventually(t, 30*time.Second, func() error {
		_, err := do("PUT", a1.HTTPAddr(), "/v1/services/svc0", svc(0), nil)
		return err
	})
	for _, a := range []*Agent{agents["s2"], agents["s3"]} {
		var got map[string]any
		if _, err := do("GET", a.HTTPAddr(), "/v1/services/svc0", nil, &got); err != nil || got["version"] == nil {
			t.Fatalf("read on %s: %v %v", a.cfg.NodeName, got, err)
		}
	}
	var fwd map[string]any
	if _, err := do("GET", other.HTTPAddr(), "/v1/services/svc0?cluster=default", nil, &fwd); err != nil {
		t.Fatalf("forwarded read from another cluster's node: %v", err)
	}
	// CAS: a stale version is refused.
	if code, _ := do("PUT", a1.HTTPAddr(), "/v1/services/svc0?cas=999999", svc(0), nil); code != 409 {
		t.Fatalf("stale cas: %d", code)
	}

	// The group is formed: every voter runs its replica.
	for _, a := range agents {
		a := a
		eventually(t, 20*time.Second, func() error {
			var st httpapi.Status
			if _, err := do("GET", a.HTTPAddr(), "/v1/status", nil, &st); err != nil {
				return err
			}
			if len(st.Groups) == 0 || !st.Groups[0].Local || st.Groups[0].Leader == "" {
				return fmt.Errorf("%s: %+v", a.cfg.NodeName, st.Groups)
			}
			return nil
		})
	}
	var leader string
	eventually(t, 10*time.Second, func() (err error) { leader, err = leaderOf(a1.HTTPAddr()); return })
	acked := []string{"svc0"}
	for i := 1; i <= 5; i++ {
		if _, err := do("PUT", a1.HTTPAddr(), fmt.Sprintf("/v1/services/svc%d", i), svc(i), nil); err == nil {
			acked = append(acked, fmt.Sprintf("svc%d", i))
		}
	}
	agents[leader].Shutdown() // like kill -9
	delete(agents, leader)
	var survivor *Agent
	for _, a := range agents {
		survivor = a
	}
	for i := 6; i <= 10; i++ {
		i := i
		eventually(t, 20*time.Second, func() error {
			_, err := do("PUT", survivor.HTTPAddr(), fmt.Sprintf("/v1/services/svc%d", i), svc(i), nil)
			return err
		})
		acked = append(acked, fmt.Sprintf("svc%d", i))
	}
	for _, a := range agents {
		var list []map[string]any
		if _, err := do("GET", a.HTTPAddr(), "/v1/services", nil, &list); err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, s := range list {
			have[s["name"].(string)] = true
		}
		for _, name := range acked {
			if !have[name] {
				t.Errorf("%s lost acknowledged write %s", a.cfg.NodeName, name)
			}
		}
	}
	_ = context.Background
}

func groupOf(addr string) (httpapi.GroupStatus, error) {
	var st httpapi.Status
	if _, err := do("GET", addr, "/v1/status", nil, &st); err != nil {
		return httpapi.GroupStatus{}, err
	}
	for _, g := range st.Groups {
		if g.Cluster == "default" {
			return g, nil
		}
	}
	return httpapi.GroupStatus{}, fmt.Errorf("no local group")
}

func TestAutopilotReplacesDeadVoter(t *testing.T) {
	if testing.Short() {
		t.Skip("5-node Raft cluster")
	}
	a1 := startAgent(t, testConfig(t, "p1", nil))
	join := []string{a1.cfg.BindAddr}
	agents := map[string]*Agent{"p1": a1}
	for _, n := range []string{"p2", "p3", "p4", "p5"} {
		agents[n] = startAgent(t, testConfig(t, n, func(c *config.Runtime) { c.Join = join }))
	}
	var g httpapi.GroupStatus
	eventually(t, 60*time.Second, func() (err error) {
		g, err = groupOf(a1.HTTPAddr())
		if err == nil && (len(g.Replicas) != 3 || g.Leader == "") {
			err = fmt.Errorf("group %+v", g)
		}
		return err
	})
	var victim string
	for _, r := range g.Replicas {
		if r.Node != g.Leader {
			victim = r.Node
			break
		}
	}
	agents[victim].Shutdown()
	delete(agents, victim)
	var survivor *Agent
	for _, a := range agents {
		survivor = a
	}
	// After the dead-voter timeout (2 s here) a live node replaces it.
	eventually(t, 30*time.Second, func() error {
		var g httpapi.GroupStatus
		err := fmt.Errorf("no survivor hosts the group")
		for _, a := range agents { // any survivor that holds a replica
			if g, err = groupOf(a.HTTPAddr()); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, r := range g.Replicas {
			names[r.Node] = true
		}
		if names[victim] || len(g.Replicas) != 3 {
			return fmt.Errorf("voters %+v still include %s or are not 3", g.Replicas, victim)
		}
		for n := range names {
			if agents[n] == nil {
				return fmt.Errorf("voter %q is not a live node", n)
			}
		}
		return nil
	})
	// And the group still takes writes.
	eventually(t, 10*time.Second, func() error {
		_, err := do("PUT", survivor.HTTPAddr(), "/v1/services/after", map[string]any{"name": "after", "type": "exec", "command": []string{"true"}}, nil)
		return err
	})
}

func TestRunThroughAnyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	a1 := startAgent(t, testConfig(t, "r1", func(c *config.Runtime) { c.Roles = []string{"gateway"} }))
	join := []string{a1.cfg.BindAddr}
	startAgent(t, testConfig(t, "r2", func(c *config.Runtime) { c.Join = join }))
	startAgent(t, testConfig(t, "r3", func(c *config.Runtime) { c.Join = join }))
	eventually(t, 30*time.Second, func() error {
		_, err := do("PUT", a1.HTTPAddr(), "/v1/services/cat", map[string]any{"name": "cat", "type": "exec", "command": []string{"cat"},
			"decorator": map[string]any{"type": "object", "required": []string{"n"}}}, nil)
		return err
	})
	runners := map[string]bool{}
	for i := 0; i < 6; i++ {
		var res map[string]any
		if _, err := do("POST", a1.HTTPAddr(), "/v1/services/cat/run", map[string]any{"n": i}, &res); err != nil {
			t.Fatal(err)
		}
		if res["status"] != "succeeded" || res["stdout"] != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("run: %+v", res)
		}
		runners[res["runner"].(string)] = true
	}
	if runners["r1"] || len(runners) != 2 {
		t.Fatalf("runs went to %v; want both runners, never the gateway-only r1", runners)
	}
	if code, _ := do("POST", a1.HTTPAddr(), "/v1/services/cat/run", map[string]any{"m": 1}, nil); code != 400 {
		t.Fatalf("schema violation: %d", code)
	}
	var list []map[string]any
	if _, err := do("GET", a1.HTTPAddr(), "/v1/executions?service=cat&status=succeeded", nil, &list); err != nil || len(list) != 6 {
		t.Fatalf("executions: %d %v", len(list), err)
	}
}

// A voter that leaves gracefully is replaced at once, without waiting for
// the dead-voter timeout (set to a minute here).
func TestLeftVoterIsReplacedAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("4-node Raft cluster")
	}
	slow := func(c *config.Runtime) { c.AutopilotDeadAfter = time.Minute }
	a1 := startAgent(t, testConfig(t, "q1", slow))
	join := []string{a1.cfg.BindAddr}
	agents := map[string]*Agent{"q1": a1}
	for _, n := range []string{"q2", "q3", "q4"} {
		agents[n] = startAgent(t, testConfig(t, n, func(c *config.Runtime) { slow(c); c.Join = join }))
	}
	var g httpapi.GroupStatus
	eventually(t, 60*time.Second, func() (err error) {
		g, err = groupOf(a1.HTTPAddr())
		if err == nil && (len(g.Replicas) != 3 || g.Leader == "") {
			err = fmt.Errorf("group %+v", g)
		}
		return err
	})
	var leaving string
	for _, r := range g.Replicas {
		if r.Node != g.Leader {
			leaving = r.Node
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := agents[leaving].Stop(ctx); err != nil {
		t.Fatal(err)
	}
	delete(agents, leaving)
	eventually(t, 30*time.Second, func() error {
		g, err := groupOf(agents[g.Leader].HTTPAddr())
		if err != nil {
			return err
		}
		for _, r := range g.Replicas {
			if r.Node == leaving {
				return fmt.Errorf("%s still a voter", leaving)
			}
		}
		if len(g.Replicas) != 3 {
			return fmt.Errorf("voters %+v", g.Replicas)
		}
		return nil
	})
	if took := time.Since(start); took > 45*time.Second {
		t.Fatalf("replacement took %s: it waited for the dead-voter timeout", took)
	}
}

// A mesh with a WAN's Raft timing (-raft-rtt 100ms, as -gossip-profile wan
// picks): the group forms with 1 s election timeouts, says so in
// /v1/status, takes writes, and elects a new leader when the leader dies.
func TestWANRaftTimingFormsAndFailsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node Raft cluster")
	}
	// 200 ms: elections after 2-4 s, and a proposal timeout (3 election
	// timeouts) of 6 s that a write during the failover must not wait out.
	slow := func(c *config.Runtime) { c.RaftRTT = 200 * time.Millisecond }
	a1 := startAgent(t, testConfig(t, "w1", slow))
	agents := map[string]*Agent{"w1": a1}
	for _, n := range []string{"w2", "w3"} {
		agents[n] = startAgent(t, testConfig(t, n, func(c *config.Runtime) { slow(c); c.Join = []string{a1.cfg.BindAddr} }))
	}
	put := func(a *Agent, i int) error {
		_, err := do("PUT", a.HTTPAddr(), fmt.Sprintf("/v1/services/wan%d", i),
			map[string]any{"name": fmt.Sprintf("wan%d", i), "type": "exec", "command": []string{"true"}}, nil)
		return err
	}
	eventually(t, 30*time.Second, func() error { return put(a1, 0) })
	g, err := groupOf(a1.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	if g.ElectionTimeoutMs != 2000 || g.HeartbeatMs != 200 {
		t.Fatalf("status says election %d ms, heartbeat %d ms; want 2000 and 200", g.ElectionTimeoutMs, g.HeartbeatMs)
	}
	var leader string
	eventually(t, 10*time.Second, func() (err error) { leader, err = leaderOf(a1.HTTPAddr()); return })
	agents[leader].Shutdown()
	delete(agents, leader)
	var survivor *Agent
	for _, a := range agents {
		survivor = a
	}
	// One write, sent at once: the survivor still takes the dead node for
	// the leader and hands it the proposal, which is lost. It must land
	// once the group has a new leader, not after the 6 s proposal timeout.
	start := time.Now()
	if err := put(survivor, 1); err != nil {
		t.Fatalf("write during the failover: %v (after %s)", err, time.Since(start))
	}
	if took := time.Since(start); took >= 6*time.Second {
		t.Errorf("write during the failover took %s: it waited out the proposal timeout", took)
	} else {
		t.Logf("write during the failover took %s", took)
	}
	if _, err := do("GET", survivor.HTTPAddr(), "/v1/services/wan0", nil, nil); err != nil {
		t.Fatalf("%s lost wan0: %v", survivor.cfg.NodeName, err)
	}
}
