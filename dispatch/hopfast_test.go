package dispatch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meshgw/meshgw/transport"
	"github.com/valyala/fasthttp"
)

// The native hop's header frame reads on the runner as the converted
// request's would: canonical names, repeated names merged, Host apart.
func TestHopFrameFromFasthttp(t *testing.T) {
	raw := "POST /svc/web/a?x=1 HTTP/1.1\r\nHost: example.com\r\ncontent-length: 3\r\n" +
		"x-custom: one\r\nX-CUSTOM: two\r\nx-odd_name: v\r\nCookie: a=1\r\nConnection: X-Hop\r\n\r\nabc"
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	hr := HopRequest{Path: "/a", Query: "x=1", Host: "example.com", RemoteAddr: "127.0.0.1:5"}
	svc := &Service{Name: "web", Upstream: "http://up", Version: 7}
	b := appendReqFast(nil, "POST", hr, "c1", svc, 3, &h)
	got, legacy, err := decodeReq(b)
	if err != nil || legacy {
		t.Fatalf("decode: %v (legacy %v)", err, legacy)
	}
	want := http.Header{
		"Content-Length": {"3"}, "X-Custom": {"one", "two"}, "X-Odd_name": {"v"},
		"Cookie": {"a=1"}, "Connection": {"X-Hop"},
	}
	if !reflect.DeepEqual(got.Header, want) {
		t.Errorf("header %v, want %v", got.Header, want)
	}
	if got.Method != "POST" || got.Path != "/a" || got.Query != "x=1" || got.Host != "example.com" ||
		got.RemoteAddr != "127.0.0.1:5" || got.Upstream != "http://up" || got.ContentLength != 3 || got.Report ||
		got.Service != "web" || got.Cluster != "c1" || got.ServiceVersion != 7 {
		t.Errorf("request %+v", got)
	}
}

// A response header frame lands in fasthttp's response without hop-by-hop
// or framing headers, its length and streaming read apart.
func TestHopResponseIntoFasthttp(t *testing.T) {
	h := http.Header{"X-A": {"1", "2"}, "Connection": {"X-Drop"}, "X-Drop": {"x"}, "Keep-Alive": {"5"},
		"Content-Length": {"12"}, "Content-Type": {"text/plain"}}
	frames := [][]byte{appendResp(nil, 201, h), []byte(`{"status":201,"header":` + jsonHeader(h) + `}`)}
	for _, frame := range frames {
		var rh fasthttp.ResponseHeader
		status, size, streamed, err := decodeRespFast(frame, &rh)
		if err != nil || status != 201 || size != 12 || streamed {
			t.Fatalf("%d %d %v %v", status, size, streamed, err)
		}
		if vs := rh.PeekAll("X-A"); len(vs) != 2 || string(rh.ContentType()) != "text/plain" {
			t.Errorf("X-A %q, Content-Type %q", vs, rh.ContentType())
		}
		for _, k := range []string{"X-Drop", "Keep-Alive"} {
			if v := rh.Peek(k); len(v) != 0 {
				t.Errorf("%s passed: %q", k, v)
			}
		}
	}
	var rh fasthttp.ResponseHeader
	sse := appendResp(nil, 200, http.Header{"Content-Type": {"text/event-stream"}})
	if _, size, streamed, _ := decodeRespFast(sse, &rh); size != -1 || !streamed {
		t.Errorf("event stream: size %d streamed %v", size, streamed)
	}
	if _, _, _, err := decodeRespFast([]byte{httpWireV1, 0, 200, 5}, &rh); err == nil {
		t.Error("a truncated frame was accepted")
	}
}

func jsonHeader(h http.Header) string {
	b, _ := json.Marshal(h)
	return string(b)
}

// BenchmarkProxyHop: one request at a time through the native hop, gateway
// and runner in this process, on lanes and on a stream per request.
func BenchmarkProxyHop(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("hello"))
	}))
	defer up.Close()
	for _, lanes := range []int{64, 0} {
		b.Run(map[bool]string{true: "lanes", false: "streams"}[lanes > 0], func(b *testing.B) {
			c := newTCluster(b)
			c.tmod = func(tc *transport.Config) { tc.LanesPerPeer = lanes }
			gw := c.add("gw", false, nil)
			c.tmod = nil
			c.add("r1", true, nil)
			svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
			var rc fasthttp.RequestCtx
			rc.Request.Header.SetMethod("GET")
			rc.Request.SetRequestURI("/svc/web/")
			rc.Request.Header.SetHost("example.com")
			rc.Request.Header.Set("User-Agent", "bench")
			hr := HopRequest{Path: "/", Host: "example.com", RemoteAddr: "127.0.0.1:1"}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rc.Response.Reset()
				served, err := gw.d.ProxyHop(ctx, &rc, testCluster, svc, hr)
				if !served || err != nil || string(rc.Response.Body()) != "hello" {
					b.Fatalf("served %v, %v: %d %q", served, err, rc.Response.StatusCode(), rc.Response.Body())
				}
			}
		})
	}
}

// The native hop names its service, so the runner checks the upstream
// against its cluster's definition: one the state does not define is
// refused, nothing proxied.
func TestProxyHopUpstreamChecked(t *testing.T) {
	var hits atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer up.Close()
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: "http://127.0.0.1:1"})
	svc.Upstream = up.URL // this node's copy is not the cluster's
	var rc fasthttp.RequestCtx
	rc.Request.Header.SetMethod("GET")
	rc.Request.SetRequestURI("/svc/web/")
	served, err := gw.d.ProxyHop(context.Background(), &rc, testCluster, svc, HopRequest{Path: "/"})
	if !served || !errors.Is(err, ErrProxyRefused) || hits.Load() != 0 {
		t.Fatalf("served %v, err %v, upstream hit %d times", served, err, hits.Load())
	}
}
