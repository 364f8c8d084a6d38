// Command statebench measures meshgw's replicated write (PUT /v1/services/NAME
// through its HTTP API, Raft on disk) side by side with 128 B puts to a
// 3-member etcd, in one run, alternating (meshgw, etcd) rounds:
//
//	go run ./cmd/statebench [-meshgw /path/to/meshgw] [-rounds 3] [-d 5s]
//
// Both systems run as 3 local processes on 127.0.0.1 with data on disk under
// a temp dir; everything started is killed at the end, on error and on
// SIGINT/SIGTERM. Every load loop is bounded by time and by op count.
package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	meshgwBin = flag.String("meshgw", "", "meshgw binary (default: go build ../../cmd/meshgw)")
	etcdBin   = flag.String("etcd", "etcd", "etcd binary")
	rounds    = flag.Int("rounds", 3, "alternated (meshgw, etcd) rounds per measurement")
	dur       = flag.Duration("d", 5*time.Second, "duration of one round")
	maxOps    = flag.Int("max-ops", 1_000_000, "upper bound on ops per round")
	withWrk   = flag.Bool("wrk", true, "also drive meshgw with wrk instead of Go's HTTP client")
	raw       = flag.Bool("raw", true, "also measure dragonboat alone (3 NodeHosts configured as meshgw's, load inside the nodes, no HTTP)")
)

var (
	procsMu sync.Mutex
	procs   []*exec.Cmd
	tmpRoot string
)

// cpuTicks is the user+system CPU time of pid so far, in clock ticks
// (1/100 s on Linux), read from /proc/PID/stat.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	var u, s int64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return u + s
}

// cpuOf sums cpuTicks over the started processes whose binary is bin, and
// of this process itself (the clients) when self is set.
func cpuOf(bin string) (servers, self int64) {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		if p.Path == bin || filepath.Base(p.Path) == filepath.Base(bin) {
			servers += cpuTicks(p.Process.Pid)
		}
	}
	return servers, cpuTicks(os.Getpid())
}

// only lets the processes started from bin run and stops (SIGSTOP) every
// other process this benchmark started, so that each system is measured
// alone on the machine: an idle Raft group still spends CPU on ticks,
// heartbeats and gossip. The caller warms the resumed system up.
func only(bin string) {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		sig := syscall.SIGSTOP
		if p.Path == bin || filepath.Base(p.Path) == filepath.Base(bin) {
			sig = syscall.SIGCONT
		}
		_ = p.Process.Signal(sig)
	}
}

func start(name string, args ...string) {
	cmd := exec.Command(name, args...)
	log, err := os.CreateTemp(tmpRoot, filepath.Base(name)+"-*.log")
	if err != nil {
		fatal("log file: %v", err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=1")
	if err := cmd.Start(); err != nil {
		fatal("start %s: %v", name, err)
	}
	procsMu.Lock()
	procs = append(procs, cmd)
	procsMu.Unlock()
}

func cleanup() {
	procsMu.Lock()
	defer procsMu.Unlock()
	for _, p := range procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	procs = nil
	if tmpRoot != "" && os.Getenv("STATEBENCH_KEEP") == "" {
		_ = os.RemoveAll(tmpRoot)
	}
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "statebench: "+format+"\n", args...)
	cleanup()
	os.Exit(1)
}

func freePort() int {
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("free port: %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return p
		}
	}
	fatal("no free port")
	return 0
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

type result struct {
	rate     float64
	p50, p99 time.Duration
	errs     int
	n        int
	// CPU per acknowledged write, in µs: the 3 servers together, and the
	// clients (this process).
	cpuServers, cpuClient float64
}

// load runs clients goroutines calling op until d elapses or maxOps ops ran.
func load(clients int, d time.Duration, op func(client, i int) error) result {
	var (
		mu   sync.Mutex
		lat  []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	perClient := *maxOps / clients
	t0 := time.Now()
	end := t0.Add(d)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			bad := 0
			for i := 0; i < perClient && time.Now().Before(end); i++ {
				s := time.Now()
				if err := op(c, i); err != nil {
					bad++
					continue
				}
				mine = append(mine, time.Since(s))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	r := resultOf(lat, time.Since(t0))
	r.errs = errs
	return r
}

// resultOf summarises the latencies of the ops acknowledged in el.
func resultOf(lat []time.Duration, el time.Duration) result {
	if len(lat) == 0 {
		return result{}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return result{rate: float64(len(lat)) / el.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], n: len(lat)}
}

// measured runs load and charges the CPU that bin's processes and this
// process spent meanwhile to each acknowledged write.
func measured(bin string, clients int, d time.Duration, op func(client, i int) error) result {
	s0, c0 := cpuOf(bin)
	r := load(clients, d, op)
	s1, c1 := cpuOf(bin)
	if r.n > 0 {
		perTick := 1e6 / 100 / float64(r.n) // µs per tick per write
		r.cpuServers, r.cpuClient = float64(s1-s0)*perTick, float64(c1-c0)*perTick
	}
	return r
}

// samples are one system's results over the rounds.
type samples struct{ rate, p50, p99, cpu series }

// add records round r's result and logs it.
func (s *samples) add(clients, r int, name string, x result) {
	fmt.Fprintf(os.Stderr, "  %d client(s) round %d: %s %.0f/s p50 %.2fms p99 %.2fms (%d err) cpu/write %.0fµs servers %.0fµs client\n",
		clients, r, name, x.rate, ms(x.p50), ms(x.p99), x.errs, x.cpuServers, x.cpuClient)
	s.rate, s.p50, s.p99, s.cpu = append(s.rate, x.rate), append(s.p50, ms(x.p50)), append(s.p99, ms(x.p99)), append(s.cpu, x.cpuServers)
}

// compare prints name's results beside etcd's.
func compare(name string, s, etcd *samples) {
	fmt.Printf("\n| measurement | %s median [min–max] | etcd median [min–max] | ratio |\n|---|---|---|---|\n", name)
	row("writes/s", "", s.rate, etcd.rate)
	row("p50", " ms", s.p50, etcd.p50)
	row("p99", " ms", s.p99, etcd.p99)
	row("server CPU per write", " µs", s.cpu, etcd.cpu)
}

type series []float64

func (s series) sorted() []float64 {
	c := append([]float64(nil), s...)
	sort.Float64s(c)
	return c
}

func (s series) median() float64 { c := s.sorted(); return c[len(c)/2] }

func row(name, unit string, m, e series) {
	a, b := m.sorted(), e.sorted()
	fmt.Printf("| %s | %.4g%s [%.4g–%.4g] | %.4g%s [%.4g–%.4g] | %.2f× |\n",
		name, m.median(), unit, a[0], a[len(a)-1], e.median(), unit, b[0], b[len(b)-1], m.median()/e.median())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func buildMeshgw() string {
	if *meshgwBin != "" {
		return *meshgwBin
	}
	out := filepath.Join(tmpRoot, "meshgw")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/meshgw")
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		fatal("build meshgw (run from test/bench or pass -meshgw): %v\n%s", err, b)
	}
	return out
}

func put(c *http.Client, url, body string) error {
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// startMesh starts the 3-node meshgw group and returns the HTTP addresses.
func startMesh(bin string) []string {
	var gossip0 string
	var https []string
	for i := 1; i <= 3; i++ {
		a := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort()) }
		g, h := a(), a()
		dir := filepath.Join(tmpRoot, fmt.Sprintf("mesh-n%d", i))
		args := []string{"agent", "-node", fmt.Sprintf("n%d", i), "-bind", g, "-rpc", a(), "-raft", a(), "-http", h,
			"-data-dir", dir, "-bootstrap-expect", "3", "-gossip-profile", "local", "-log-level", "warn"}
		if i == 1 {
			gossip0 = g
		} else {
			args = append(args, "-join", gossip0)
		}
		start(bin, args...)
		https = append(https, h)
		if i == 1 {
			waitFor(30*time.Second, "meshgw n1 health", func() error {
				resp, err := http.Get("http://" + h + "/v1/health")
				if err != nil {
					return err
				}
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("health %d", resp.StatusCode)
				}
				return nil
			})
		}
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for _, h := range https {
		waitFor(60*time.Second, "meshgw raft group via "+h, func() error {
			return put(c, "http://"+h+"/v1/services/warmup", `{"name":"warmup","type":"exec","command":["true"]}`)
		})
	}
	return https
}

// startEtcd starts a 3-member etcd and returns its client endpoints.
func startEtcd() []string {
	type m struct{ name, client, peer string }
	var ms []m
	var cluster []string
	for i := 1; i <= 3; i++ {
		x := m{fmt.Sprintf("e%d", i), fmt.Sprintf("http://127.0.0.1:%d", freePort()), fmt.Sprintf("http://127.0.0.1:%d", freePort())}
		ms = append(ms, x)
		cluster = append(cluster, x.name+"="+x.peer)
	}
	var eps []string
	for _, x := range ms {
		start(*etcdBin, "--name", x.name, "--data-dir", filepath.Join(tmpRoot, "etcd-"+x.name),
			"--listen-client-urls", x.client, "--advertise-client-urls", x.client,
			"--listen-peer-urls", x.peer, "--initial-advertise-peer-urls", x.peer,
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "statebench", "--log-level", "warn")
		eps = append(eps, x.client)
	}
	return eps
}

// meshLeader names the default group's leader as node h sees it.
func meshLeader(h string) string {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + h + "/v1/status")
	if err != nil {
		return "?"
	}
	defer resp.Body.Close()
	var st struct {
		Groups []struct {
			Leader string `json:"leader"`
		} `json:"groups"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st) != nil || len(st.Groups) == 0 {
		return "?"
	}
	return st.Groups[0].Leader
}

// etcdLeader names the etcd member that leads (e1..e3, by endpoint order).
func etcdLeader(cli *clientv3.Client, eps []string) string {
	for i, ep := range eps {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return fmt.Sprintf("e%d", i+1)
		}
	}
	return "?"
}

func machine() string {
	out, _ := os.ReadFile("/proc/cpuinfo")
	model, n := "", 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "model name") {
			n++
			if model == "" {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
			}
		}
	}
	return fmt.Sprintf("%d logical CPUs, %s", n, model)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "raftnode" {
		raftNode(os.Args[2:])
		return
	}
	flag.Parse()
	if *rounds < 1 || *dur <= 0 || *maxOps < 32 {
		fmt.Fprintln(os.Stderr, "statebench: -rounds ≥ 1, -d > 0, -max-ops ≥ 32")
		os.Exit(2)
	}
	var err error
	if tmpRoot, err = os.MkdirTemp("", "statebench-"); err != nil {
		fatal("temp dir: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; fatal("interrupted") }()
	defer cleanup()

	fmt.Printf("machine: %s; %d alternated rounds of %s per measurement\n", machine(), *rounds, *dur)
	bin := buildMeshgw()
	nodes := startMesh(bin)
	eps := startEtcd()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		fatal("etcd client: %v", err)
	}
	defer cli.Close()
	waitFor(30*time.Second, "etcd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "warmup", "x")
		return err
	})

	var rg *rawGroup
	if *raw {
		rg = startRaw(bin)
	}
	rawRound := func(clients int) result {
		self, _ := os.Executable()
		only(self)
		waitFor(30*time.Second, "dragonboat group after resume", func() error {
			if len(rg.load(1, 100*time.Millisecond, 1)) == 0 {
				return fmt.Errorf("no write acknowledged")
			}
			return nil
		})
		c0 := rg.cpu()
		t0 := time.Now()
		r := resultOf(rg.load(clients, *dur, *maxOps), time.Since(t0))
		if r.n > 0 {
			r.cpuServers = float64(rg.cpu()-c0) * 1e6 / 100 / float64(r.n)
		}
		return r
	}

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
	meshOp := func(c, i int) error {
		name := fmt.Sprintf("s%d-%d", c, i)
		return put(hc, "http://"+nodes[c%len(nodes)]+"/v1/services/"+name,
			fmt.Sprintf(`{"name":"%s","type":"exec","command":["true"]}`, name))
	}
	value := strings.Repeat("v", 128)
	rawHTTPOp := func(c, i int) error {
		return put(hc, fmt.Sprintf("http://%s/k/k%d-%d", rg.http[c%3], c, i), value)
	}
	rawFastOp := func(c, i int) error {
		return put(hc, fmt.Sprintf("http://%s/k/k%d-%d", rg.fast[c%3], c, i), value)
	}
	etcdOp := func(c, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, fmt.Sprintf("k%d-%d", c, i), value)
		return err
	}

	self, _ := os.Executable()
	for _, clients := range []int{1, 32} {
		var mesh, meshWrk, etcd, alone, bare, fast samples
		for r := 1; r <= *rounds; r++ {
			only(bin)
			waitFor(30*time.Second, "meshgw after resume", func() error { return meshOp(0, -1) })
			mesh.add(clients, r, "meshgw", measured(bin, clients, *dur, meshOp))
			meshLead := meshLeader(nodes[0])
			if *withWrk {
				meshWrk.add(clients, r, "meshgw driven by wrk", wrkWrites(bin, nodes, clients, *dur))
			}
			only(*etcdBin)
			waitFor(30*time.Second, "etcd after resume", func() error { return etcdOp(0, -1) })
			etcd.add(clients, r, "etcd", measured(*etcdBin, clients, *dur, etcdOp))
			if clients == 1 {
				fmt.Fprintf(os.Stderr, "  leaders: meshgw %s, etcd %s (the 1-client load goes to node 1 for meshgw and dragonboat; etcd's client picks its endpoints)\n",
					meshLead, etcdLeader(cli, eps))
			}
			if rg != nil {
				alone.add(clients, r, "dragonboat alone (clients in the nodes)", rawRound(clients))
				if clients == 1 {
					fmt.Fprintf(os.Stderr, "  leaders: dragonboat alone n%d\n", rg.leader)
				}
				bare.add(clients, r, "dragonboat + bare net/http", measured(self, clients, *dur, rawHTTPOp))
				fast.add(clients, r, "dragonboat + fasthttp", measured(self, clients, *dur, rawFastOp))
			}
		}
		fmt.Printf("\n%d client(s)\n", clients)
		compare("meshgw", &mesh, &etcd)
		if *withWrk {
			compare("meshgw driven by wrk (p50/p99: the largest of the wrk processes')", &meshWrk, &etcd)
		}
		if rg != nil {
			compare("dragonboat alone (CPU: clients included)", &alone, &etcd)
			compare("dragonboat + bare net/http", &bare, &etcd)
			compare("dragonboat + fasthttp", &fast, &etcd)
			fmt.Printf("\nmeshgw reaches %.0f%% of dragonboat alone's writes/s and %.0f%% of dragonboat + bare net/http's\n",
				100*mesh.rate.median()/alone.rate.median(), 100*mesh.rate.median()/bare.rate.median())
		}
	}
}
