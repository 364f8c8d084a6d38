package main

import (
	"bufio"
	"flag"
	"fmt"
	"github.com/meshgw/meshgw/test/bench/internal/wrkout"
	"github.com/valyala/fasthttp"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// benchProxy: HTTP through meshgw vs HAProxy round-robin straight to the
// same 2 upstreams, all driven by wrk -t2 -c64. meshgw twice: through a
// node that is itself a runner (client → node → upstream) and through a
// gateway-only node (client → gateway → QUIC → runner → upstream).
func benchProxy(bin string) {
	var ups []string
	for i := 0; i < 2; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("%v", err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("hello from the upstream\n"))
		})}
		go srv.Serve(l)
		ups = append(ups, l.Addr().String())
	}
	// Every node also has a data-plane listener (-proxy): the same /svc/
	// handler on fasthttp.
	nodes, dps, cmds := proxyMesh(bin, ups)
	// A second mesh on another build, measured alternated with the first
	// (-meshgw-before): a change's before and after in the same conditions.
	var bnodes []meshNode
	var bdps []string
	var bcmds []*exec.Cmd
	if *proxyBefore != "" {
		bnodes, bdps, bcmds = proxyMesh(*proxyBefore, ups)
	}
	hport := freePort()
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
  default_backend b
backend b
  balance roundrobin
  server u1 %s
  server u2 %s
`, hport, ups[0], ups[1])
	f, _ := os.CreateTemp("", "haproxy-*.cfg")
	f.WriteString(cfg)
	f.Close()
	start("haproxy", "-f", f.Name(), "-db")
	waitFor(10*time.Second, "haproxy", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/", hport)) })

	// Two Go proxies for reference: the standard library's ReverseProxy,
	// round-robin over the same upstreams, in a process of its own, with
	// none of meshgw's routing, ACLs, runner choice or records; and below,
	// a bare forwarding loop (runBareProxy), the bound for any Go proxy.
	rport := freePort()
	self, err := os.Executable()
	if err != nil {
		fatal("executable: %v", err)
	}
	start(self, "-revproxy", fmt.Sprintf("127.0.0.1:%d=%s,%s", rport, ups[0], ups[1]))
	waitFor(10*time.Second, "ReverseProxy", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/", rport)) })
	fport := freePort()
	start(self, "-fastproxy", fmt.Sprintf("127.0.0.1:%d=%s,%s", fport, ups[0], ups[1]))
	waitFor(10*time.Second, "fasthttp proxy", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/", fport)) })
	bport := freePort()
	start(self, "-bareproxy", fmt.Sprintf("127.0.0.1:%d=%s,%s", bport, ups[0], ups[1]))
	waitFor(10*time.Second, "bare proxy loop", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/", bport)) })

	d := fmt.Sprintf("%ds", int(dur.Seconds()))
	if *baseline != "" {
		benchInPlace(httpClient(), ups[0], dps, hport, fport, d)
		return
	}
	local := func(p int) func(r int) string {
		return func(r int) string { return fmt.Sprintf("http://127.0.0.1:%d/", p) }
	}
	ms := []*proxyRow{
		{key: "api", name: "meshgw via a runner node's API port", cmds: cmds,
			url: func(r int) string { return "http://" + nodes[r%3].http + "/svc/web/" }},
		{key: "gwapi", name: "meshgw via a gateway-only node's API port (QUIC hop)", cmds: cmds,
			url: func(int) string { return "http://" + nodes[3].http + "/svc/web/" }},
		{key: "dp", name: "meshgw via a runner node's -proxy listener (in place)", cmds: cmds,
			url: func(r int) string { return "http://" + dps[r%3] + "/svc/web/" }},
		{key: "gwdp", name: "meshgw via a gateway-only node's -proxy listener (QUIC hop)", cmds: cmds,
			url: func(int) string { return "http://" + dps[3] + "/svc/web/" }},
		{key: "haproxy", name: "HAProxy (round-robin, keep-alive)", url: local(hport)},
		{key: "revproxy", name: "net/http ReverseProxy (the standard library's proxy)", url: local(rport)},
		{key: "bare", name: "bare Go HTTP/1.1 loop (ceiling: not a usable proxy)", url: local(bport)},
		{key: "fasthttp", name: "fasthttp server + HostClient", url: local(fport)},
	}
	if bnodes != nil {
		ms = append(ms,
			&proxyRow{key: "dp-before", name: "before: meshgw via a runner node's -proxy listener (in place)",
				cmds: bcmds, url: func(r int) string { return "http://" + bdps[r%3] + "/svc/web/" }},
			&proxyRow{key: "gwdp-before", name: "before: meshgw via a gateway-only node's -proxy listener (QUIC hop)",
				cmds: bcmds, url: func(int) string { return "http://" + bdps[3] + "/svc/web/" }})
	}
	if *proxyOnly != "" {
		want := map[string]bool{"haproxy": true} // the peer every ratio is against
		for _, k := range strings.Split(*proxyOnly, ",") {
			want[strings.TrimSpace(k)] = true
			if bnodes != nil && (k == "dp" || k == "gwdp") {
				want[k+"-before"] = true
			}
		}
		var kept []*proxyRow
		for _, m := range ms {
			if want[m.key] {
				kept = append(kept, m)
			}
		}
		ms = kept
	}
	for _, m := range ms {
		waitFor(10*time.Second, m.name, func() error { return get(m.url(0)) })
	}
	var peer *proxyRow
	for _, m := range ms {
		if m.key == "haproxy" {
			peer = m
		}
	}
	var loads series
	for r := 0; r < *rounds; r++ {
		for _, m := range ms {
			cpu0 := cpuOf(m.cmds)
			rate, lat := wrk(m.url(r), d)
			m.rate, m.lat = append(m.rate, rate), append(m.lat, lat)
			if m.cmds != nil && rate > 0 {
				// The agents' CPU per request: what the shared machine's
				// load disturbs least.
				m.cpu = append(m.cpu, (cpuOf(m.cmds)-cpu0)/(rate*dur.Seconds())*1e6)
			}
		}
		loads = append(loads, loadAvg())
		fmt.Fprintf(os.Stderr, "round %d done, load average %.1f\n", r+1, loads[len(loads)-1])
	}
	lo, hi := loads.span()
	fmt.Printf("\nwrk -t2 -c64 -d%s, %d rounds, load average (1 min) after each round %.1f–%.1f\n\n", d, *rounds, lo, hi)
	fmt.Printf("| measurement | req/s median [range] | vs HAProxy | p50 median | agents' CPU per request |\n|---|---|---|---|---|\n")
	for _, m := range ms {
		lo, hi := m.rate.span()
		cpu := ""
		if len(m.cpu) > 0 {
			clo, chi := m.cpu.span()
			cpu = fmt.Sprintf("%.0f µs [%.0f–%.0f]", m.cpu.median(), clo, chi)
		}
		fmt.Printf("| %s | %.0f [%.0f–%.0f] | %.2f× | %.2f ms | %s |\n", m.name, m.rate.median(), lo, hi,
			m.rate.median()/peer.rate.median(), m.lat.median(), cpu)
	}
	// The same ratios round by round: each round's rows ran one after the
	// other, so these are the least disturbed by the shared machine.
	fmt.Printf("\nper-round ratio to HAProxy of the same round:\n")
	for _, m := range ms {
		var rs series
		for i := range m.rate {
			rs = append(rs, m.rate[i]/peer.rate[i])
		}
		lo, hi := rs.span()
		fmt.Printf("  %-12s median %.2f× [%.2f–%.2f]\n", m.key, rs.median(), lo, hi)
	}
}

// proxyRow is one measured target of benchProxy.
type proxyRow struct {
	key, name string
	url       func(round int) string
	cmds      []*exec.Cmd // the agents measured (nil: not meshgw)
	rate, lat series
	cpu       series // the agents' CPU µs per request
}

// proxyMesh starts 4 agents of bin (3 runners and a gateway-only node, each
// with a -proxy listener), defines the service "web" on ups[0] and returns
// the agents and their data-plane addresses.
func proxyMesh(bin string, ups []string) ([]meshNode, []string, []*exec.Cmd) {
	var dps []string
	for i := 0; i < 4; i++ {
		dps = append(dps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	nodes, cmds := startNodes(bin, []string{"b1", "b2", "b3", "g1"}, func(i int) []string {
		if i == 3 {
			return []string{"-roles", "gateway", "-proxy", dps[i]}
		}
		return []string{"-proxy", dps[i]}
	})
	if err := put(httpClient(), "http://"+nodes[0].http+"/v1/services/web", `{"name":"web","type":"http","upstream":"http://`+ups[0]+`"}`); err != nil {
		fatal("service: %v", err)
	}
	waitFor(10*time.Second, "meshgw proxy", func() error { return get("http://" + nodes[0].http + "/svc/web/") })
	return nodes, dps, cmds
}

// loadAvg is the machine's 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	var l float64
	fmt.Sscanf(string(b), "%f", &l)
	return l
}

// benchInPlace (-baseline): proxying in place on a runner's -proxy
// listener, this build and the baseline build (a mesh of 3 runners of its
// own, same upstream), beside HAProxy and the bare fasthttp proxy, all in
// the same alternated rounds.
func benchInPlace(hc *http.Client, up string, dps []string, hport, fport int, d string) {
	var bps []string
	for i := 0; i < 3; i++ {
		bps = append(bps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	old, _ := startNodes(*baseline, []string{"o1", "o2", "o3"}, func(i int) []string { return []string{"-proxy", bps[i]} })
	if err := put(hc, "http://"+old[0].http+"/v1/services/web", `{"name":"web","type":"http","upstream":"http://`+up+`"}`); err != nil {
		fatal("baseline service: %v", err)
	}
	for _, dp := range append(append([]string{}, dps[:3]...), bps...) {
		waitFor(10*time.Second, "data plane "+dp, func() error { return get("http://" + dp + "/svc/web/") })
	}
	var nRate, oRate, hRate, fRate, nLat, oLat, hLat, fLat series
	var loads []string
	for r := 0; r < *rounds; r++ {
		loads = append(loads, loadavg())
		n, nl := wrk("http://"+dps[r%3]+"/svc/web/", d)
		h, hl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", hport), d)
		o, ol := wrk("http://"+bps[r%3]+"/svc/web/", d)
		f, fl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", fport), d)
		nRate, oRate, hRate, fRate = append(nRate, n), append(oRate, o), append(hRate, h), append(fRate, f)
		nLat, oLat, hLat, fLat = append(nLat, nl), append(oLat, ol), append(hLat, hl), append(fLat, fl)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s, load average at each round's start: %s\n", d, strings.Join(loads, " "))
	fmt.Printf("| measurement | median [range] | HAProxy median [range] | vs HAProxy |\n|---|---|---|---|\n")
	row("req/s, fasthttp server + HostClient", "", fRate, hRate, true)
	row("req/s, meshgw in place, this build", "", nRate, hRate, true)
	row("req/s, meshgw in place, baseline build", "", oRate, hRate, true)
	row("p50, fasthttp server + HostClient", "ms", fLat, hLat, false)
	row("p50, meshgw in place, this build", "ms", nLat, hLat, false)
	row("p50, meshgw in place, baseline build", "ms", oLat, hLat, false)
	fmt.Printf("\n| per-round ratio | median [range] |\n|---|---|\n")
	ratioRow("this build / bare fasthttp proxy", nRate, fRate)
	ratioRow("baseline build / bare fasthttp proxy", oRate, fRate)
	ratioRow("this build / baseline build", nRate, oRate)
}

var (
	proxyOnly   = flag.String("proxy-only", "", "proxy: measure only these rows (comma-separated: api,gwapi,dp,gwdp,revproxy,bare,fasthttp; HAProxy always)")
	proxyBefore = flag.String("meshgw-before", "", "proxy: a second meshgw build, run as a mesh of its own and measured alternated with the first")
	fastProxy   = flag.String("fastproxy", "", "internal: run as a fasthttp forwarding proxy, LISTEN=UP1,UP2")
	revProxy    = flag.String("revproxy", "", "internal: run as a net/http ReverseProxy, LISTEN=UP1,UP2")
	bareProxy   = flag.String("bareproxy", "", "internal: run as a bare HTTP/1.1 forwarding loop, LISTEN=UP1,UP2")
)

// runFastProxy is the child behind -fastproxy LISTEN=UP1,UP2: a forwarding
// proxy on valyala/fasthttp (its server and HostClient, round-robin), the
// fastest HTTP/1.1 stack in Go's ecosystem, as a bound for a Go proxy that
// gives up net/http.
func runFastProxy(spec string) {
	listen, list, ok := strings.Cut(spec, "=")
	if !ok {
		fatal("-fastproxy LISTEN=UP1,UP2")
	}
	var clients []*fasthttp.HostClient
	for _, u := range strings.Split(list, ",") {
		clients = append(clients, &fasthttp.HostClient{Addr: u, MaxConns: 128})
	}
	var next atomic.Uint64
	h := func(ctx *fasthttp.RequestCtx) {
		c := clients[next.Add(1)%uint64(len(clients))]
		req := &ctx.Request
		req.Header.Del("Connection")
		if err := c.Do(req, &ctx.Response); err != nil {
			ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
		}
	}
	if err := fasthttp.ListenAndServe(listen, h); err != nil {
		fatal("fastproxy: %v", err)
	}
}

// runBareProxy is the child behind -bareproxy LISTEN=UP1,UP2: the least a
// Go HTTP/1.1 proxy can do. Each client connection gets its own upstream
// connection (round-robin at accept) and a loop that parses a request with
// net/http's parser, writes it upstream, parses the response and writes it
// back: no server, no pool, no header rewriting, no timeouts. Not a usable
// proxy; a bound on what one written in Go gets from these 2 cores.
func runBareProxy(spec string) {
	listen, list, ok := strings.Cut(spec, "=")
	if !ok {
		fatal("-bareproxy LISTEN=UP1,UP2")
	}
	ups := strings.Split(list, ",")
	l, err := net.Listen("tcp", listen)
	if err != nil {
		fatal("bareproxy: %v", err)
	}
	for i := 0; ; i++ {
		c, err := l.Accept()
		if err != nil {
			fatal("bareproxy: %v", err)
		}
		go func(c net.Conn, up string) {
			defer c.Close()
			u, err := net.Dial("tcp", up)
			if err != nil {
				return
			}
			defer u.Close()
			cr, cw := bufio.NewReader(c), bufio.NewWriter(c)
			ur, uw := bufio.NewReader(u), bufio.NewWriter(u)
			for {
				req, err := http.ReadRequest(cr)
				if err != nil {
					return
				}
				if req.Write(uw) != nil || uw.Flush() != nil {
					return
				}
				resp, err := http.ReadResponse(ur, req)
				if err != nil {
					return
				}
				err = resp.Write(cw)
				resp.Body.Close()
				if err != nil || cw.Flush() != nil {
					return
				}
			}
		}(c, ups[i%len(ups)])
	}
}

// runReverseProxy is the child behind -revproxy LISTEN=UP1,UP2: the
// standard library's ReverseProxy, round-robin, keep-alive to the
// upstreams with as many idle connections as wrk opens.
func runReverseProxy(spec string) {
	listen, list, ok := strings.Cut(spec, "=")
	if !ok {
		fatal("-revproxy LISTEN=UP1,UP2")
	}
	ups := strings.Split(list, ",")
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := ups[next.Add(1)%uint64(len(ups))]
			pr.SetURL(&url.URL{Scheme: "http", Host: u})
			pr.SetXForwarded()
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 128},
	}
	if err := http.ListenAndServe(listen, rp); err != nil {
		fatal("revproxy: %v", err)
	}
}

// wrk drives url for d with 2 threads and 64 connections and returns the
// rate and the p50 in milliseconds.
func wrk(url, d string) (float64, float64) {
	out, err := exec.Command("wrk", "-t2", "-c64", "-d"+d, "--latency", url).CombinedOutput()
	if err != nil {
		fatal("wrk: %v\n%s", err, out)
	}
	r, err := wrkout.Parse(string(out))
	if err != nil {
		fatal("%v: %s", err, out)
	}
	if r.Errors > 0 {
		fmt.Fprintf(os.Stderr, "wrk saw %d errors on %s:\n%s\n", r.Errors, url, out)
	}
	return r.Rate, float64(r.P50) / float64(time.Millisecond)
}
