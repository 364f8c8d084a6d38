package node

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/node/config"
)

// BenchmarkCacheHitPath is the whole native hit path of one agent: a GET
// of a cached /svc/ URL on its -proxy listener (fasthttp's server, the
// route, the access decision, limits, the service lookup, the cache's
// ServeHit, metrics), the central log off, from a fasthttp client in
// this process over loopback. Each op is one hit; the allocations per op
// are the agent's and the client's (the client's are none at steady
// state), plus whatever the idle agent does in the background.
func BenchmarkCacheHitPath(b *testing.B) {
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("cached response body 0123456789\n", 32) // 1 KiB, as meshbench's
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Content-Type", "text/plain")
		ctx.Response.Header.Set("Cache-Control", "max-age=3600")
		ctx.SetBodyString(body)
	}}
	go func() { _ = up.Serve(ul) }()
	b.Cleanup(func() { _ = up.Shutdown() })

	proxy := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	a := startAgent(b, testConfig(b, "hit1", func(c *config.Runtime) {
		c.BootstrapExpect = 1
		c.ProxyAddr = proxy
		c.CentralLog = false
	}))
	svc := `{"name":"web","type":"http","upstream":"http://` + ul.Addr().String() + `","cache":{"ttl":"1h"}}`
	eventually(b, 30*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodPut, "http://"+a.cfg.HTTPAddr+"/v1/services/web", strings.NewReader(svc))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("put service: %d", resp.StatusCode)
		}
		return nil
	})
	c := &fasthttp.HostClient{Addr: proxy, MaxConns: 64}
	url := "http://" + proxy + "/svc/web/c"
	eventually(b, 30*time.Second, func() error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		if err := c.Do(req, resp); err != nil {
			return err
		}
		if xc := string(resp.Header.Peek("X-Cache")); resp.StatusCode() != 200 || xc != "HIT" {
			return fmt.Errorf("warm-up: %d, X-Cache %q", resp.StatusCode(), xc)
		}
		return nil
	})
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 || len(resp.Body()) != len(body) {
				b.Errorf("%v %d %q", err, resp.StatusCode(), resp.Header.Peek("X-Cache"))
				return
			}
		}
	})
}
