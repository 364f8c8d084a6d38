package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// benchCache: cache hits through any meshgw node vs HAProxy's own cache
// (a cache section, http-request cache-use / http-response cache-store)
// in front of the same upstream, all driven by wrk -t2 -c64 on one URL.
// meshgw through each node's -proxy listener: an owner of the key answers
// from its own copy, the third node asks an owner over QUIC.
func benchCache(bin string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("%v", err)
	}
	body := strings.Repeat("cached response body 0123456789\n", 32) // 1 KiB
	var upCalls atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upCalls.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "max-age=3600") // both caches keep it for the hour
		w.Write([]byte(body))
	})}
	go srv.Serve(l)
	up := l.Addr().String()

	var dps []string
	for i := 0; i < 3; i++ {
		dps = append(dps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	nodes, cmds := startNodes(bin, []string{"b1", "b2", "b3"}, func(i int) []string { return []string{"-proxy", dps[i]} })
	hc := httpClient()
	if err := put(hc, "http://"+nodes[0].http+"/v1/services/web",
		`{"name":"web","type":"http","upstream":"http://`+up+`","cache":{"ttl":"1h"}}`); err != nil {
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
cache c
  total-max-size 64
  max-object-size 1048576
  max-age 3600
frontend f
  bind 127.0.0.1:%d
  default_backend b
backend b
  http-request cache-use c
  http-response cache-store c
  server u1 %s
`, hport, up)
	f, _ := os.CreateTemp("", "haproxy-cache-*.cfg")
	f.WriteString(cfg)
	f.Close()
	start("haproxy", "-f", f.Name(), "-db")
	waitFor(10*time.Second, "haproxy", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/c", hport)) })

	// Warm: a hit through every node, and find the key's owners (the
	// nodes holding an entry).
	owner := map[int]bool{}
	waitFor(20*time.Second, "meshgw cache hits", func() error {
		for i, dp := range dps {
			xc, err := xcache("http://" + dp + "/svc/web/c")
			if err != nil {
				return err
			}
			if xc != "HIT" {
				return fmt.Errorf("node %d: X-Cache %q", i, xc)
			}
		}
		for i, n := range nodes {
			owner[i] = holds(n.http)
		}
		if len(owner) != 3 {
			return fmt.Errorf("owners not known")
		}
		return nil
	})
	var own, other int
	other = -1
	for i := range nodes {
		if owner[i] {
			own = i
		} else {
			other = i
		}
	}
	if other < 0 {
		fatal("every node holds the entry; want 2 owners of 3")
	}
	// HAProxy answers from its cache: more GETs reach no upstream.
	for i := 0; i < 3; i++ {
		get(fmt.Sprintf("http://127.0.0.1:%d/c", hport))
	}
	before := upCalls.Load()
	for i := 0; i < 10; i++ {
		get(fmt.Sprintf("http://127.0.0.1:%d/c", hport))
	}
	if upCalls.Load() != before {
		fatal("HAProxy does not answer from its cache: %d upstream calls for 10 GETs", upCalls.Load()-before)
	}

	// For reference, the ceiling of the HTTP stack the -proxy listener is
	// built on: a bare fasthttp server answering the same body from
	// memory (no routing, tokens, key or placement), in a process of its own.
	self, err := os.Executable()
	if err != nil {
		fatal("executable: %v", err)
	}
	sport := freePort()
	start(self, "-staticfast", fmt.Sprintf("127.0.0.1:%d", sport))
	waitFor(10*time.Second, "static fasthttp server", func() error { return get(fmt.Sprintf("http://127.0.0.1:%d/c", sport)) })

	d := fmt.Sprintf("%ds", int(dur.Seconds()))
	if *baseline != "" {
		benchCacheBaseline(hc, up, "http://"+dps[own]+"/svc/web/c", "http://"+dps[other]+"/svc/web/c", nodes, cmds, hport, sport, d, &upCalls)
		return
	}
	var sRate, sLat series
	var oRate, oLat, nRate, nLat, aRate, aLat, hRate, hLat series
	for r := 0; r < *rounds; r++ {
		a, al := wrk("http://"+dps[own]+"/svc/web/c", d)
		b, bl := wrk("http://"+dps[other]+"/svc/web/c", d)
		c, cl := wrk("http://"+nodes[own].http+"/svc/web/c", d)
		h, hl := wrk(fmt.Sprintf("http://127.0.0.1:%d/c", hport), d)
		x, xl := wrk(fmt.Sprintf("http://127.0.0.1:%d/c", sport), d)
		sRate, sLat = append(sRate, x), append(sLat, xl)
		oRate, oLat, nRate, nLat = append(oRate, a), append(oLat, al), append(nRate, b), append(nLat, bl)
		aRate, aLat, hRate, hLat = append(aRate, c), append(aLat, cl), append(hRate, h), append(hLat, hl)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s, one cached URL (1 KiB): | measurement | meshgw median [range] | HAProxy cache median [range] | meshgw/HAProxy |\n|---|---|---|---|\n", d)
	row("hits/s, via an owner's -proxy listener (its own copy)", "", oRate, hRate, true)
	row("p50, via an owner's -proxy listener", "ms", oLat, hLat, false)
	row("hits/s, via the non-owner's -proxy listener (QUIC to an owner)", "", nRate, hRate, true)
	row("p50, via the non-owner's -proxy listener", "ms", nLat, hLat, false)
	row("hits/s, via an owner's API port (net/http)", "", aRate, hRate, true)
	row("p50, via an owner's API port", "ms", aLat, hLat, false)
	row("req/s, bare fasthttp server, body from memory (reference)", "", sRate, hRate, true)
	row("p50, bare fasthttp server, body from memory (reference)", "ms", sLat, hLat, false)
	fmt.Printf("\nmeshgw hits via an owner's -proxy listener reach %.0f%% of the bare fasthttp server's req/s\n", 100*oRate.median()/sRate.median())
	fmt.Printf("\nupstream calls during the measurement: %d\n", upCalls.Load()-before)
}

// benchCacheBaseline (-baseline): hits through an owner's -proxy
// listener (url) and through the non-owner's (otherURL), this build and
// the baseline build (a mesh of 3 of its own, same upstream), beside
// HAProxy's cache and the bare fasthttp server, in the same alternated
// rounds.
// CPU per hit is the mesh's three agents' user+system time over the
// round's requests; misses are the mesh's cacheable requests that went
// upstream (meshgw_cache_misses_total) during the rounds.
func benchCacheBaseline(hc *http.Client, up, url, otherURL string, nodes []meshNode, cmds []*exec.Cmd, hport, sport int, d string, upCalls *atomic.Int64) {
	var bps []string
	for i := 0; i < 3; i++ {
		bps = append(bps, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	old, oldCmds := startNodes(*baseline, []string{"o1", "o2", "o3"}, func(i int) []string { return []string{"-proxy", bps[i]} })
	if err := put(hc, "http://"+old[0].http+"/v1/services/web",
		`{"name":"web","type":"http","upstream":"http://`+up+`","cache":{"ttl":"1h"}}`); err != nil {
		fatal("baseline service: %v", err)
	}
	oldURL, oldOther := "", ""
	waitFor(20*time.Second, "baseline cache hits", func() error {
		for _, dp := range bps {
			if xc, err := xcache("http://" + dp + "/svc/web/c"); err != nil || xc != "HIT" {
				return fmt.Errorf("%s: X-Cache %q %v", dp, xc, err)
			}
		}
		oldURL, oldOther = "", ""
		for i, n := range old {
			if holds(n.http) {
				oldURL = "http://" + bps[i] + "/svc/web/c"
			} else {
				oldOther = "http://" + bps[i] + "/svc/web/c"
			}
		}
		if oldURL == "" || oldOther == "" {
			return fmt.Errorf("owners not known")
		}
		return nil
	})
	before := upCalls.Load()
	newMiss, oldMiss := misses(nodes), misses(old)
	var nRate, oRate, hRate, sRate, nLat, oLat, hLat, sLat, nfRate, ofRate series
	var nCPU, oCPU, nfCPU, ofCPU series
	secs := dur.Seconds()
	// measure runs wrk on u and the mesh's CPU per request, in µs.
	measure := func(u string, mesh []*exec.Cmd) (float64, float64, float64) {
		c0 := cpuOf(mesh)
		rate, p50 := wrk(u, d)
		return rate, p50, 1e6 * (cpuOf(mesh) - c0) / (rate * secs)
	}
	var loads []string
	for r := 0; r < *rounds; r++ {
		loads = append(loads, loadavg())
		n, nl, nc := measure(url, cmds)
		h, hl := wrk(fmt.Sprintf("http://127.0.0.1:%d/c", hport), d)
		o, ol, oc := measure(oldURL, oldCmds)
		x, xl := wrk(fmt.Sprintf("http://127.0.0.1:%d/c", sport), d)
		nf, _, nfc := measure(otherURL, cmds)
		of, _, ofc := measure(oldOther, oldCmds)
		nCPU, oCPU, nfCPU, ofCPU = append(nCPU, nc), append(oCPU, oc), append(nfCPU, nfc), append(ofCPU, ofc)
		nRate, oRate, hRate, sRate = append(nRate, n), append(oRate, o), append(hRate, h), append(sRate, x)
		nLat, oLat, hLat, sLat = append(nLat, nl), append(oLat, ol), append(hLat, hl), append(sLat, xl)
		nfRate, ofRate = append(nfRate, nf), append(ofRate, of)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s, one cached URL (1 KiB), load average at each round's start: %s\n", d, strings.Join(loads, " "))
	fmt.Printf("| measurement | median [range] | HAProxy cache median [range] | vs HAProxy |\n|---|---|---|---|\n")
	row("req/s, bare fasthttp server, body from memory", "", sRate, hRate, true)
	row("hits/s, meshgw owner's -proxy listener, this build", "", nRate, hRate, true)
	row("hits/s, meshgw owner's -proxy listener, baseline build", "", oRate, hRate, true)
	row("hits/s, meshgw non-owner's -proxy listener, this build", "", nfRate, hRate, true)
	row("hits/s, meshgw non-owner's -proxy listener, baseline build", "", ofRate, hRate, true)
	row("p50, bare fasthttp server", "ms", sLat, hLat, false)
	row("p50, meshgw owner, this build", "ms", nLat, hLat, false)
	row("p50, meshgw owner, baseline build", "ms", oLat, hLat, false)
	fmt.Printf("\n| per-round ratio | median [range] |\n|---|---|\n")
	ratioRow("this build / bare fasthttp server", nRate, sRate)
	ratioRow("baseline build / bare fasthttp server", oRate, sRate)
	ratioRow("this build / HAProxy cache", nRate, hRate)
	ratioRow("this build / baseline build", nRate, oRate)
	ratioRow("non-owner, this build / HAProxy cache", nfRate, hRate)
	ratioRow("non-owner, baseline build / HAProxy cache", ofRate, hRate)
	ratioRow("non-owner, this build / baseline build", nfRate, ofRate)
	fmt.Printf("\n| the mesh's CPU per hit (µs) | median [range] |\n|---|---|\n")
	cpuRow("owner, this build", nCPU)
	cpuRow("owner, baseline build", oCPU)
	cpuRow("non-owner, this build", nfCPU)
	cpuRow("non-owner, baseline build", ofCPU)
	fmt.Printf("\ncache misses during the rounds: this build %d, baseline build %d\n", misses(nodes)-newMiss, misses(old)-oldMiss)
	fmt.Printf("\nupstream calls during the measurement: %d\n", upCalls.Load()-before)
}

func cpuRow(name string, s series) {
	lo, hi := s.span()
	fmt.Printf("| %s | %.1f [%.1f–%.1f] |\n", name, s.median(), lo, hi)
}

// misses sums the nodes' meshgw_cache_misses_total for web.
func misses(nodes []meshNode) int {
	n := 0
	for _, nd := range nodes {
		resp, err := http.Get("http://" + nd.http + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, `meshgw_cache_misses_total{service="web"} `); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				n += int(f)
			}
		}
	}
	return n
}

// xcache GETs url and returns its X-Cache header.
func xcache(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return resp.Header.Get("X-Cache"), nil
}

// holds reports whether the node at api holds a web entry (its
// meshgw_cache_entries gauge).
func holds(api string) bool {
	resp, err := http.Get("http://" + api + "/metrics")
	if err != nil {
		return false
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, `meshgw_cache_entries{service="web"} `) {
			return strings.TrimSpace(strings.TrimPrefix(line, `meshgw_cache_entries{service="web"} `)) != "0"
		}
	}
	return false
}

var staticFast = flag.String("staticfast", "", "internal: run as a bare fasthttp server answering a 1 KiB body, LISTEN")

// runStaticFast is the child behind -staticfast LISTEN: fasthttp's server
// answering every request with the bench's 1 KiB body from memory.
func runStaticFast(listen string) {
	body := []byte(strings.Repeat("cached response body 0123456789\n", 32))
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Content-Type", "text/plain")
		ctx.Response.Header.Set("Cache-Control", "max-age=3600")
		ctx.Response.SetBody(body)
	}
	if err := fasthttp.ListenAndServe(listen, h); err != nil {
		fatal("staticfast: %v", err)
	}
}
