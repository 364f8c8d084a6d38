package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type runResult struct {
	ID       string `json:"execution_id"`
	Runner   string `json:"runner"`
	Status   string `json:"status"`
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// dispatchCluster: n1-n3 are runners (and the Raft voters), n4-n5 gateways only.
func dispatchCluster(t *testing.T, profile ...string) *Cluster {
	opts := Options{BootstrapExpect: 3}
	if len(profile) > 0 {
		opts.Profile = profile[0]
	}
	opts.Extra = func(i int) []string {
		if i >= 3 {
			return []string{"-roles", "gateway"}
		}
		return nil
	}
	c := StartCluster(t, 5, opts)
	WaitLeader(t, c.Nodes[:3], "default")
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	return c
}

func putService(t *testing.T, n *Node, def map[string]any) {
	t.Helper()
	Eventually(t, 20*time.Second, func() error {
		_, err := n.Do("PUT", "/v1/services/"+def["name"].(string), def, nil)
		return err
	})
}

func TestDispatchRoundRobinAndErrors(t *testing.T) {
	c := dispatchCluster(t)
	putService(t, c.Nodes[3], map[string]any{"name": "echo", "type": "exec", "command": []string{"cat"},
		"decorator": map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}, "required": []string{"n"}}})
	putService(t, c.Nodes[3], map[string]any{"name": "sleepy", "type": "exec", "command": []string{"sleep", "60"}, "timeout": "1s"})
	putService(t, c.Nodes[3], map[string]any{"name": "nowhere", "type": "exec", "command": []string{"true"}, "runner_tags": map[string]string{"zone": "mars"}})

	runners := map[string]int{}
	for i := 0; i < 100; i++ {
		n := c.Nodes[rand.Intn(len(c.Nodes))]
		var r runResult
		if _, err := n.Do("POST", "/v1/services/echo/run", map[string]any{"n": i}, &r); err != nil {
			t.Fatalf("run %d via %s: %v", i, n.Name, err)
		}
		if r.Status != "succeeded" || r.Stdout != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("run %d: %+v", i, r)
		}
		runners[r.Runner]++
	}
	t.Logf("100 runs through random nodes, by runner: %v", runners)
	if len(runners) != 3 || runners["n4"] > 0 || runners["n5"] > 0 {
		t.Fatalf("round-robin should touch exactly the 3 runners: %v", runners)
	}
	var list []runResult
	if _, err := c.Nodes[4].Do("GET", "/v1/executions?service=echo&limit=1000", nil, &list); err != nil || len(list) != 100 {
		t.Fatalf("records: %d %v", len(list), err)
	}

	code, err := c.Nodes[0].Do("POST", "/v1/services/echo/run", map[string]any{"n": "x"}, nil)
	if code != 400 || !strings.Contains(err.Error(), "/n") {
		t.Errorf("schema violation: %d %v (want 400 naming /n)", code, err)
	}
	start := time.Now()
	var r runResult
	c.Nodes[1].Do("POST", "/v1/services/sleepy/run", map[string]any{}, &r)
	if r.Status != "timed_out" || time.Since(start) > 15*time.Second {
		t.Errorf("sleep 60 with timeout 1s: %+v after %s", r, time.Since(start))
	}
	req, _ := http.NewRequest("POST", "http://"+c.Nodes[0].HTTP+"/v1/services/nowhere/run", strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("no live runner: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := c.Nodes[0].Do("POST", "/v1/services/unknown/run", map[string]any{}, nil); code != 404 {
		t.Errorf("unknown service: %d", code)
	}
}

// kill -9 a runner while 20 long runs are in flight: runs with retries all
// succeed elsewhere, runs without end in a terminal state, and the records
// agree with what the clients saw.
func TestDispatchSurvivesRunnerKill(t *testing.T) {
	c := dispatchCluster(t)
	putService(t, c.Nodes[3], map[string]any{"name": "long", "type": "exec", "command": []string{"sh", "-c", "sleep 2; echo done"}, "retries": 2, "timeout": "20s"})
	putService(t, c.Nodes[3], map[string]any{"name": "once", "type": "exec", "command": []string{"sh", "-c", "sleep 2; echo done"}, "timeout": "20s"})
	gateways := c.Nodes[3:]
	var mu sync.Mutex
	seen := map[string]runResult{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		svc := "long"
		if i%4 == 3 {
			svc = "once"
		}
		wg.Add(1)
		go func(i int, svc string) {
			defer wg.Done()
			var r runResult
			_, err := gateways[i%2].Do("POST", "/v1/services/"+svc+"/run", map[string]any{}, &r)
			if err != nil {
				r.Status, r.Error = "client-error", err.Error()
			}
			mu.Lock()
			seen[fmt.Sprintf("%s-%d", svc, i)] = r
			mu.Unlock()
		}(i, svc)
	}
	victim := c.Nodes[1]
	Eventually(t, 20*time.Second, func() error { // kill it mid-run: once it runs something
		var running []runResult
		if _, err := gateways[0].Do("GET", "/v1/executions?status=running", nil, &running); err != nil {
			return err
		}
		for _, r := range running {
			if r.Runner == victim.Name {
				return nil
			}
		}
		return fmt.Errorf("%d running, none on %s yet", len(running), victim.Name)
	})
	victim.Kill()
	killed := time.Now()
	wg.Wait()
	took := time.Since(killed)
	t.Logf("every client answered %s after the kill (runs take 2 s)", took.Round(100*time.Millisecond))
	if took > 20*time.Second { // the attempt deadline is 25 s: failover must come from gossip, not from it
		t.Errorf("clients answered only %s after the kill", took)
	}
	retried := 0
	for k, r := range seen {
		if strings.HasPrefix(k, "long") {
			if r.Status != "succeeded" || r.Runner == victim.Name {
				t.Errorf("%s with retries: %+v", k, r)
			}
			if r.Attempts > 1 {
				retried++
			}
		} else if r.Status == "client-error" || r.ID == "" {
			t.Errorf("%s without retries has no terminal answer: %+v", k, r)
		}
	}
	t.Logf("runner killed mid-run: %d runs with retries re-ran on another runner, all succeeded", retried)
	if retried == 0 {
		t.Error("no run was retried: the kill did not hit any in-flight run")
	}
	for k, r := range seen {
		if r.ID == "" {
			continue
		}
		var rec runResult
		if _, err := gateways[0].Do("GET", "/v1/executions/"+r.ID, nil, &rec); err != nil {
			t.Fatalf("%s record: %v", k, err)
		}
		if rec.Status != r.Status || rec.Attempts != r.Attempts {
			t.Errorf("%s: client saw %s/%d attempts, record says %s/%d", k, r.Status, r.Attempts, rec.Status, rec.Attempts)
		}
	}
}

// Async runs accepted by a node that is then killed still finish.
func TestAsyncRunsSurviveAcceptingNodeKill(t *testing.T) {
	c := dispatchCluster(t)
	putService(t, c.Nodes[3], map[string]any{"name": "slow", "type": "exec", "command": []string{"sh", "-c", "sleep 1; echo ok"}, "retries": 2})
	acceptor := c.Nodes[4]
	var ids []string
	for i := 0; i < 5; i++ {
		var r runResult
		if code, err := acceptor.Do("POST", "/v1/services/slow/run?async=true", map[string]any{}, &r); err != nil || code != 202 {
			t.Fatalf("async: %d %v", code, err)
		}
		ids = append(ids, r.ID)
	}
	acceptor.Kill()
	for _, id := range ids {
		Eventually(t, 90*time.Second, func() error {
			var rec runResult
			if _, err := c.Nodes[3].Do("GET", "/v1/executions/"+id, nil, &rec); err != nil {
				return err
			}
			if rec.Status != "succeeded" {
				return fmt.Errorf("%s is %s", id, rec.Status)
			}
			return nil
		})
	}
}

// A SIGSTOPped runner (its connections stay open, it answers nothing) stops
// getting runs within a few seconds; it serves again after SIGCONT.
func TestPausedRunnerIsRoutedAround(t *testing.T) {
	c := dispatchCluster(t, "lan") // the production failure detector
	putService(t, c.Nodes[3], map[string]any{"name": "quick", "type": "exec", "command": []string{"echo", "hi"}, "retries": 2, "timeout": "2s"})
	paused := c.Nodes[2]
	paused.Pause()
	start := time.Now()
	var last []string
	Eventually(t, 30*time.Second, func() error {
		// 10 runs in a row that all succeed, none on the paused runner.
		last = last[:0]
		for i := 0; i < 10; i++ {
			var r runResult
			if _, err := c.Nodes[3].Do("POST", "/v1/services/quick/run", map[string]any{}, &r); err != nil {
				return err
			}
			if r.Status != "succeeded" || r.Runner == paused.Name {
				return fmt.Errorf("run %+v", r)
			}
			last = append(last, r.Runner)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("SIGSTOPped runner routed around after %s", took.Round(100*time.Millisecond))
	if took > 10*time.Second { // the promise is "within a few seconds"; measured 2.0 s here
		t.Errorf("routing around a hung runner took %s", took)
	}
	paused.Resume()
	Eventually(t, 60*time.Second, func() error {
		var r runResult
		if _, err := c.Nodes[3].Do("POST", "/v1/services/quick/run", map[string]any{}, &r); err != nil {
			return err
		}
		if r.Runner != paused.Name {
			return fmt.Errorf("ran on %s", r.Runner)
		}
		return nil
	})
}

// HTTP services proxy through a runner: method, headers, status, a 1 MiB
// upload and a streamed response.
// TestHTTPServiceProxy proxies through every node's API and its
// data-plane listener (-proxy): two runners, which proxy in place, and a
// gateway-only node, which goes through a runner over QUIC.
func TestHTTPServiceProxy(t *testing.T) {
	up := upstream(t)
	var dp []string
	for i := 0; i < 3; i++ {
		dp = append(dp, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		if i == 2 {
			return []string{"-proxy", dp[i], "-roles", "gateway"}
		}
		return []string{"-proxy", dp[i]}
	}})
	WaitLeader(t, c.Nodes, "default")
	putService(t, c.Nodes[0], map[string]any{"name": "web", "type": "http", "upstream": "http://" + up})
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(body)
	for i, n := range c.Nodes {
		for _, addr := range []string{n.HTTP, dp[i]} {
			req, _ := http.NewRequest("PUT", "http://"+addr+"/svc/web/upload?x=1", bytes.NewReader(body))
			req.Header.Set("X-Custom", "yes")
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "dropped")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := fmt.Sprintf("PUT /upload x=1 yes %s 127.0.0.1 %s", hex.EncodeToString(sum[:]), addr)
			if resp.StatusCode != 201 || string(got) != want || resp.Header.Get("X-Upstream") != "1" {
				t.Fatalf("via %s at %s: %d %q %v, want 201 %q", n.Name, addr, resp.StatusCode, got, resp.Header, want)
			}
		}
	}
	for _, addr := range []string{c.Nodes[1].HTTP, dp[1], dp[2]} {
		resp, err := http.Get("http://" + addr + "/svc/web/stream")
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, 6)
		start := time.Now()
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "chunk0" {
			t.Fatalf("stream via %s: %q %v", addr, first, err)
		}
		if time.Since(start) > 1500*time.Millisecond {
			t.Errorf("via %s: first chunk took %s: the response is buffered, not streamed", addr, time.Since(start))
		}
		rest, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasSuffix(string(rest), "chunk4") {
			t.Errorf("stream tail via %s: %q", addr, rest)
		}
	}
	// The data plane serves /svc/ only, and says where the API is.
	resp, err := http.Get("http://" + dp[0] + "/v1/services")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "-http") {
		t.Errorf("API call on the data plane: %d %s, want 404 naming -http", resp.StatusCode, b)
	}
}

// upstream serves /upload (echoes method, path, query, header, body hash
// and X-Forwarded-For/-Host; 400 if the hop-by-hop X-Hop arrived) and /stream (5 chunks, 400 ms apart).
func upstream(t *testing.T) string {
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		w.Header().Set("X-Upstream", "1")
		w.WriteHeader(201)
		if r.Header.Get("X-Hop") != "" {
			http.Error(w, "hop-by-hop header X-Hop was forwarded", 400)
			return
		}
		fmt.Fprintf(w, "%s %s %s %s %s %s %s", r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Custom"), hex.EncodeToString(sum[:]),
			r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"))
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "chunk%d", i)
			w.(http.Flusher).Flush()
			time.Sleep(400 * time.Millisecond)
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}
