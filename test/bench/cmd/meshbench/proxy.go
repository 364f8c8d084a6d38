package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
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
	nodes, _ := startNodes(bin, []string{"b1", "b2", "b3", "g1"}, func(i int) []string {
		if i == 3 {
			return []string{"-roles", "gateway"}
		}
		return nil
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

	d := fmt.Sprintf("%ds", int(dur.Seconds()))
	waitFor(10*time.Second, "meshgw proxy via the gateway", func() error { return get("http://" + nodes[3].http + "/svc/web/") })
	var mRate, gRate, hRate, mLat, gLat, hLat series
	for r := 0; r < *rounds; r++ {
		a, al := wrk("http://"+nodes[r%3].http+"/svc/web/", d)
		g, gl := wrk("http://"+nodes[3].http+"/svc/web/", d)
		b, bl := wrk(fmt.Sprintf("http://127.0.0.1:%d/", hport), d)
		mRate, gRate, hRate = append(mRate, a), append(gRate, g), append(hRate, b)
		mLat, gLat, hLat = append(mLat, al), append(gLat, gl), append(hLat, bl)
	}
	fmt.Printf("\nwrk -t2 -c64 -d%s: | measurement | meshgw median [range] | HAProxy median [range] | meshgw/HAProxy |\n|---|---|---|---|\n", d)
	row("req/s, via a runner node", "", mRate, hRate, true)
	row("p50, via a runner node", "ms", mLat, hLat, false)
	row("req/s, via a gateway-only node (QUIC hop)", "", gRate, hRate, true)
	row("p50, via a gateway-only node (QUIC hop)", "ms", gLat, hLat, false)
}

var (
	reqRe = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	p50Re = regexp.MustCompile(`50%\s+([0-9.]+)(us|ms|s)`)
)

func wrk(url, d string) (float64, float64) {
	out, err := exec.Command("wrk", "-t2", "-c64", "-d"+d, "--latency", url).CombinedOutput()
	if err != nil {
		fatal("wrk: %v\n%s", err, out)
	}
	s := string(out)
	if strings.Contains(s, "Non-2xx") {
		fmt.Fprintf(os.Stderr, "wrk saw errors on %s:\n%s\n", url, s)
	}
	m := reqRe.FindStringSubmatch(s)
	l := p50Re.FindStringSubmatch(s)
	if m == nil || l == nil {
		fatal("wrk output: %s", s)
	}
	rate, _ := strconv.ParseFloat(m[1], 64)
	lat, _ := strconv.ParseFloat(l[1], 64)
	switch l[2] {
	case "us":
		lat /= 1000
	case "s":
		lat *= 1000
	}
	return rate, lat
}
