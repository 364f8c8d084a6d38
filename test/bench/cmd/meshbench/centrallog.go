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
	"strconv"
	"strings"
	"time"
)

// benchCentralLog: /svc/ throughput through a runner node's data plane
// (-proxy) with the central log on (every request spooled, shipped and
// stored in the log shard) vs off (-central-log=false), two 3-node meshes
// side by side in front of the same upstream, wrk rounds alternated. It
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
	mesh := func(prefix string, extra ...string) ([]meshNode, []string, []*exec.Cmd) {
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
		return nodes, dps, cmds
	}
	on, onDP, onCmds := mesh("l")
	off, offDP, offCmds := mesh("o", "-central-log=false")
	waitFor(30*time.Second, "central log", func() error { return get("http://" + on[0].http + "/v1/logs?limit=1") })
	d := fmt.Sprintf("%ds", int(dur.Seconds()))
	var onRate, offRate, onLat, offLat, onCPU, offCPU, onPut, offPut, onPut99, offPut99 series
	for r := 0; r < *rounds; r++ {
		c0 := cpuOf(onCmds)
		stop := writeLoad(on[(r+1)%3].http)
		a, al := wrk("http://"+onDP[r%3]+"/svc/web/", d)
		p50, p99 := stop()
		onPut, onPut99 = append(onPut, p50), append(onPut99, p99)
		onCPU = append(onCPU, (cpuOf(onCmds)-c0)/(a*dur.Seconds())*1e6)
		c0 = cpuOf(offCmds)
		stop = writeLoad(off[(r+1)%3].http)
		b, bl := wrk("http://"+offDP[r%3]+"/svc/web/", d)
		p50, p99 = stop()
		offPut, offPut99 = append(offPut, p50), append(offPut99, p99)
		offCPU = append(offCPU, (cpuOf(offCmds)-c0)/(b*dur.Seconds())*1e6)
		onRate, onLat, offRate, offLat = append(onRate, a), append(onLat, al), append(offRate, b), append(offLat, bl)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s, a runner node's -proxy listener: | measurement | log on median [range] | log off median [range] | on/off |\n|---|---|---|---|\n", d)
	row("req/s", "", onRate, offRate, true)
	row("p50", "ms", onLat, offLat, false)
	row("CPU of the 3 agents per request", "µs", onCPU, offCPU, false)
	row("state group write (service PUT) p50 under the same load", "ms", onPut, offPut, false)
	row("state group write (service PUT) p99 under the same load", "ms", onPut99, offPut99, false)
	// The entries the log holds for the run: every request wrk made,
	// shipped within seconds.
	var last, stored int
	for i := 0; i < 30; i++ {
		stored = kpiCount(on[0].http)
		if stored == last && stored > 0 {
			break
		}
		last = stored
		time.Sleep(time.Second)
	}
	fmt.Printf("\ncentral log: %d entries stored for the log-on rounds (every request wrk completed, plus warm-up)\n", stored)
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
