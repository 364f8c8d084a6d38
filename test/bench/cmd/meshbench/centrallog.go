package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// beforeBin is an earlier meshgw binary, measured with the log on in the
// same alternated rounds (before/after a change, same conditions).
var beforeBin = flag.String("before", "", "centrallog: an earlier meshgw binary, measured with the log on in the same rounds")

// paceRate, when set, replaces wrk by a client sending that many requests
// a second: CPU per request at a fixed offered load is the work the mesh
// did, while under wrk it also divides the mesh's fixed costs by however
// many requests a shared machine let through.
var paceRate = flag.Int("rate", 0, "centrallog: fixed offered load in req/s instead of wrk's closed loop")

// benchCentralLog: /svc/ throughput through a runner node's data plane
// (-proxy) with the central log on (every request spooled, shipped and
// stored in the log shard) vs off (-central-log=false), 3-node meshes
// side by side in front of the same upstream (with -before, a third one
// running the earlier binary with the log on), wrk rounds alternated. It
// then checks that the log kept up: the entries stored match wrk's count
// of requests within what was still in flight.
func benchCentralLog(bin string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("%v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello from the upstream\n"))
	})}
	go srv.Serve(l)
	up := l.Addr().String()
	type arm struct {
		name  string
		nodes []meshNode
		dps   []string
		cmds  []*exec.Cmd
		// per round
		rate, lat, cpu, put50, put99 series
	}
	mesh := func(name, bin, prefix string, extra ...string) *arm {
		dps := []string{}
		for i := 0; i < 3; i++ {
			dps = append(dps, fmt.Sprintf("127.0.0.1:%d", freePort()))
		}
		nodes, cmds := startNodes(bin, []string{prefix + "1", prefix + "2", prefix + "3"}, func(i int) []string {
			return append([]string{"-proxy", dps[i]}, extra...)
		})
		if err := put(httpClient(), "http://"+nodes[0].http+"/v1/services/web", `{"name":"web","type":"http","upstream":"http://`+up+`"}`); err != nil {
			fatal("service: %v", err)
		}
		for _, dp := range dps {
			waitFor(10*time.Second, "meshgw data plane", func() error { return get("http://" + dp + "/svc/web/") })
		}
		return &arm{name: name, nodes: nodes, dps: dps, cmds: cmds}
	}
	on := mesh("log on", bin, "l")
	off := mesh("log off", bin, "o", "-central-log=false")
	arms := []*arm{on, off}
	var before *arm
	if *beforeBin != "" {
		before = mesh("log on, before", *beforeBin, "b")
		arms = append(arms, before)
	}
	for _, a := range arms {
		if a != off {
			waitFor(30*time.Second, "central log", func() error { return get("http://" + a.nodes[0].http + "/v1/logs?limit=1") })
		}
	}
	d := fmt.Sprintf("%ds", int(dur.Seconds()))
	fmt.Printf("load average at the start: %s\n", loadavg())
	for r := 0; r < *rounds; r++ {
		for k := range arms {
			a := arms[(r+k)%len(arms)] // who goes first alternates too
			c0 := cpuOf(a.cmds)
			stop := writeLoad(a.nodes[(r+1)%3].http)
			var rate, lat float64
			if *paceRate > 0 {
				rate, lat = paced("http://"+a.dps[r%3]+"/svc/web/", *paceRate, *dur)
			} else {
				rate, lat = wrk("http://"+a.dps[r%3]+"/svc/web/", d)
			}
			p50, p99 := stop()
			a.put50, a.put99 = append(a.put50, p50), append(a.put99, p99)
			a.cpu = append(a.cpu, (cpuOf(a.cmds)-c0)/(rate*dur.Seconds())*1e6)
			a.rate, a.lat = append(a.rate, rate), append(a.lat, lat)
		}
		fmt.Printf("round %d done, load average %s\n", r+1, loadavg())
	}
	load := "wrk -t2 -c64 -d" + d
	if *paceRate > 0 {
		load = fmt.Sprintf("%d req/s offered for %s", *paceRate, d)
	}
	table := func(x, y *arm) {
		fmt.Printf("\n%s, a runner node's -proxy listener: | measurement | %s median [range] | %s median [range] | ratio of medians | ratio per round [range] |\n|---|---|---|---|---|\n", load, x.name, y.name)
		row2 := func(name, unit string, a, b series) {
			lo1, hi1 := a.span()
			lo2, hi2 := b.span()
			var per series
			for i := range a {
				per = append(per, a[i]/b[i])
			}
			plo, phi := per.span()
			fmt.Printf("| %s | %.4g %s [%.4g–%.4g] | %.4g %s [%.4g–%.4g] | %.2f× | %.2f× [%.2f–%.2f] |\n",
				name, a.median(), unit, lo1, hi1, b.median(), unit, lo2, hi2, a.median()/b.median(), per.median(), plo, phi)
		}
		row2("req/s", "", x.rate, y.rate)
		row2("p50", "ms", x.lat, y.lat)
		row2("CPU of the 3 agents per request", "µs", x.cpu, y.cpu)
		row2("state group write (service PUT) p50 under the same load", "ms", x.put50, y.put50)
		row2("state group write (service PUT) p99 under the same load", "ms", x.put99, y.put99)
	}
	table(on, off)
	if before != nil {
		table(before, off)
		table(on, before)
	}
	// The entries the log holds for the run: every request wrk made,
	// shipped within seconds.
	for _, a := range arms {
		if a == off {
			continue
		}
		var last, stored int
		for i := 0; i < 30; i++ {
			stored = kpiCount(a.nodes[0].http)
			if stored == last && stored > 0 {
				break
			}
			last = stored
			time.Sleep(time.Second)
		}
		total := 0.0
		for _, r := range a.rate {
			total += r * dur.Seconds()
		}
		fmt.Printf("\ncentral log (%s): %d entries stored; wrk completed about %.0f requests (plus warm-up)\n", a.name, stored, total)
	}
	fmt.Printf("load average at the end: %s\n", loadavg())
}

// paced sends rate requests a second to url for d (64 connections, each
// request on its own schedule) and returns the completed rate and the
// median latency in ms.
func paced(url string, rate int, d time.Duration) (float64, float64) {
	hc := httpClient()
	const workers = 64
	every := time.Duration(workers) * time.Second / time.Duration(rate)
	var mu sync.Mutex
	var lat []time.Duration
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			next := t0.Add(every * time.Duration(w) / workers)
			for next.Sub(t0) < d {
				time.Sleep(time.Until(next))
				s := time.Now()
				resp, err := hc.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == http.StatusOK {
					mu.Lock()
					lat = append(lat, time.Since(s))
					mu.Unlock()
				}
				next = next.Add(every)
			}
		}(w)
	}
	wg.Wait()
	if len(lat) == 0 {
		return 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return float64(len(lat)) / d.Seconds(), ms(lat[len(lat)/2])
}

// kpiCount sums the KPI counts of service web over the last hour.
func kpiCount(addr string) int {
	resp, err := http.Get("http://" + addr + "/v1/kpis?service=web&window=1h&since=2h")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ks []struct {
		Count int `json:"count"`
	}
	if json.Unmarshal(b, &ks) != nil {
		return -1
	}
	n := 0
	for _, k := range ks {
		n += k.Count
	}
	return n
}

// cpuOf is the CPU time (user + system, seconds) the processes used so far.
func cpuOf(cmds []*exec.Cmd) float64 {
	tick := 100.0 // USER_HZ on Linux
	total := 0.0
	for _, c := range cmds {
		if c.Process == nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(c.Process.Pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			k, _ := strconv.ParseFloat(f[12], 64)
			total += (u + k) / tick
		}
	}
	return total
}

// writeLoad writes a service definition in a loop through addr (one
// writer: the state group's write latency) until the returned stop,
// which reports p50 and p99 in ms.
func writeLoad(addr string) func() (float64, float64) {
	done := make(chan struct{})
	res := make(chan []time.Duration, 1)
	go func() {
		hc := httpClient()
		var lat []time.Duration
		for i := 0; ; i++ {
			select {
			case <-done:
				res <- lat
				return
			default:
			}
			t0 := time.Now()
			if err := put(hc, "http://"+addr+"/v1/services/w", fmt.Sprintf(`{"name":"w","type":"exec","command":["echo","%d"]}`, i)); err == nil {
				lat = append(lat, time.Since(t0))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() (float64, float64) {
		close(done)
		lat := <-res
		if len(lat) == 0 {
			return 0, 0
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100])
	}
}
