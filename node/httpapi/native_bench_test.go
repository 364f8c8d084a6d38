package httpapi

import (
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/dispatch/runner"
)

// BenchmarkDataPlaneInPlace is the data plane proxying /svc/x/ in place
// to a fasthttp upstream, with ACLs on (a token checked per call), served
// natively or converted to net/http's types first, and, for scale, the
// bare fasthttp proxy (server + HostClient, no rules). Each op is one
// request over loopback from a fasthttp client, all in this process: the
// figures compare CPU per request of the three on the same machine, run
// side by side (-count alternates them).
func BenchmarkDataPlaneInPlace(b *testing.B) {
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	upSrv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello from the upstream\n") }}
	go func() { _ = upSrv.Serve(ul) }()
	b.Cleanup(func() { _ = upSrv.Shutdown() })
	upstream := "http://" + ul.Addr().String()

	var native atomic.Int64
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithACL(oneToken{"s3cret"}),
		WithExec(proxyOnly{e: benchExecutor(b), upstream: upstream, native: &native}))
	bare := &fasthttp.HostClient{Addr: ul.Addr().String()}
	for _, tc := range []struct {
		name string
		h    fasthttp.RequestHandler
		dp   http.Handler
	}{
		{name: "native", dp: api},
		{name: "converted", dp: http.HandlerFunc(api.ServeHTTP)},
		{name: "bare-fasthttp", h: func(ctx *fasthttp.RequestCtx) {
			ctx.Request.Header.Del("Authorization")
			ctx.Request.SetHost(bare.Addr)
			_ = bare.Do(&ctx.Request, &ctx.Response)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			if tc.h != nil {
				srv := &fasthttp.Server{Handler: tc.h}
				go func() { _ = srv.Serve(l) }()
				defer func() { _ = srv.Shutdown() }()
			} else {
				dp := NewDataPlane(tc.dp, 4<<20, zerolog.Nop())
				go func() { _ = dp.Serve(l) }()
				defer func() { _ = dp.Shutdown(b.Context()) }()
			}
			c := &fasthttp.HostClient{Addr: l.Addr().String(), MaxConns: 64}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for pb.Next() {
					req.SetRequestURI("http://" + c.Addr + "/svc/x/a/b?q=1")
					req.Header.Set("Authorization", "Bearer s3cret")
					if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("%v %d %s", err, resp.StatusCode(), resp.Body())
						return
					}
				}
			})
		})
	}
	if native.Load() == 0 {
		b.Error("the native case served nothing natively")
	}
}

func benchExecutor(b *testing.B) *runner.Executor {
	b.Helper()
	cfg := runner.DefaultConfig()
	cfg.MaxConcurrentHTTP = 1024
	e, err := runner.New(cfg, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	return e
}
