package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchThrottle (issue 14): a cluster-wide limit of 100/s by service.
//
//   - accuracy, 3 and 5 nodes, even and skewed load (every node offered
//     well over the limit, one node most of it, or one node all of it,
//     the others having served the limit just before): requests admitted per
//     second by meshgw (its data planes, -proxy), by a per-node limiter set
//     to the same limit (a fixed-window counter of 100/s in each of N
//     servers: Kong's "local" policy, KrakenD), and by one HAProxy per node
//     with a stick-table rate limit (deny if sc_http_req_rate(0) gt 100);
//   - the hot path: /svc/ throughput through a data plane, with wrk, for a
//     service with a limit it never reaches vs the same service without;
//   - failover: the active manager killed -9 under load; the longest time
//     in which no request was admitted, and the busiest window.
func benchThrottle(bin string) {
	up := startUpstream()
	const limit = 100
	fmt.Printf("limit %d/s by service; %s per round; admitted per second over the round's whole windows\n\n", limit, *dur)
	fmt.Println("| nodes, load | meshgw admitted/s [range] | per-node limiter | HAProxy per node, http_req_rate | HAProxy per node, admitted only | meshgw/limit | per-node/limit | HAProxy/limit | HAProxy admitted-only/limit |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	var hot3 []meshNode
	var dp3 []string
	var cmds3 []*exec.Cmd
	for _, n := range []int{3, 5} {
		nodes, dps, cmds := throttleMesh(bin, n, up)
		haps := startHAProxies(n, up, limit, true)
		haps2 := startHAProxies(n, up, limit, false)
		locals := startLocalLimiters(n, limit)
		for _, load := range []string{"even", "skewed (6:1:…)", "one node only"} {
			workers := make([]int, n)
			for i := range workers {
				switch {
				case load == "even":
					workers[i] = 2
				case i == 0:
					workers[i] = 6
				case load == "skewed (6:1:…)":
					workers[i] = 1
				}
			}
			var m, l, h, h2 series
			for r := 0; r < *rounds; r++ {
				m = append(m, admittedRate(dps, "/svc/lim/x", workers))
				l = append(l, admittedRate(locals, "/", workers))
				h = append(h, admittedRate(haps, "/", workers))
				h2 = append(h2, admittedRate(haps2, "/", workers))
			}
			ml, mh := m.span()
			fmt.Printf("| %d, %s | %.1f [%.1f–%.1f] | %.1f | %.1f | %.1f | %.2f× | %.2f× | %.2f× | %.2f× |\n", n, load, m.median(), ml, mh,
				l.median(), h.median(), h2.median(), m.median()/limit, l.median()/limit, h.median()/limit, h2.median()/limit)
		}
		stopHAProxies(haps)
		if n == 3 {
			hot3, dp3, cmds3 = nodes, dps, cmds
			continue
		}
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}

	// The hot path: a limit that is never reached vs none.
	d := fmt.Sprintf("%ds", max(1, int(dur.Seconds())))
	var with, without series
	for r := 0; r < *rounds; r++ {
		a, _ := wrk("http://"+dp3[r%3]+"/svc/capped/", d)
		b, _ := wrk("http://"+dp3[r%3]+"/svc/free/", d)
		with, without = append(with, a), append(without, b)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s through a data plane: | measurement | with a limit (not reached) | without | ratio |\n|---|---|---|---|\n", d)
	row("/svc/ requests/s", "req/s", with, without, true)

	// Failover: kill -9 the active manager under load.
	throttleFailover(hot3, dp3, cmds3)
}

// throttleMesh starts n agents with data planes and the bench's services.
func throttleMesh(bin string, n int, up string) ([]meshNode, []string, []*exec.Cmd) {
	var dps []string
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("t%d", i+1)
		dps = append(dps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	nodes, cmds := startNodes(bin, names, func(i int) []string { return []string{"-proxy", dps[i]} })
	hc := httpClient()
	for _, def := range []string{
		`{"name":"lim","type":"http","upstream":"http://` + up + `","limits":[{"rate":100,"per":"1s"}]}`,
		`{"name":"fo","type":"http","upstream":"http://` + up + `","limits":[{"rate":100,"per":"1s"}]}`,
		`{"name":"capped","type":"http","upstream":"http://` + up + `","limits":[{"rate":1000000000,"per":"1s"}]}`,
		`{"name":"free","type":"http","upstream":"http://` + up + `"}`,
	} {
		var v struct{ Name string }
		json.Unmarshal([]byte(def), &v)
		if err := put(hc, "http://"+nodes[0].http+"/v1/services/"+v.Name, def); err != nil {
			fatal("service %s: %v", v.Name, err)
		}
	}
	for _, dp := range dps {
		waitFor(30*time.Second, "throttled service on "+dp, func() error { return get("http://" + dp + "/svc/free/") })
		waitFor(30*time.Second, "limit on "+dp, func() error { return get("http://" + dp + "/svc/lim/warm") })
	}
	return nodes, dps, cmds
}

func startUpstream() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("%v", err)
	}
	go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})}).Serve(l)
	return l.Addr().String()
}

// startLocalLimiters starts n servers that each admit limit requests per
// 1-s window on their own: the per-node limiter.
func startLocalLimiters(n, limit int) []string {
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("%v", err)
		}
		var mu sync.Mutex
		var win int64
		var count int
		go (&http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			now := time.Now().Unix()
			if now != win {
				win, count = now, 0
			}
			ok := count < limit
			if ok {
				count++
			}
			mu.Unlock()
			if !ok {
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			io.WriteString(w, "ok\n")
		})}).Serve(l)
		out = append(out, l.Addr().String())
	}
	return out
}

// startHAProxies starts one HAProxy per node. literal: the rule of the
// issue, deny if sc_http_req_rate(0) gt limit (every request counts,
// refused ones too); else only admitted requests count (gpc0_rate,
// incremented after the deny rule).
func startHAProxies(n int, up string, limit int, literal bool) []string {
	var out []string
	for i := 0; i < n; i++ {
		port := freePort()
		rules := fmt.Sprintf(`  stick-table type integer size 1 expire 10s store http_req_rate(1s)
  http-request track-sc0 int(1)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt %d }
`, limit)
		if !literal {
			rules = fmt.Sprintf(`  stick-table type integer size 1 expire 10s store gpc0_rate(1s)
  http-request track-sc0 int(1)
  http-request deny deny_status 429 if { sc0_gpc0_rate gt %d }
  http-request sc-inc-gpc0(0)
`, limit-1)
		}
		cfg := fmt.Sprintf(`global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:%d
%s  default_backend b
backend b
  server u1 %s
`, port, rules, up)
		f, _ := os.CreateTemp("", "haproxy-throttle-*.cfg")
		f.WriteString(cfg)
		f.Close()
		start("haproxy", "-f", f.Name(), "-db")
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		waitFor(10*time.Second, "haproxy", func() error { return get("http://" + addr + "/") })
		out = append(out, addr)
	}
	return out
}

func stopHAProxies([]string) {
	procsMu.Lock()
	defer procsMu.Unlock()
	keep := procs[:0]
	for _, p := range procs {
		if strings.HasSuffix(p.Path, "haproxy") {
			p.Process.Kill()
			p.Wait()
			continue
		}
		keep = append(keep, p)
	}
	procs = keep
}

// admittedRate offers load (workers[i] callers on addrs[i], each pausing
// 5 ms between requests) for *dur and returns the 200s per second over
// the whole 1-s windows inside the round.
func admittedRate(addrs []string, path string, workers []int) float64 {
	hc := httpClient()
	var mu sync.Mutex
	per := map[int64]int{}
	start := time.Now()
	end := start.Add(*dur)
	var wg sync.WaitGroup
	for i, w := range workers {
		for j := 0; j < w; j++ {
			wg.Add(1)
			go func(addr string) {
				defer wg.Done()
				for time.Now().Before(end) {
					resp, err := hc.Get("http://" + addr + path)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == 200 {
							at := time.Now().Unix()
							mu.Lock()
							per[at]++
							mu.Unlock()
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
			}(addrs[i])
		}
	}
	wg.Wait()
	first, last := start.Unix()+1, end.Unix()-1
	total := 0
	for w := first; w <= last; w++ {
		total += per[w]
	}
	if last < first {
		return 0
	}
	return float64(total) / float64(last-first+1)
}

// throttleFailover kills -9 the active throttle manager 3 s into a 10 s
// load on every data plane.
func throttleFailover(nodes []meshNode, dps []string, cmds []*exec.Cmd) {
	var roles []struct {
		Role, Active string
	}
	resp, err := http.Get("http://" + nodes[0].http + "/v1/roles")
	if err != nil {
		fatal("roles: %v", err)
	}
	json.NewDecoder(resp.Body).Decode(&roles)
	resp.Body.Close()
	victim := -1
	for _, r := range roles {
		if r.Role == "throttle-manager" {
			for i := range nodes {
				if r.Active == fmt.Sprintf("t%d", i+1) {
					victim = i
				}
			}
		}
	}
	if victim < 0 {
		fatal("no active throttle manager: %+v", roles)
	}
	hc := httpClient()
	var mu sync.Mutex
	var admitted []time.Time
	var killedAt time.Time
	end := time.Now().Add(10 * time.Second)
	var wg sync.WaitGroup
	var stop atomic.Bool
	for i, dp := range dps {
		if i == victim {
			continue
		}
		for j := 0; j < 2; j++ {
			wg.Add(1)
			go func(addr string) {
				defer wg.Done()
				for time.Now().Before(end) && !stop.Load() {
					resp, err := hc.Get("http://" + addr + "/svc/fo/x")
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode == 200 {
							mu.Lock()
							admitted = append(admitted, time.Now())
							mu.Unlock()
						}
					}
					time.Sleep(5 * time.Millisecond)
				}
			}(dp)
		}
	}
	time.Sleep(3 * time.Second)
	cmds[victim].Process.Kill()
	killedAt = time.Now()
	wg.Wait()
	sort.Slice(admitted, func(i, j int) bool { return admitted[i].Before(admitted[j]) })
	var gap time.Duration
	per := map[int64]int{}
	for i, a := range admitted {
		per[a.Unix()]++
		if i > 0 && a.After(killedAt) {
			gap = max(gap, a.Sub(admitted[i-1]))
		}
	}
	busiest := 0
	for _, n := range per {
		busiest = max(busiest, n)
	}
	fmt.Printf("\nfailover: the active manager (t%d) killed -9 3 s into 10 s of load on the other data planes: "+
		"longest time without an admitted request after the kill %s; busiest 1-s window %d (limit 100)\n",
		victim+1, gap.Round(time.Millisecond), busiest)
}
