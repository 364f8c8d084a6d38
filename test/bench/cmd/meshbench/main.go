// Command meshbench measures meshgw side by side with the peer it replaces,
// in one run on this machine, alternating rounds (peer figures vary a lot
// on a shared 2-core box; medians of alternated rounds are comparable).
//
//	go run ./cmd/meshbench -meshgw /path/to/meshgw state   # vs a 3-member etcd
//	go run ./cmd/rpcbench                                  # QUIC RPC vs NATS request/reply (its own command)
//	go run ./cmd/meshbench -meshgw /path/to/meshgw proxy   # vs HAProxy, with wrk
//	go run ./cmd/meshbench -meshgw /path/to/meshgw failover # a worker kill -9 under load vs NATS
//	go run ./cmd/meshbench -meshgw /path/to/meshgw cache    # cache hits vs HAProxy's cache, with wrk
//	go run ./cmd/meshbench -meshgw /path/to/meshgw throttle # cluster-wide limits vs per-node limiters and HAProxy
//
// Everything listens on 127.0.0.1 and every load loop is bounded in time.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	meshgwBin = flag.String("meshgw", "", "meshgw binary (default: build it)")
	rounds    = flag.Int("rounds", 3, "alternated rounds per measurement")
	dur       = flag.Duration("d", 5*time.Second, "duration of one round")
	baseline  = flag.String("baseline", "", "proxy, cache: an earlier meshgw build, measured beside -meshgw in the same "+
		"alternated rounds (only the in-place / hit rows and their peers are then measured)")
)

var procs []*exec.Cmd
var procsMu sync.Mutex

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	log, _ := os.CreateTemp("", filepath.Base(name)+"-*.log")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=1")
	if err := cmd.Start(); err != nil {
		fatal("start %s: %v", name, err)
	}
	procsMu.Lock()
	procs = append(procs, cmd)
	procsMu.Unlock()
	return cmd
}

func stopAll() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		p.Process.Kill()
		p.Wait()
	}
	procs = nil
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "meshbench: "+format+"\n", args...)
	stopAll()
	os.Exit(1)
}

func freePort() int {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("%v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
}

func waitFor(d time.Duration, what string, f func() error) {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			fatal("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// result of one round.
type result struct {
	ops      int
	rate     float64
	p50, p99 time.Duration
}

// load runs clients in parallel for d, each calling op in a loop.
func load(clients int, d time.Duration, op func(client, i int) error) result {
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				if err := op(c, i); err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	el := time.Since(start)
	if errs > 0 {
		fmt.Fprintf(os.Stderr, "  (%d errors)\n", errs)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) == 0 {
		return result{}
	}
	return result{ops: len(lat), rate: float64(len(lat)) / el.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// series collects a figure over rounds.
type series []float64

func (s series) median() float64 {
	c := append(series(nil), s...)
	sort.Float64s(c)
	return c[len(c)/2]
}

func (s series) span() (float64, float64) {
	c := append(series(nil), s...)
	sort.Float64s(c)
	return c[0], c[len(c)-1]
}

func row(name, unit string, ours, peer series, higherBetter bool) {
	lo1, hi1 := ours.span()
	lo2, hi2 := peer.span()
	ratio := ours.median() / peer.median()
	fmt.Printf("| %s | %.4g %s [%.4g–%.4g] | %.4g %s [%.4g–%.4g] | %.2f× |\n", name, ours.median(), unit, lo1, hi1, peer.median(), unit, lo2, hi2, ratio)
	_ = higherBetter
}

// ratioRow prints the per-round ratios ours/peer: median [min–max].
func ratioRow(name string, ours, peer series) {
	var r series
	for i := range ours {
		r = append(r, ours[i]/peer[i])
	}
	lo, hi := r.span()
	fmt.Printf("| %s | %.2f [%.2f–%.2f] |\n", name, r.median(), lo, hi)
}

// loadavg is the 1-minute load average ("?" when unknown).
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func buildMeshgw() string {
	if *meshgwBin != "" {
		return *meshgwBin
	}
	out := filepath.Join(os.TempDir(), "meshbench-meshgw")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/meshgw")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		fatal("build meshgw: %v\n%s", err, b)
	}
	return out
}

// meshNode is one meshgw agent.
type meshNode struct{ gossip, rpc, raft, http string }

// startMesh starts n meshgw agents joined into one cluster and waits for
// its Raft group to take writes.
func startMesh(bin string, n int, extra ...string) []meshNode {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("b%d", i+1)
	}
	nodes, _ := startNodes(bin, names, func(int) []string { return extra })
	return nodes
}

// startNodes starts one agent per name (extra(i) adds flags to the i-th),
// joined into one cluster, and waits for its Raft group to take writes.
func startNodes(bin string, names []string, extra func(i int) []string) ([]meshNode, []*exec.Cmd) {
	var nodes []meshNode
	var cmds []*exec.Cmd
	for i, name := range names {
		a := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort()) }
		nd := meshNode{a(), a(), a(), a()}
		dir, _ := os.MkdirTemp("", "meshbench-node-")
		args := append([]string{"agent", "-node", name, "-bind", nd.gossip, "-rpc", nd.rpc, "-raft", nd.raft,
			"-http", nd.http, "-data-dir", dir, "-bootstrap-expect", fmt.Sprint(min(len(names), 3)), "-gossip-profile", "local", "-log-level", "warn",
			"-max-concurrent-execs", "256"}, extra(i)...)
		if i > 0 {
			args = append(args, "-join", nodes[0].gossip)
		}
		cmds = append(cmds, start(bin, args...))
		nodes = append(nodes, nd)
		if i == 0 {
			waitFor(30*time.Second, "first node", func() error { return get("http://" + nd.http + "/v1/health") })
		}
	}
	waitFor(60*time.Second, "raft group", func() error {
		return put(http.DefaultClient, "http://"+nodes[0].http+"/v1/services/warmup", `{"name":"warmup","type":"exec","command":["true"]}`)
	})
	return nodes, cmds
}

func get(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}

func put(c *http.Client, url, body string) error {
	req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

func post(c *http.Client, url, body string) ([]byte, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

func httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
}

func machine() {
	out, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "model name") {
			model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			break
		}
	}
	n, _ := exec.Command("nproc").Output()
	fmt.Printf("machine: %s cores, %s; %d alternated rounds of %s\n\n", strings.TrimSpace(string(n)), model, *rounds, *dur)
}

func main() {
	flag.Parse()
	if *natsResponder != "" {
		runNATSResponder(*natsResponder)
		return
	}
	if *revProxy != "" {
		runReverseProxy(*revProxy)
		return
	}
	if *fastProxy != "" {
		runFastProxy(*fastProxy)
		return
	}
	if *bareProxy != "" {
		runBareProxy(*bareProxy)
		return
	}
	if *staticFast != "" {
		runStaticFast(*staticFast)
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; stopAll(); os.Exit(1) }()
	defer stopAll()
	machine()
	switch flag.Arg(0) {
	case "state":
		benchState(buildMeshgw())
	case "dispatch":
		benchDispatch(buildMeshgw())
	case "proxy":
		benchProxy(buildMeshgw())
	case "failover":
		benchFailover(buildMeshgw())
	case "cache":
		benchCache(buildMeshgw())
	case "centrallog": // the central log on vs off (centrallog.go)
		benchCentralLog(buildMeshgw())
	case "throttle":
		benchThrottle(buildMeshgw())
	default:
		fatal("usage: meshbench [-meshgw BIN] state|dispatch|proxy|failover|cache|centrallog|throttle")
	}
	_ = context.Background
}
