package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cacheUpstream serves /v/{key} ("ver=N key"; N is what version holds),
// /nostore (Cache-Control: no-store) and /slow/{key} (answers after
// 500 ms), counting the calls per path.
type cacheUpstream struct {
	addr    string
	version atomic.Int64
	mu      sync.Mutex
	calls   map[string]int
}

func (u *cacheUpstream) count(p string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[p]
}

func newCacheUpstream(t *testing.T) *cacheUpstream {
	u := &cacheUpstream{calls: map[string]int{}}
	u.version.Store(1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.calls[r.URL.Path]++
		u.mu.Unlock()
		switch {
		case r.URL.Path == "/nostore":
			w.Header().Set("Cache-Control", "no-store")
		case strings.HasPrefix(r.URL.Path, "/slow/"):
			time.Sleep(500 * time.Millisecond) // a slow upstream is what is under test
		}
		fmt.Fprintf(w, "ver=%d %s", u.version.Load(), r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u
}

// svcGet GETs /svc/web{path} at addr and returns the body and X-Cache.
func svcGet(t *testing.T, addr, path string) (string, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/svc/web" + path)
	if err != nil {
		t.Fatalf("GET %s via %s: %v", path, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s via %s: %d %s", path, addr, resp.StatusCode, b)
	}
	return string(b), resp.Header.Get("X-Cache")
}

type cacheReport struct {
	Services []struct {
		Service  string  `json:"service"`
		Entries  int64   `json:"entries"`
		Hits     int64   `json:"hits"`
		Misses   int64   `json:"misses"`
		HitRatio float64 `json:"hit_ratio"`
	} `json:"services"`
}

// TestResponseCache: one cluster of 3 agents (the third with a -proxy
// data plane) in front of one upstream, for every promise of the cache.
func TestResponseCache(t *testing.T) {
	up := newCacheUpstream(t)
	dp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		if i == 2 {
			return []string{"-proxy", dp}
		}
		return nil
	}})
	WaitLeader(t, c.Nodes, "default")
	def := map[string]any{"name": "web", "type": "http", "upstream": "http://" + up.addr,
		"cache": map[string]any{"ttl": "60s"}}
	putService(t, c.Nodes[0], def)
	addrs := []string{c.Nodes[0].HTTP, c.Nodes[1].HTTP, c.Nodes[2].HTTP, dp}
	// Hits start once every node sees the others and has read the purge
	// records.
	WaitMembers(t, 20*time.Second, c.Nodes, map[string]string{"n1": "alive", "n2": "alive", "n3": "alive"})
	Eventually(t, 20*time.Second, func() error {
		var rep struct {
			Nodes []struct {
				Node    string `json:"node"`
				Serving bool   `json:"serving"`
			} `json:"nodes"`
		}
		if err := c.Nodes[0].GetJSON("/v1/cache", &rep); err != nil {
			return err
		}
		if len(rep.Nodes) != 3 {
			return fmt.Errorf("nodes %+v", rep.Nodes)
		}
		for _, n := range rep.Nodes {
			if !n.Serving {
				return fmt.Errorf("%s does not serve hits yet", n.Node)
			}
		}
		return nil
	})

	t.Run("HitThroughAnotherNode", func(t *testing.T) {
		if _, xc := svcGet(t, addrs[0], "/v/a"); xc != "MISS" {
			t.Fatalf("first GET: X-Cache %q", xc)
		}
		for _, a := range addrs[1:] {
			Eventually(t, 5*time.Second, func() error {
				if body, xc := svcGet(t, a, "/v/a"); xc != "HIT" || body != "ver=1 /v/a" {
					return fmt.Errorf("via %s: %q %q", a, xc, body)
				}
				return nil
			})
		}
		if n := up.count("/v/a"); n != 1 {
			t.Fatalf("upstream called %d times", n)
		}
	})

	t.Run("NoStoreNeverCached", func(t *testing.T) {
		for i := range 6 {
			if _, xc := svcGet(t, addrs[i%len(addrs)], "/nostore"); xc != "MISS" {
				t.Fatalf("no-store answered %q", xc)
			}
		}
		if n := up.count("/nostore"); n != 6 {
			t.Fatalf("upstream %d calls, want 6", n)
		}
	})

	t.Run("ConcurrentMissesReachUpstreamOnce", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if body, _ := svcGet(t, addrs[i%len(addrs)], "/slow/1"); body != "ver=1 /slow/1" {
					t.Errorf("body %q", body)
				}
			}()
		}
		wg.Wait()
		if n := up.count("/slow/1"); n != 1 {
			t.Fatalf("12 concurrent misses through 3 nodes: upstream called %d times, want 1", n)
		}
	})

	t.Run("PurgeLeavesNoOldBody", func(t *testing.T) {
		for i := range 5 {
			svcGet(t, addrs[i%3], fmt.Sprintf("/v/p%d", i))
		}
		for i := range 5 {
			Eventually(t, 5*time.Second, func() error {
				if _, xc := svcGet(t, addrs[(i+1)%3], fmt.Sprintf("/v/p%d", i)); xc != "HIT" {
					return fmt.Errorf("p%d not cached", i)
				}
				return nil
			})
		}
		up.version.Store(2)
		var res struct {
			Acknowledged []string `json:"acknowledged"`
		}
		if _, err := c.Nodes[1].Do("DELETE", "/v1/cache/web", nil, &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Acknowledged) != 3 {
			t.Fatalf("acknowledged by %v", res.Acknowledged)
		}
		for _, a := range addrs {
			for i := range 5 {
				if body, _ := svcGet(t, a, fmt.Sprintf("/v/p%d", i)); !strings.HasPrefix(body, "ver=2") {
					t.Fatalf("after the purge, %s answered %q", a, body)
				}
			}
		}
		// A changed definition serves none of the old entries either.
		up.version.Store(3)
		def["cache"] = map[string]any{"ttl": "60s", "vary": []string{"Accept"}}
		putService(t, c.Nodes[0], def)
		for _, a := range addrs {
			Eventually(t, 5*time.Second, func() error {
				if body, _ := svcGet(t, a, "/v/p0"); !strings.HasPrefix(body, "ver=3") {
					return fmt.Errorf("after the definition changed, %s answered %q", a, body)
				}
				return nil
			})
		}
		var rep cacheReport
		if err := c.Nodes[2].GetJSON("/v1/cache", &rep); err != nil {
			t.Fatal(err)
		}
		if len(rep.Services) != 1 || rep.Services[0].Hits == 0 || rep.Services[0].Misses == 0 || rep.Services[0].HitRatio <= 0 {
			t.Fatalf("GET /v1/cache: %+v", rep)
		}
		resp, err := http.Get("http://" + c.Nodes[0].HTTP + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, name := range []string{"meshgw_cache_entries", "meshgw_cache_bytes", "meshgw_cache_hits_total", "meshgw_cache_misses_total"} {
			if !strings.Contains(string(m), name+`{service="web"}`) {
				t.Errorf("/metrics has no %s for web", name)
			}
		}
	})

	t.Run("PausedNodeServesNoPurgedEntry", func(t *testing.T) {
		v := up.version.Load()
		for _, a := range addrs[:2] {
			Eventually(t, 5*time.Second, func() error {
				if body, xc := svcGet(t, a, "/v/s"); xc != "HIT" || body != fmt.Sprintf("ver=%d /v/s", v) {
					return fmt.Errorf("via %s: %s %q", a, xc, body)
				}
				return nil
			})
		}
		// n2 is stopped while the purge runs: it cannot acknowledge, so
		// the purge waits out the bound; woken up, n2 must not answer
		// from the copy it holds.
		c.Nodes[1].Pause()
		waitStopped(t, c.Nodes[1])
		up.version.Store(v + 1)
		var res struct {
			Waited bool `json:"waited"`
		}
		start := time.Now()
		if _, err := c.Nodes[0].Do("DELETE", "/v1/cache/web", nil, &res); err != nil {
			c.Nodes[1].Resume()
			t.Fatal(err)
		}
		took := time.Since(start)
		c.Nodes[1].Resume()
		if !res.Waited || took < 3*time.Second {
			t.Fatalf("purge with a stopped node: waited=%v after %v", res.Waited, took)
		}
		for _, a := range addrs {
			if body, _ := svcGet(t, a, "/v/s"); body != fmt.Sprintf("ver=%d /v/s", v+1) {
				t.Fatalf("after the purge, %s answered %q", a, body)
			}
		}
		// Every node sees every other alive again before the next test.
		WaitMembers(t, 20*time.Second, c.Nodes, map[string]string{"n1": "alive", "n2": "alive", "n3": "alive"})
	})

	t.Run("KillAnOwnerKeepsHits", func(t *testing.T) {
		const keys = 40
		for i := range keys {
			svcGet(t, addrs[i%3], fmt.Sprintf("/v/k%d", i))
		}
		for i := range keys {
			Eventually(t, 5*time.Second, func() error {
				for _, a := range addrs[:2] {
					if _, xc := svcGet(t, a, fmt.Sprintf("/v/k%d", i)); xc != "HIT" {
						return fmt.Errorf("k%d via %s: %s", i, a, xc)
					}
				}
				return nil
			})
		}
		c.Nodes[2].Kill()
		hits, total := 0, 0
		var misses []string
		for round := range 3 {
			for i := range keys {
				body, xc := svcGet(t, addrs[(i+round)%2], fmt.Sprintf("/v/k%d", i))
				if body != fmt.Sprintf("ver=%d /v/k%d", up.version.Load(), i) {
					t.Fatalf("k%d: %q", i, body)
				}
				total++
				if xc == "HIT" {
					hits++
				} else {
					misses = append(misses, fmt.Sprintf("k%d via %s: %s", i, c.Nodes[(i+round)%2].Name, xc))
				}
			}
		}
		if ratio := float64(hits) / float64(total); ratio <= 0.9 {
			t.Fatalf("after kill -9 of a node, hit ratio %.2f (%d/%d); not hits: %s", ratio, hits, total,
				strings.Join(misses, ", "))
		}
		t.Logf("after kill -9 of %s: %d/%d hits", c.Nodes[2].Name, hits, total)
		// The cleanup role re-places copies: with 2 live nodes left, each
		// holds every entry.
		Eventually(t, 20*time.Second, func() error {
			a, b := cacheEntries(t, c.Nodes[0]), cacheEntries(t, c.Nodes[1])
			if a < keys || a != b {
				return fmt.Errorf("entries held: %s %d, %s %d", c.Nodes[0].Name, a, c.Nodes[1].Name, b)
			}
			return nil
		})
		// A purge with a member down still returns, and means it.
		up.version.Add(1)
		start := time.Now()
		Eventually(t, 15*time.Second, func() error {
			_, err := c.Nodes[0].Do("DELETE", "/v1/cache/web?prefix=/v/k", nil, nil)
			return err
		})
		t.Logf("purge with a node down took %v", time.Since(start))
		for _, a := range addrs[:2] {
			if body, _ := svcGet(t, a, "/v/k1"); body != fmt.Sprintf("ver=%d /v/k1", up.version.Load()) {
				t.Fatalf("after the purge, %s answered %q", a, body)
			}
		}
	})
}

// waitStopped waits until SIGSTOP has stopped every thread of n's process
// (a group stop is not instant on a busy machine).
func waitStopped(t *testing.T, n *Node) {
	t.Helper()
	n.mu.Lock()
	pid := n.cmd.Process.Pid
	n.mu.Unlock()
	Eventually(t, 5*time.Second, func() error {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				return err
			}
			// The state follows the parenthesized command name.
			if i := strings.LastIndexByte(string(b), ')'); i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				return fmt.Errorf("thread %s of %s not stopped yet", task.Name(), n.Name)
			}
		}
		return nil
	})
}

// cacheEntries is n's meshgw_cache_entries for web.
func cacheEntries(t *testing.T, n *Node) int {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, `meshgw_cache_entries{service="web"} `); ok {
			var x float64
			fmt.Sscan(v, &x)
			return int(x)
		}
	}
	return 0
}
