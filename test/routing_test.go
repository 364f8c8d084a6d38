package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// namedUpstream is an upstream that answers "NAME PATH" and can be killed
// and started again on the same address.
type namedUpstream struct {
	t    *testing.T
	name string
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func startNamedUpstream(t *testing.T, name string) *namedUpstream {
	u := &namedUpstream{t: t, name: name, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	u.start()
	t.Cleanup(u.kill)
	return u
}

func (u *namedUpstream) url() string { return "http://" + u.addr }

func (u *namedUpstream) start() {
	u.t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", u.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		u.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", u.name)
		fmt.Fprintf(w, "%s %s", u.name, r.URL.Path)
	})}
	u.mu.Lock()
	u.srv = srv
	u.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// kill closes the listener and every connection, as a dead process would.
func (u *namedUpstream) kill() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		_ = u.srv.Close()
		u.srv = nil
	}
}

type routesView struct {
	Node     string `json:"node"`
	Revision string `json:"revision"`
	Routes   []struct {
		Host, Prefix, Service string
		Strip                 bool
	} `json:"routes"`
	Services []struct {
		Service   string `json:"service"`
		Upstreams []struct {
			URL        string `json:"url"`
			InRotation bool   `json:"in_rotation"`
			Healthy    bool   `json:"healthy"`
		} `json:"upstreams"`
	} `json:"services"`
}

func getVia(client *http.Client, addr, host, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b), nil
}

// TestRouting: weighted upstreams, Host and prefix routes with strip,
// route conflicts, and shared health checks taking a killed upstream out
// of rotation on every node (and back) without a failed request. Two
// runners and a gateway-only node, each with a -proxy data plane; one
// cluster for every part.
func TestRouting(t *testing.T) {
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
	a, b := startNamedUpstream(t, "a"), startNamedUpstream(t, "b")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}

	t.Run("weighted", func(t *testing.T) {
		putService(t, c.Nodes[0], map[string]any{"name": "weighted", "type": "http",
			"upstreams": []map[string]any{{"url": a.url(), "weight": 9}, {"url": b.url(), "weight": 1, "tags": map[string]string{"track": "canary"}}}})
		n := map[string]int{}
		for i := 0; i < 1000; i++ {
			addr := dp[i%3]
			code, body, err := getVia(client, addr, "", "/svc/weighted/x")
			if err != nil || code != 200 {
				t.Fatalf("request %d via %s: %d %q %v", i, addr, code, body, err)
			}
			n[strings.Fields(body)[0]]++
		}
		if share := float64(n["a"]) / 1000; share < 0.87 || share > 0.93 {
			t.Fatalf("a got %.1f%% of 1000 requests (%v), want 90%% ± 3%%", 100*share, n)
		}
		t.Logf("weights 9:1 → %v", n)
	})

	t.Run("routes", func(t *testing.T) {
		putService(t, c.Nodes[0], map[string]any{"name": "site", "type": "http", "upstream": a.url(), "hosts": []string{"api.example.test"}})
		putService(t, c.Nodes[1], map[string]any{"name": "v2", "type": "http", "upstream": b.url(),
			"paths": []map[string]any{{"prefix": "/v2/", "strip": true}, {"prefix": "/legacy"}}})
		cases := []struct{ host, path, want string }{
			{"api.example.test", "/x/y", "a /x/y"},
			{"API.example.test:80", "/v2/z", "a /v2/z"}, // the host's routes first
			{"other.test", "/v2/z", "b /z"},             // stripped
			{"other.test", "/v2", "b /"},
			{"other.test", "/legacy/q", "b /legacy/q"}, // not stripped
		}
		for i := range c.Nodes {
			Eventually(t, 10*time.Second, func() error {
				for _, k := range cases {
					code, body, err := getVia(client, dp[i], k.host, k.path)
					if err != nil || code != 200 || body != k.want {
						return fmt.Errorf("via %s: Host %s %s: %d %q %v, want %q", c.Nodes[i].Name, k.host, k.path, code, body, err, k.want)
					}
				}
				return nil
			})
		}
		code, body, _ := getVia(client, dp[2], "other.test", "/v2x")
		if code != 404 {
			t.Fatalf("/v2x matched a route: %d %q", code, body)
		}
		// Every node uses the same table.
		Eventually(t, 5*time.Second, func() error {
			revs := map[string]bool{}
			for _, n := range c.Nodes {
				var rv routesView
				if err := n.GetJSON("/v1/routes", &rv); err != nil {
					return err
				}
				if len(rv.Routes) != 3 {
					return fmt.Errorf("%s has %d routes: %+v", n.Name, len(rv.Routes), rv.Routes)
				}
				revs[rv.Revision] = true
			}
			if len(revs) != 1 {
				return fmt.Errorf("revisions differ: %v", revs)
			}
			return nil
		})
		out, errb, code := CLI(t, "routes", "-http-addr", c.Nodes[2].HTTP)
		if code != 0 || !strings.Contains(out, "api.example.test") || !strings.Contains(out, "/v2/") {
			t.Fatalf("meshgw routes: %d\n%s%s", code, out, errb)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		code, err := c.Nodes[2].Do("PUT", "/v1/services/thief", map[string]any{"name": "thief", "type": "http",
			"upstream": a.url(), "paths": []map[string]any{{"prefix": "/v2/"}}}, nil)
		if code != 409 || err == nil || !strings.Contains(err.Error(), `service \"v2\"`) || !strings.Contains(err.Error(), "route_conflict") {
			t.Fatalf("conflicting route: %d %v, want 409 naming v2", code, err)
		}
		code, err = c.Nodes[1].Do("PUT", "/v1/services/thief2", map[string]any{"name": "thief2", "type": "http",
			"upstream": a.url(), "hosts": []string{"API.example.test"}}, nil)
		if code != 409 || !strings.Contains(fmt.Sprint(err), `service \"site\"`) {
			t.Fatalf("conflicting host: %d %v, want 409 naming site", code, err)
		}
		// Released claims are free again.
		if _, err := c.Nodes[0].Do("DELETE", "/v1/services/v2", nil, nil); err != nil {
			t.Fatal(err)
		}
		putService(t, c.Nodes[2], map[string]any{"name": "thief", "type": "http", "upstream": a.url(), "paths": []map[string]any{{"prefix": "/v2/"}}})
	})

	t.Run("health", func(t *testing.T) {
		k, d := startNamedUpstream(t, "k"), startNamedUpstream(t, "d")
		const interval, unhealthyAfter, healthyAfter = 300 * time.Millisecond, 2, 2
		putService(t, c.Nodes[0], map[string]any{"name": "checked", "type": "http",
			"upstreams": []map[string]any{{"url": k.url()}, {"url": d.url()}},
			"health": map[string]any{"path": "/health", "interval": interval.String(), "timeout": "200ms",
				"healthy_after": healthyAfter, "unhealthy_after": unhealthyAfter}})
		// state is k as n sees it: in its rotation, and the shared verdict
		// (not only n's own ejection of what its traffic saw).
		state := func(n *Node) (in, healthy bool, err error) {
			var rv routesView
			if err := n.GetJSON("/v1/routes", &rv); err != nil {
				return false, false, err
			}
			for _, s := range rv.Services {
				for _, u := range s.Upstreams {
					if s.Service == "checked" && u.URL == k.url() {
						return u.InRotation, u.Healthy, nil
					}
				}
			}
			return false, false, fmt.Errorf("%s does not list checked's upstream %s", n.Name, k.url())
		}
		waitAll := func(want bool, within time.Duration) time.Duration {
			start := time.Now()
			Eventually(t, within, func() error {
				for _, n := range c.Nodes {
					in, healthy, err := state(n)
					if err != nil {
						return err
					}
					if want && !(in && healthy) || !want && healthy {
						return fmt.Errorf("%s: %s in rotation %v, want %v", n.Name, k.url(), in, want)
					}
				}
				return nil
			})
			return time.Since(start)
		}
		waitAll(true, 10*time.Second)
		// Idempotent load through every data plane while k dies and comes back.
		var sent, failed atomic.Int64
		var firstErr atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range dp {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, err := getVia(client, dp[i], "", "/svc/checked/ping")
					sent.Add(1)
					if err != nil || code != 200 {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("via %s: %d %q %v", dp[i], code, body, err))
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		time.Sleep(500 * time.Millisecond) // load before the kill
		k.kill()
		took := waitAll(false, 10*time.Second)
		bound := time.Duration(unhealthyAfter)*interval + 1500*time.Millisecond
		t.Logf("out of rotation on every node %s after the kill (bound %s)", took, bound)
		if took > bound {
			t.Errorf("out of rotation after %s, want within unhealthy_after × interval (+ sharing) = %s", took, bound)
		}
		k.start()
		took = waitAll(true, 10*time.Second)
		bound = time.Duration(healthyAfter)*interval + 1500*time.Millisecond
		t.Logf("back in rotation on every node %s after the restart (bound %s)", took, bound)
		if took > bound {
			t.Errorf("back after %s, want within healthy_after × interval (+ sharing) = %s", took, bound)
		}
		close(stop)
		wg.Wait()
		t.Logf("%d requests during the kill and restart, %d failed", sent.Load(), failed.Load())
		if failed.Load() != 0 {
			t.Fatalf("%d of %d idempotent requests failed; first: %v", failed.Load(), sent.Load(), firstErr.Load())
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		echo := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer conn.CloseNow()
			conn.SetReadLimit(1 << 20)
			ctx := r.Context()
			_ = conn.Write(ctx, websocket.MessageText, []byte("hello "+r.URL.Path)) // the upstream speaks first
			for {
				typ, b, err := conn.Read(ctx)
				if err != nil {
					return
				}
				if err := conn.Write(ctx, typ, append([]byte("echo:"), b...)); err != nil {
					return
				}
			}
		})}
		go func() { _ = echo.Serve(ln) }()
		defer echo.Close()
		putService(t, c.Nodes[0], map[string]any{"name": "ws", "type": "http", "upstream": "http://" + ln.Addr().String(),
			"paths": []map[string]any{{"prefix": "/chat/", "strip": true}}})
		// Through the gateway-only node (over QUIC to a runner) on both
		// listeners and a route, and in place on a runner.
		urls := []string{"ws://" + dp[2] + "/svc/ws/room", "ws://" + c.Nodes[2].HTTP + "/svc/ws/room",
			"ws://" + dp[2] + "/chat/room", "ws://" + dp[0] + "/svc/ws/room", "ws://" + c.Nodes[0].HTTP + "/svc/ws/room"}
		for _, u := range urls {
			Eventually(t, 10*time.Second, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				conn, resp, err := websocket.Dial(ctx, u, nil)
				if err != nil {
					code := 0
					if resp != nil {
						code = resp.StatusCode
					}
					return fmt.Errorf("dial %s: %d %v", u, code, err)
				}
				defer conn.CloseNow()
				conn.SetReadLimit(1 << 20)
				if _, b, err := conn.Read(ctx); err != nil || string(b) != "hello /room" {
					return fmt.Errorf("%s: greeting %q %v", u, b, err)
				}
				for i := 0; i < 3; i++ {
					msg := fmt.Sprintf("m%d-%s", i, strings.Repeat("x", i*40000))
					if err := conn.Write(ctx, websocket.MessageBinary, []byte(msg)); err != nil {
						return fmt.Errorf("%s: write: %v", u, err)
					}
					if _, b, err := conn.Read(ctx); err != nil || string(b) != "echo:"+msg {
						return fmt.Errorf("%s: echo %d: %d bytes %v", u, i, len(b), err)
					}
				}
				return conn.Close(websocket.StatusNormalClosure, "bye")
			})
		}
	})
}
