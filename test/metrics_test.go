package test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// scrape GETs /metrics from n (with token when set) and returns the status
// and body.
func scrape(t testing.TB, n *Node, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.HTTP+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", n.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b)
}

// series is one sample of the text exposition format.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics reads the text format (no escapes in our label values).
func parseMetrics(t testing.TB, text string) []series {
	t.Helper()
	var out []series
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		head, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		s := series{name: head, labels: map[string]string{}, value: v}
		if j := strings.IndexByte(head, '{'); j >= 0 {
			s.name = head[:j]
			for _, kv := range strings.Split(strings.TrimSuffix(head[j+1:], "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
		}
		out = append(out, s)
	}
	return out
}

// metricValue is the value of the one series of name whose labels include
// want; missing is 0 (a counter not yet incremented is not exported).
func metricValue(ss []series, name string, want map[string]string) (float64, int) {
	var v float64
	n := 0
	for _, s := range ss {
		if s.name != name {
			continue
		}
		ok := true
		for k, w := range want {
			if s.labels[k] != w {
				ok = false
				break
			}
		}
		if ok {
			v += s.value
			n++
		}
	}
	return v, n
}

func l(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// TestMetricsCountRunsAndProxy drives runs (succeeded, failed, refused
// with 429) and proxied requests (2xx, 5xx from the upstream, 502 from a
// dead upstream) on a live agent and reads every counter back with its
// exact value; the output passes `promtool check metrics`.
func TestMetricsCountRunsAndProxy(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/err") {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	deadLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := deadLn.Addr().String()
	deadLn.Close() // nothing listens there now: the runner answers 502

	c := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-max-concurrent-execs", "1"} }})
	n := c.Nodes[0]
	WaitLeader(t, c.Nodes, "default")
	putService(t, n, map[string]any{"name": "ok", "type": "exec", "command": []string{"true"}})
	putService(t, n, map[string]any{"name": "bad", "type": "exec", "command": []string{"sh", "-c", "exit 3"}})
	putService(t, n, map[string]any{"name": "slow", "type": "exec", "command": []string{"sleep", "2"}})
	putService(t, n, map[string]any{"name": "web", "type": "http", "upstream": up.URL})
	putService(t, n, map[string]any{"name": "down", "type": "http", "upstream": "http://" + dead})

	run := func(svc string) (int, runResult) {
		var r runResult
		code, err := n.Do("POST", "/v1/services/"+svc+"/run", map[string]any{}, &r)
		if err != nil && code < 400 {
			t.Fatalf("run %s: %v", svc, err)
		}
		return code, r
	}
	for _, svc := range []string{"ok", "ok", "bad"} {
		if code, r := run(svc); code != 200 {
			t.Fatalf("run %s: %d %+v", svc, code, r)
		}
	}
	// slow holds the only execution slot (-max-concurrent-execs 1), so the
	// next run is refused with 429.
	var wg sync.WaitGroup
	wg.Add(1)
	slowCode := 0
	go func() { defer wg.Done(); slowCode, _ = run("slow") }()
	Eventually(t, 10*time.Second, func() error {
		_, body := scrape(t, n, "")
		v, _ := metricValue(parseMetrics(t, body), "meshgw_executions_in_flight", l("service", "slow"))
		if v != 1 {
			return fmt.Errorf("slow in flight = %v", v)
		}
		return nil
	})
	if code, r := run("ok"); code != http.StatusTooManyRequests {
		t.Fatalf("run ok while slow holds the slot: %d %+v, want 429", code, r)
	}
	wg.Wait()
	if slowCode != 200 {
		t.Fatalf("slow: %d", slowCode)
	}

	get := func(path string, want int) {
		resp, err := http.Get("http://" + n.HTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	for range 3 {
		get("/svc/web/hello", 200)
	}
	get("/svc/web/err", 500)
	get("/svc/down/x", 502)
	get("/svc/no-such-service/x", 404)

	_, body := scrape(t, n, "")
	ss := parseMetrics(t, body)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"meshgw_executions_started_total", l("cluster", "default", "service", "ok"), 3},
		{"meshgw_executions_started_total", l("service", "bad"), 1},
		{"meshgw_executions_started_total", l("service", "slow"), 1},
		{"meshgw_executions_finished_total", l("service", "ok", "status", "succeeded"), 2},
		// The refused run was accepted, found every runner busy and
		// ended failed: it is both finished and refused.
		{"meshgw_executions_finished_total", l("service", "ok", "status", "failed"), 1},
		{"meshgw_executions_finished_total", l("service", "bad", "status", "failed"), 1},
		{"meshgw_executions_finished_total", l("service", "slow", "status", "succeeded"), 1},
		{"meshgw_executions_refused_total", l("service", "ok"), 1},
		{"meshgw_executions_refused_total", l("service", "bad"), 0},
		{"meshgw_executions_in_flight", l("service", "slow"), 0},
		{"meshgw_executions_in_flight", l("service", "ok"), 0},
		{"meshgw_execution_duration_seconds_count", l("service", "ok"), 3},
		{"meshgw_execution_duration_seconds_count", l("service", "slow"), 1},
		{"meshgw_proxy_requests_total", l("service", "web", "code", "2xx"), 3},
		{"meshgw_proxy_requests_total", l("service", "web", "code", "5xx"), 1},
		{"meshgw_proxy_requests_total", l("service", "down", "code", "5xx"), 1},
		{"meshgw_proxy_request_duration_seconds_count", l("service", "web"), 4},
		{"meshgw_proxy_upstream_errors_total", l("service", "web"), 0},
		{"meshgw_proxy_upstream_errors_total", l("service", "down", "reason", "upstream_unreachable"), 1},
		// An unknown service never becomes a label.
		{"meshgw_proxy_requests_total", l("service", "no-such-service"), 0},
		{"meshgw_http_requests_total", l("route", "POST /v1/services/{name}/run", "code", "2xx"), 4},
		{"meshgw_http_requests_total", l("route", "POST /v1/services/{name}/run", "code", "4xx"), 1},
		{"meshgw_http_requests_total", l("route", "/svc/{name}/{path...}", "code", "2xx"), 3},
		{"meshgw_http_requests_total", l("route", "/svc/{name}/{path...}", "code", "4xx"), 1},
		{"meshgw_http_requests_total", l("route", "/svc/{name}/{path...}", "code", "5xx"), 2},
		{"meshgw_raft_leader_present", l("cluster", "default"), 1},
		{"meshgw_raft_is_leader", l("cluster", "default"), 1},
		{"meshgw_raft_voters", l("cluster", "default"), 1},
		{"meshgw_raft_voters_alive", l("cluster", "default"), 1},
		{"meshgw_gossip_events_dropped_total", nil, 0},
		{"meshgw_gossip_member_flaps_total", nil, 0},
	} {
		if got, _ := metricValue(ss, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"meshgw_raft_term", "meshgw_raft_applied_index", "meshgw_raft_proposals_total"} {
		if v, n := metricValue(ss, name, l("cluster", "default")); n != 1 || v < 1 {
			t.Errorf("%s = %v (%d series), want one series >= 1", name, v, n)
		}
	}
	if v, n := metricValue(ss, "meshgw_raft_proposal_failures_total", l("cluster", "default")); n != 1 || v != 0 {
		t.Errorf("proposal failures = %v (%d series), want 0", v, n)
	}
	for _, bad := range []string{"no-such-service", "/hello", "execution_id"} {
		if strings.Contains(body, bad) {
			t.Errorf("the metrics name %q: paths, IDs and unknown names must not be labels", bad)
		}
	}
	promtoolCheck(t, body)
}

// promtoolCheck runs `promtool check metrics` on a scrape, or says why not.
func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (Debian package prometheus; .ci/run installs it): " +
			"the counters were checked, `promtool check metrics` was not run")
	}
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestMetricsACL: under -acl, /metrics needs a token unless
// -metrics-public opens it; other routes stay closed either way.
func TestMetricsACL(t *testing.T) {
	closed := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-acl"} }}).Nodes[0]
	open := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-acl", "-metrics-public"} }}).Nodes[0]
	var boot struct {
		Secret string `json:"secret_id"`
	}
	Eventually(t, 20*time.Second, func() error {
		_, err := closed.Do("POST", "/v1/acl/bootstrap", nil, &boot)
		return err
	})
	if code, body := scrape(t, closed, ""); code != http.StatusUnauthorized {
		t.Fatalf("closed /metrics without token: %d %.200s, want 401", code, body)
	}
	if code, body := scrape(t, closed, boot.Secret); code != 200 || !strings.Contains(body, "meshgw_raft_voters") {
		t.Fatalf("closed /metrics with the management token: %d %.200s", code, body)
	}
	code, body := scrape(t, open, "")
	if code != 200 || !strings.Contains(body, "meshgw_members") {
		t.Fatalf("-metrics-public /metrics without token: %d %.200s", code, body)
	}
	if code, _ := open.Do("GET", "/v1/status", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("-metrics-public /v1/status without token: %d, want 401", code)
	}
	promtoolCheck(t, body)
}

// TestRaftMetricsShowQuorumLoss: in a healthy 3-node group exactly one
// node reports is_leader and every node a leader and 3 live voters; after
// kill -9 of two, the survivor reports 1 of 3 voters alive and no leader,
// what an alert on meshgw_raft_leader_present == 0 fires on.
func TestRaftMetricsShowQuorumLoss(t *testing.T) {
	c := StartCluster(t, 3, Options{Profile: "lan"})
	WaitLeader(t, c.Nodes, "default")
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	group := l("cluster", "default")
	Eventually(t, 10*time.Second, func() error {
		leaders := 0.0
		for _, n := range c.Nodes {
			_, body := scrape(t, n, "")
			ss := parseMetrics(t, body)
			for name, want := range map[string]float64{"meshgw_raft_leader_present": 1, "meshgw_raft_voters": 3,
				"meshgw_raft_voters_alive": 3} {
				if v, _ := metricValue(ss, name, group); v != want {
					return fmt.Errorf("%s on %s = %v, want %v", name, n.Name, v, want)
				}
			}
			v, _ := metricValue(ss, "meshgw_raft_is_leader", group)
			leaders += v
		}
		if leaders != 1 {
			return fmt.Errorf("%v nodes report is_leader, want 1", leaders)
		}
		return nil
	})
	c.Nodes[1].Kill()
	c.Nodes[2].Kill()
	Eventually(t, 30*time.Second, func() error {
		_, body := scrape(t, c.Nodes[0], "")
		ss := parseMetrics(t, body)
		for name, want := range map[string]float64{"meshgw_raft_leader_present": 0, "meshgw_raft_is_leader": 0,
			"meshgw_raft_voters": 3, "meshgw_raft_voters_alive": 1} {
			if v, _ := metricValue(ss, name, group); v != want {
				return fmt.Errorf("%s on the survivor = %v, want %v", name, v, want)
			}
		}
		return nil
	})
}
