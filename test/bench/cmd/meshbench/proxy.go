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
	var dps []string
	for i := 0; i < 4; i++ {
		dps = append(dps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	nodes, _ := startNodes(bin, []string{"b1", "b2", "b3", "g1"}, func(i int) []string {
		if i == 3 {
			return []string{"-roles", "gateway", "-proxy", dps[i]}
		}
		return []string{"-proxy", dps[i]}
	})
	hc := httpClient()
	// One http service per upstream; the runner round-robin spreads them.
	if err := put(hc, "http://"+nodes[0].http+"/v1/services/web", `{"name":"web","type":"http","upstream":"http://`+ups[0]+`"}`); err != nil {
		fatal("service: %v", err)
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
	waitFor(10*time.Second, "meshgw proxy", func() error { return get("http://" + nodes[0].http + "/svc/web/") })

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
		benchInPlace(hc, ups[0], dps, hport, fport, d)
		return
	}
	waitFor(10*time.Second, "meshgw proxy via the gateway", func() error { return get("http://" + nodes[3].http + "/svc/web/") })
	waitFor(10*time.Second, "meshgw data plane", func() error { return get("http://" + dps[3] + "/svc/web/") })
	var mRate, gRate, hRate, rRate, bRate, fRate, mLat, gLat, hLat, rLat, bLat, fLat series
	var pRate, qRate, pLat, qLat series
	for r := 0; r < *rounds; r++ {
		a, al := wrk("http://"+nodes[r%3].http+"/svc/web/", d)
		g, gl := wrk("http://"+nodes[3].http+"/svc/web/", d)
		p, pl := wrk("http://"+dps[r%3]+"/svc/web/", d)
		q, ql := wrk("http://"+dps[3]+"/svc/web/", d)
		pRate, pLat, qRate, qLat = append(pRate, p), append(pLat, pl), append(qRate, q), append(qLat, ql)
		b, bl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", hport), d)
		x, xl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", rport), d)
		y, yl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", bport), d)
		bRate, bLat = append(bRate, y), append(bLat, yl)
		z, zl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", fport), d)
		fRate, fLat = append(fRate, z), append(fLat, zl)
		mRate, gRate, hRate, rRate = append(mRate, a), append(gRate, g), append(hRate, b), append(rRate, x)
		mLat, gLat, hLat, rLat = append(mLat, al), append(gLat, gl), append(hLat, bl), append(rLat, xl)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s: | measurement | meshgw median [range] | HAProxy median [range] | meshgw/HAProxy |\n|---|---|---|---|\n", d)
	row("req/s, via a runner node", "", mRate, hRate, true)
	row("p50, via a runner node", "ms", mLat, hLat, false)
	row("req/s, via a runner node's -proxy listener (fasthttp)", "", pRate, hRate, true)
	row("p50, via a runner node's -proxy listener (fasthttp)", "ms", pLat, hLat, false)
	row("req/s, via a gateway-only node's -proxy listener (QUIC hop)", "", qRate, hRate, true)
	row("p50, via a gateway-only node's -proxy listener (QUIC hop)", "ms", qLat, hLat, false)
	row("req/s, via a gateway-only node (QUIC hop)", "", gRate, hRate, true)
	row("p50, via a gateway-only node (QUIC hop)", "ms", gLat, hLat, false)
	row("req/s, net/http ReverseProxy (the standard library's proxy)", "", rRate, hRate, true)
	row("p50, net/http ReverseProxy (the standard library's proxy)", "ms", rLat, hLat, false)
	row("req/s, bare Go HTTP/1.1 loop (ceiling: not a usable proxy)", "", bRate, hRate, true)
	row("p50, bare Go HTTP/1.1 loop (ceiling: not a usable proxy)", "ms", bLat, hLat, false)
	row("req/s, fasthttp server + HostClient", "", fRate, hRate, true)
	row("p50, fasthttp server + HostClient", "ms", fLat, hLat, false)
	fmt.Printf("\nmeshgw via a runner node reaches %.0f%% of the ReverseProxy's req/s and %.0f%% of the bare loop's\n",
		100*mRate.median()/rRate.median(), 100*mRate.median()/bRate.median())
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
	fastProxy = flag.String("fastproxy", "", "internal: run as a fasthttp forwarding proxy, LISTEN=UP1,UP2")
	revProxy  = flag.String("revproxy", "", "internal: run as a net/http ReverseProxy, LISTEN=UP1,UP2")
	bareProxy = flag.String("bareproxy", "", "internal: run as a bare HTTP/1.1 forwarding loop, LISTEN=UP1,UP2")
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
