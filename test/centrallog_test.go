package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logEntry is one entry of GET /v1/logs.
type logEntry struct {
	ID            string  `json:"id"`
	Node          string  `json:"node"`
	Kind          string  `json:"kind"`
	Service       string  `json:"service"`
	Method        string  `json:"method"`
	Path          string  `json:"path"`
	Status        int     `json:"status"`
	DurationMS    float64 `json:"duration_ms"`
	ClientIP      string  `json:"client_ip"`
	TokenAccessor string  `json:"token_accessor"`
	ExecutionID   string  `json:"execution_id"`
}

// authDo sends a request with a token (none when secret is empty) to
// base+path and returns the status and body.
func authDo(base, method, path, secret string, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// startRsyslog runs Debian's rsyslogd with imtcp on a free port, writing
// the structured data and message of each entry to a file; "" when
// rsyslogd is not installed.
func startRsyslog(t *testing.T) (addr, out string) {
	rsd, err := exec.LookPath("rsyslogd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/rsyslogd"); serr != nil {
			return "", ""
		}
		rsd = "/usr/sbin/rsyslogd"
	}
	dir := t.TempDir()
	port := freePort(t)
	out = filepath.Join(dir, "out.log")
	conf := fmt.Sprintf(`global(workDirectory=%q maxMessageSize="64k")
module(load="imtcp")
template(name="raw" type="string" string="%%structured-data%% %%msg%%\n")
ruleset(name="meshgw") { action(type="omfile" file=%q template="raw") }
input(type="imtcp" port="%d" address="127.0.0.1" ruleset="meshgw")
`, dir, out, port)
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rsd, "-n", "-f", cf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rsyslogd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("rsyslogd output: %s", logb.String())
		}
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	Eventually(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return addr, out
}

// TestCentralLog runs one 3-agent cluster (ACLs on, a data-plane listener
// each, syslog to rsyslog) through the central log's promises: who may
// read it; the log shows who changed a service; `meshgw logs -f` on one
// node shows a request made through another; 1,000 answered requests
// through random nodes have exactly 1,000 entries, with kill -9 of the
// active logger midway and of a serving node right after it answered;
// syslog receives every entry, in order, across the failover; and the log
// shard follows the state group when a dead voter is replaced.
func TestCentralLog(t *testing.T) {
	rsAddr, rsOut := startRsyslog(t)
	dp := make([]string, 4) // the 4th for the node added last
	for i := range dp {
		dp[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		args := []string{"-acl", "-proxy", dp[i]}
		if rsAddr != "" {
			args = append(args, "-syslog", "tcp://"+rsAddr)
		}
		return args
	}})
	WaitHealthy(t, 30*time.Second, c.Nodes...)
	api := func(n *Node) string { return "http://" + n.HTTP }
	mgmt := bootstrapACL(t, c.Nodes[0])
	var who struct {
		Accessor string `json:"accessor_id"`
	}
	if _, b, err := authDo(api(c.Nodes[0]), "GET", "/v1/acl/whoami", mgmt, nil); err != nil || json.Unmarshal(b, &who) != nil {
		t.Fatalf("whoami: %s %v", b, err)
	}
	var readTok struct {
		Secret string `json:"secret_id"`
	}
	if code, b, err := authDo(api(c.Nodes[0]), "POST", "/v1/acl/tokens", mgmt, []byte(`{"policies":["read","run"]}`)); err != nil || code != 200 || json.Unmarshal(b, &readTok) != nil {
		t.Fatalf("create read token: %d %s %v", code, b, err)
	}
	var runTok struct {
		Secret string `json:"secret_id"`
	}
	if code, b, err := authDo(api(c.Nodes[0]), "POST", "/v1/acl/tokens", mgmt, []byte(`{"policies":["run:web"]}`)); err != nil || code != 200 || json.Unmarshal(b, &runTok) != nil {
		t.Fatalf("create run token: %d %s %v", code, b, err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	def, _ := json.Marshal(map[string]any{"name": "web", "type": "http", "upstream": up.URL})
	Eventually(t, 20*time.Second, func() error {
		code, b, err := authDo(api(c.Nodes[1]), "PUT", "/v1/services/web", mgmt, def)
		if err != nil || code != 200 {
			return fmt.Errorf("put web: %d %s %v", code, b, err)
		}
		return nil
	})
	logs := func(n *Node, q string) ([]logEntry, error) {
		code, b, err := authDo(api(n), "GET", "/v1/logs?"+q, mgmt, nil)
		if err != nil || code != 200 {
			return nil, fmt.Errorf("logs on %s: %d %s %v", n.Name, code, b, err)
		}
		var es []logEntry
		return es, json.Unmarshal(b, &es)
	}

	// The log is readable from every node once the first logger created
	// its shard (503 before).
	Eventually(t, 30*time.Second, func() error {
		for _, n := range c.Nodes {
			if _, err := logs(n, "limit=1"); err != nil {
				return err
			}
		}
		return nil
	})

	t.Run("who may read it", func(t *testing.T) {
		n := c.Nodes[2]
		for _, tc := range []struct {
			path, secret string
			want         int
		}{
			{"/v1/logs", "", 401}, {"/v1/logs", readTok.Secret, 403}, {"/v1/logs?follow=true&limit=1", readTok.Secret, 403},
			{"/v1/kpis", "", 401}, {"/v1/kpis", runTok.Secret, 403}, {"/v1/kpis", readTok.Secret, 200}, {"/v1/logs?kind=nope", mgmt, 400},
		} {
			code, b, err := authDo(api(n), "GET", tc.path, tc.secret, nil)
			if err != nil || code != tc.want {
				t.Errorf("GET %s (token %t): %d %s %v, want %d", tc.path, tc.secret != "", code, b, err, tc.want)
			}
		}
	})

	t.Run("shows who changed a service", func(t *testing.T) {
		Eventually(t, 20*time.Second, func() error {
			es, err := logs(c.Nodes[0], "kind=admin&service=web")
			if err != nil {
				return err
			}
			for _, e := range es {
				if e.Method == "PUT" && e.Path == "/v1/services/web" && e.Status == 200 && e.Node == c.Nodes[1].Name &&
					e.TokenAccessor == who.Accessor && e.ClientIP == "127.0.0.1" {
					return nil
				}
			}
			return fmt.Errorf("no admin entry for the PUT of web by %s through %s: %+v", who.Accessor, c.Nodes[1].Name, es)
		})
	})

	t.Run("a run has its entry and the kpis count it", func(t *testing.T) {
		echo, _ := json.Marshal(map[string]any{"name": "echo", "type": "exec", "command": []string{"echo", "hi"}})
		if code, b, err := authDo(api(c.Nodes[0]), "PUT", "/v1/services/echo", mgmt, echo); err != nil || code != 200 {
			t.Fatalf("put echo: %d %s %v", code, b, err)
		}
		var run struct {
			ID string `json:"execution_id"`
		}
		if code, b, err := authDo(api(c.Nodes[2]), "POST", "/v1/services/echo/run", mgmt, []byte("{}")); err != nil || code != 200 || json.Unmarshal(b, &run) != nil || run.ID == "" {
			t.Fatalf("run echo: %d %s %v", code, b, err)
		}
		Eventually(t, 20*time.Second, func() error {
			es, err := logs(c.Nodes[1], "kind=run&service=echo")
			if err != nil {
				return err
			}
			if len(es) != 1 || es[0].ExecutionID != run.ID || es[0].Status != 200 || es[0].Node != c.Nodes[2].Name {
				return fmt.Errorf("run entries %+v, want one for execution %s through %s", es, run.ID, c.Nodes[2].Name)
			}
			var ks []struct {
				Service string `json:"service"`
				Count   int    `json:"count"`
			}
			if _, b, err := authDo(api(c.Nodes[1]), "GET", "/v1/kpis?service=echo&window=1h", readTok.Secret, nil); err != nil || json.Unmarshal(b, &ks) != nil {
				return fmt.Errorf("kpis: %s %v", b, err)
			}
			if len(ks) != 1 || ks[0].Count != 1 {
				return fmt.Errorf("kpis of echo: %+v, want a count of 1", ks)
			}
			return nil
		})
	})

	t.Run("follow on one node shows a request through another", func(t *testing.T) {
		cmd := exec.Command(bin, "logs", "-f", "-service", "web", "-kind", "http", "-limit", "1",
			"-http-addr", c.Nodes[0].HTTP, "-token", mgmt)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		path := fmt.Sprintf("/svc/web/follow-%d", rand.Int64())
		deadline := time.After(20 * time.Second)
		sent := time.Now().Add(-time.Hour)
		for {
			if time.Since(sent) > 2*time.Second { // the stream may start after the first request
				if code, b, err := authDo("http://"+dp[2], "GET", path, mgmt, nil); err != nil || code != 200 {
					t.Fatalf("GET %s through %s: %d %s %v", path, c.Nodes[2].Name, code, b, err)
				}
				sent = time.Now()
			}
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("meshgw logs -f ended")
				}
				if strings.Contains(l, path) && strings.Contains(l, " "+c.Nodes[2].Name+" http web GET ") {
					return
				}
			case <-deadline:
				t.Fatalf("meshgw logs -f on %s never showed %s through %s", c.Nodes[0].Name, path, c.Nodes[2].Name)
			case <-time.After(100 * time.Millisecond):
			}
		}
	})

	t.Run("1000 answered requests have 1000 entries through kills", func(t *testing.T) {
		var answered atomic.Int64
		var mu sync.Mutex
		perPath := map[string]int{}
		send := func(i int, nodes []int) {
			path := fmt.Sprintf("/svc/web/r/%d", i)
			for try := 0; try < 20; try++ {
				k := nodes[rand.IntN(len(nodes))]
				base := "http://" + dp[k]
				if rand.IntN(2) == 0 {
					base = api(c.Nodes[k])
				}
				code, _, err := authDo(base, "GET", path, mgmt, nil)
				if err != nil {
					continue // no answer: no entry is promised
				}
				answered.Add(1)
				mu.Lock()
				perPath[path]++
				mu.Unlock()
				if code == 200 {
					return
				}
			}
			t.Errorf("request %d never answered 200", i)
		}
		phase := func(from, to int, nodes []int) {
			var wg sync.WaitGroup
			next := make(chan int)
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						send(i, nodes)
					}
				}()
			}
			for i := from; i < to; i++ {
				next <- i
			}
			close(next)
			wg.Wait()
		}
		index := func(n *Node) int {
			for i, m := range c.Nodes {
				if m == n {
					return i
				}
			}
			return -1
		}
		activeLogger := func() *Node {
			var active *Node
			Eventually(t, 30*time.Second, func() error {
				for _, n := range c.Nodes {
					if !n.Running() {
						continue
					}
					var rs []roleEntry
					if _, b, err := authDo(api(n), "GET", "/v1/roles", mgmt, nil); err != nil || json.Unmarshal(b, &rs) != nil {
						return fmt.Errorf("roles on %s: %v", n.Name, err)
					}
					for _, r := range rs {
						if r.Role == "central-logger" && r.State == "active" {
							if active = byName(c.Nodes, r.Active); active != nil && active.Running() {
								return nil
							}
						}
					}
				}
				return fmt.Errorf("no central logger active")
			})
			return active
		}
		all := []int{0, 1, 2}
		phase(0, 500, all)
		logger := activeLogger()
		logger.Kill()
		var survivors []int
		for i := range c.Nodes {
			if c.Nodes[i] != logger {
				survivors = append(survivors, i)
			}
		}
		phase(500, 800, survivors)
		logger.Restart()
		WaitHealthy(t, 30*time.Second, logger)
		phase(800, 900, all)
		// Kill a serving node right after it answered: its entry is in
		// its spool only (shipping waits a few milliseconds for a batch).
		now := activeLogger()
		victim := c.Nodes[survivors[0]]
		if victim == now {
			victim = c.Nodes[survivors[1]]
		}
		path := "/svc/web/r/900"
		if code, _, err := authDo("http://"+dp[index(victim)], "GET", path, mgmt, nil); err != nil || code != 200 {
			t.Fatalf("GET %s through %s: %d %v", path, victim.Name, code, err)
		}
		victim.Kill()
		answered.Add(1)
		perPath[path]++
		var rest []int
		for _, i := range all {
			if c.Nodes[i] != victim {
				rest = append(rest, i)
			}
		}
		phase(901, 1000, rest)
		victim.Restart()
		WaitHealthy(t, 30*time.Second, victim)

		want := int(answered.Load())
		if want < 1000 {
			t.Fatalf("only %d requests answered", want)
		}
		Eventually(t, 30*time.Second, func() error {
			es, err := logs(c.Nodes[rand.IntN(3)], "service=web&kind=http&limit=10000")
			if err != nil {
				return err
			}
			ids := map[string]bool{}
			got := map[string]int{}
			n := 0
			for _, e := range es {
				if !strings.HasPrefix(e.Path, "/svc/web/r/") {
					continue
				}
				if ids[e.ID] {
					return fmt.Errorf("entry %s listed twice", e.ID)
				}
				ids[e.ID] = true
				got[e.Path]++
				n++
			}
			if n != want {
				return fmt.Errorf("%d entries for %d answered requests", n, want)
			}
			for p, k := range perPath {
				if got[p] != k {
					return fmt.Errorf("%s: %d entries, %d answers", p, got[p], k)
				}
			}
			return nil
		})
	})

	t.Run("syslog gets every entry in order across the failover", func(t *testing.T) {
		if rsAddr == "" {
			t.Skip("rsyslogd is not installed (Debian package rsyslog): syslog forwarding not tested")
		}
		sdRe := regexp.MustCompile(`^\[meshgw@32473 id="([0-9a-f]+)" seq="(\d+)"\]`)
		Eventually(t, 30*time.Second, func() error {
			es, err := logs(c.Nodes[0], "limit=10000")
			if err != nil {
				return err
			}
			data, err := os.ReadFile(rsOut)
			if err != nil {
				return err
			}
			first := map[string]int{}
			var order []int
			for _, l := range strings.Split(string(data), "\n") {
				m := sdRe.FindStringSubmatch(l)
				if m == nil {
					continue
				}
				if _, dup := first[m[1]]; dup {
					continue // a resend after the failover
				}
				var seq int
				fmt.Sscan(m[2], &seq)
				first[m[1]] = seq
				order = append(order, seq)
			}
			for i := 1; i < len(order); i++ {
				if order[i] <= order[i-1] {
					return fmt.Errorf("syslog got seq %d after %d", order[i], order[i-1])
				}
			}
			for _, e := range es {
				if _, ok := first[e.ID]; !ok {
					return fmt.Errorf("syslog has %d entries; missing %s (%s %s)", len(first), e.ID, e.Kind, e.Path)
				}
			}
			return nil
		})
	})

	t.Run("the log shard follows the state group's voters", func(t *testing.T) {
		n4 := c.Add(t, "n4", 3)
		WaitHealthy(t, 30*time.Second, n4)
		metric := func(n *Node, name string) string {
			_, b, err := authDo(api(n), "GET", "/metrics", mgmt, nil)
			if err != nil {
				return err.Error()
			}
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, name+" "); ok {
					return v
				}
			}
			return "none"
		}
		// n1 dies for good: autopilot replaces it with n4 in the state
		// group, and the active logger moves the log shard along (n4
		// added, n1 removed: 3 voters).
		c.Nodes[0].Kill()
		Eventually(t, 40*time.Second, func() error {
			for _, n := range []*Node{c.Nodes[1], c.Nodes[2], n4} {
				if r, v := metric(n, "meshgw_central_log_replica"), metric(n, "meshgw_central_log_voters"); r != "1" || v != "3" {
					return fmt.Errorf("%s: log shard replica %s, voters %s", n.Name, r, v)
				}
			}
			return nil
		})
		// Then n2 dies too: n3 and n4 are a quorum of both groups only
		// if n4 replaced n1 in the log shard as well.
		c.Nodes[1].Kill()
		var answered atomic.Int64
		for i := 0; i < 30; i++ {
			k := []int{2, 3}[i%2]
			for try := 0; try < 50; try++ {
				if code, _, err := authDo("http://"+dp[k], "GET", fmt.Sprintf("/svc/web/m/%d", i), mgmt, nil); err == nil {
					answered.Add(1)
					if code == 200 {
						break
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		Eventually(t, 40*time.Second, func() error {
			es, err := logs(n4, "service=web&kind=http&limit=10000")
			if err != nil {
				return err
			}
			n := 0
			for _, e := range es {
				if strings.HasPrefix(e.Path, "/svc/web/m/") {
					n++
				}
			}
			if n != int(answered.Load()) {
				return fmt.Errorf("%d entries for %d answered requests after losing n1 and n2", n, answered.Load())
			}
			return nil
		})
	})
}
