package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/rs/zerolog"
)

// startDataPlane serves h on a DataPlane at a loopback port and returns
// its base URL.
func startDataPlane(t *testing.T, h http.Handler, maxBody int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dp := NewDataPlane(h, maxBody, zerolog.Nop())
	done := make(chan error, 1)
	go func() { done <- dp.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := dp.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + l.Addr().String()
}

// proxyFront is a data plane whose /svc/x/... proxies to upstream through
// e, as the API's /svc/ route ends up doing on a runner.
func proxyFront(t *testing.T, e *runner.Executor, upstream string) string {
	return startDataPlane(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.ServeProxy(w, r, upstream, strings.TrimPrefix(r.URL.Path, "/svc/x")); err != nil {
			WriteError(w, Errorf(http.StatusServiceUnavailable, "proxy", "%v", err))
		}
	}), 4<<20)
}

// proxyFronts are the data plane's two ways to the exchange in place:
// "converted", the request as net/http's type through ServeProxy
// (proxyFront), and "native", the API's /svc/x/ served on fasthttp's own
// request (FastProxy, runner.ServeInPlace), counted in native.
func proxyFronts(t *testing.T, e *runner.Executor, upstream string, native *atomic.Int64) map[string]string {
	api := New(DefaultConfig(), &fakeBackend{}, zerolog.Nop(), WithExec(proxyOnly{e: e, upstream: upstream, native: native}))
	return map[string]string{"converted": proxyFront(t, e, upstream), "native": startDataPlane(t, api, 4<<20)}
}

func executor(t *testing.T, tune func(*runner.Config)) *runner.Executor {
	t.Helper()
	cfg := runner.DefaultConfig()
	if tune != nil {
		tune(&cfg)
	}
	e, err := runner.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func send(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct{ Error, Code string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("not the API's error shape: %q", body)
	}
	return e.Code
}

func TestDataPlaneServesOnlyServicesAndHealth(t *testing.T) {
	var seen atomic.Value
	base := startDataPlane(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	}), 1024)
	for _, p := range []string{"/v1/health", "/svc/a/b"} {
		resp, _ := send(t, newReq(t, "GET", base+p, nil))
		if resp.StatusCode != http.StatusNoContent || seen.Load() != p {
			t.Errorf("GET %s: %d, handler saw %v", p, resp.StatusCode, seen.Load())
		}
	}
	seen.Store("")
	for _, p := range []string{"/v1/services", "/metrics", "/"} {
		resp, body := send(t, newReq(t, "GET", base+p, nil))
		if resp.StatusCode != http.StatusNotFound || errorCode(t, body) != "not_found" || !strings.Contains(body, "-http") {
			t.Errorf("GET %s: %d %s, want 404 naming -http", p, resp.StatusCode, body)
		}
	}
	if seen.Load() != "" {
		t.Errorf("the handler was called for %v", seen.Load())
	}
}

// TestDataPlaneRequestIsWhatNetHTTPParses: the handler sees the request as
// net/http would give it.
func TestDataPlaneRequestIsWhatNetHTTPParses(t *testing.T) {
	type seen struct {
		Method, RequestURI, Path, Query, Host, Proto, Body string
		RemoteIP                                           string
		ContentLength                                      int64
	}
	got := make(chan seen, 1)
	gotHeader := make(chan http.Header, 1)
	base := startDataPlane(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ip, _, _ := net.SplitHostPort(r.RemoteAddr)
		got <- seen{r.Method, r.RequestURI, r.URL.Path, r.URL.RawQuery, r.Host, r.Proto, string(b), ip, r.ContentLength}
		gotHeader <- r.Header
		w.Header().Set("X-Answer", "1")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "made")
	}), 1<<20)

	// A chunked upload: the handler reads it from the connection, of
	// unknown length, as from net/http.
	req, _ := http.NewRequest("POST", base+"/svc/a/b%20c?x=1&y=2", io.MultiReader(strings.NewReader("hello "), strings.NewReader("world")))
	req.Host = "front.example"
	req.Header.Add("X-Repeat", "one")
	req.Header.Add("X-Repeat", "two")
	req.Header.Set("Cookie", "a=1; b=2")
	resp, body := send(t, req)
	if resp.StatusCode != http.StatusCreated || body != "made" || resp.Header.Get("X-Answer") != "1" ||
		strings.Join(resp.Header.Values("X-Multi"), ",") != "a,b" {
		t.Fatalf("response: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	s := <-got
	want := seen{Method: "POST", RequestURI: "/svc/a/b%20c?x=1&y=2", Path: "/svc/a/b c", Query: "x=1&y=2", Host: "front.example",
		Proto: "HTTP/1.1", Body: "hello world", RemoteIP: "127.0.0.1", ContentLength: -1}
	h := <-gotHeader
	if s != want {
		t.Errorf("request:\n got %+v\nwant %+v", s, want)
	}
	if strings.Join(h["X-Repeat"], ",") != "one,two" || h.Get("Cookie") != "a=1; b=2" || h.Get("Host") != "" {
		t.Errorf("header: %v", h)
	}
	// A GET has no body: length 0, which is what sends a proxied request
	// down the fast path (runner.FastRequest wants a known length).
	send(t, newReq(t, "GET", base+"/svc/a", nil))
	if s := <-got; s.ContentLength != 0 || s.Body != "" {
		t.Errorf("GET: length %d, body %q; want 0 and none", s.ContentLength, s.Body)
	}
	<-gotHeader
}

func TestDataPlaneBounds(t *testing.T) {
	var called atomic.Int64
	base := startDataPlane(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			WriteError(w, err) // *http.MaxBytesError: 413
		}
	}), 1024)
	// A declared length over the bound is refused before the handler.
	resp, body := send(t, newReq(t, "PUT", base+"/svc/a", bytes.NewReader(make([]byte, 2048))))
	if resp.StatusCode != http.StatusRequestEntityTooLarge || errorCode(t, body) != "too_large" || called.Load() != 0 {
		t.Errorf("2 KiB body over a 1 KiB bound: %d %s, handler called %d times", resp.StatusCode, body, called.Load())
	}
	// A chunked one fails its read past the bound.
	resp, body = send(t, newReq(t, "PUT", base+"/svc/a", io.MultiReader(bytes.NewReader(make([]byte, 1000)), bytes.NewReader(make([]byte, 1000)))))
	if resp.StatusCode != http.StatusRequestEntityTooLarge || errorCode(t, body) != "too_large" {
		t.Errorf("2 KiB chunked body over a 1 KiB bound: %d %s", resp.StatusCode, body)
	}
	resp, body = send(t, newReq(t, "PUT", base+"/svc/a", bytes.NewReader(make([]byte, 1000))))
	if resp.StatusCode != 200 {
		t.Errorf("a body within the bound: %d %s", resp.StatusCode, body)
	}
	req := newReq(t, "GET", base+"/svc/a", nil)
	req.Header.Set("X-Big", strings.Repeat("x", maxHeaderBytes+1))
	resp, body = send(t, req)
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || errorCode(t, body) != "too_large" {
		t.Errorf("oversized headers: %d %s", resp.StatusCode, body)
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /svc/a HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
	raw, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(raw.Body)
	if raw.StatusCode != http.StatusBadRequest || errorCode(t, string(b)) != "bad_request" {
		t.Errorf("malformed request: %d %s", raw.StatusCode, b)
	}
}

// TestDataPlaneAbortCutsTheConnection: a handler that gives up with
// http.ErrAbortHandler (the proxy, when an upstream breaks mid-body) must
// not leave the client with what looks like a whole response.
func TestDataPlaneAbortCutsTheConnection(t *testing.T) {
	base := startDataPlane(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "partial")
		panic(http.ErrAbortHandler)
	}), 1024)
	resp, err := http.Get(base + "/svc/a")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatalf("the client got a complete response: %d", resp.StatusCode)
	}
}

func TestFastProxyRewritesLikeTheAPIProxy(t *testing.T) {
	var got atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("%s %s host=%s xff=%s xfh=%s xfp=%s hop=%q keep=%q te=%q custom=%s ua=%q length=%d chunked=%v",
			r.Method, r.RequestURI, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get("X-Hop"), r.Header.Get("Keep-Alive"), r.Header.Get("Te"),
			r.Header.Get("X-Custom"), r.Header.Get("User-Agent"), r.ContentLength, r.TransferEncoding != nil))
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "dropped")
		w.Header().Set("X-Kept", "yes")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	var native atomic.Int64
	upHost := strings.TrimPrefix(up.URL, "http://")
	for mode, base := range proxyFronts(t, executor(t, nil), up.URL+"/base?k=v", &native) {
		// The first target is converted on either front (an escape),
		// the second native on the native one.
		for _, target := range []string{"/a%20b/c", "/a/b.c"} {
			req, _ := http.NewRequest("GET", base+"/svc/x"+target+"?q=1", nil)
			req.Host = "gw.example"
			req.Header.Set("X-Forwarded-For", "10.0.0.1")
			req.Header.Add("X-Forwarded-For", "10.0.0.2")
			req.Header.Set("Connection", "X-Hop, close")
			req.Header.Set("X-Hop", "1")
			req.Header.Set("Keep-Alive", "timeout=5")
			req.Header.Set("Te", "trailers")
			req.Header.Set("X-Custom", "kept")
			req.Header.Set("User-Agent", "")
			resp, body := send(t, req)
			if resp.StatusCode != http.StatusAccepted || body != "ok" || resp.Header.Get("X-Kept") != "yes" ||
				resp.Header.Get("X-Resp-Hop") != "" {
				t.Errorf("%s %s: response: %d %q %v", mode, target, resp.StatusCode, body, resp.Header)
			}
			want := fmt.Sprintf(`GET /base%s?k=v&q=1 host=%s xff=10.0.0.1, 10.0.0.2, 127.0.0.1 xfh=gw.example xfp=http hop="" keep="" te="" custom=kept ua="" length=0 chunked=false`, target, upHost)
			if got.Load() != want {
				t.Errorf("%s %s: upstream saw\n %v\nwant\n %s", mode, target, got.Load(), want)
			}
		}
	}
	if native.Load() != 1 {
		t.Errorf("%d requests served in place natively, want 1", native.Load())
	}
}

func TestFastProxyBodiesBothWays(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			b, _ := io.ReadAll(r.Body)
			sum := sha256.Sum256(b)
			fmt.Fprintf(w, "%d %s", len(b), hex.EncodeToString(sum[:]))
		case "/stream":
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-release // the rest waits until the client saw the first piece
			_, _ = io.WriteString(w, "-second")
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer up.Close()
	defer close(release)
	for mode, base := range proxyFronts(t, executor(t, nil), up.URL, nil) {
		t.Run(mode, func(t *testing.T) {

			body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			sum := sha256.Sum256(body)
			resp, got := send(t, newReq(t, "POST", base+"/svc/x/upload", bytes.NewReader(body)))
			if want := fmt.Sprintf("%d %s", len(body), hex.EncodeToString(sum[:])); resp.StatusCode != 200 || got != want {
				t.Errorf("1 MiB upload: %d %q, want %q", resp.StatusCode, got, want)
			}

			// A multipart form and a chunked upload pass through as sent.
			var form bytes.Buffer
			mw := multipart.NewWriter(&form)
			fw, _ := mw.CreateFormFile("file", "a.bin")
			_, _ = fw.Write(body[:100<<10])
			_ = mw.Close()
			fsum := sha256.Sum256(form.Bytes())
			mreq := newReq(t, "POST", base+"/svc/x/upload", bytes.NewReader(form.Bytes()))
			mreq.Header.Set("Content-Type", mw.FormDataContentType())
			resp, got = send(t, mreq)
			if want := fmt.Sprintf("%d %s", form.Len(), hex.EncodeToString(fsum[:])); resp.StatusCode != 200 || got != want {
				t.Errorf("multipart upload: %d %q, want %q", resp.StatusCode, got, want)
			}
			resp, got = send(t, newReq(t, "POST", base+"/svc/x/upload", io.MultiReader(bytes.NewReader(body[:1<<19]), bytes.NewReader(body[1<<19:]))))
			if want := fmt.Sprintf("%d %s", len(body), hex.EncodeToString(sum[:])); resp.StatusCode != 200 || got != want {
				t.Errorf("1 MiB chunked upload: %d %q, want %q", resp.StatusCode, got, want)
			}

			sresp, err := http.Get(base + "/svc/x/stream")
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, 5)
			if _, err := io.ReadFull(sresp.Body, first); err != nil || string(first) != "first" {
				t.Fatalf("first piece of the stream: %q %v", first, err)
			}
			release <- struct{}{}
			rest, err := io.ReadAll(sresp.Body)
			sresp.Body.Close()
			if err != nil || string(rest) != "-second" {
				t.Errorf("rest of the stream: %q %v", rest, err)
			}

			hresp, hbody := send(t, newReq(t, "HEAD", base+"/svc/x/head", nil))
			if hresp.StatusCode != 200 || hresp.ContentLength != 1234 || hbody != "" {
				t.Errorf("HEAD: %d length %d body %q", hresp.StatusCode, hresp.ContentLength, hbody)
			}
			eresp, ebody := send(t, newReq(t, "GET", base+"/svc/x/empty", nil))
			if eresp.StatusCode != http.StatusNoContent || ebody != "" {
				t.Errorf("204: %d %q", eresp.StatusCode, ebody)
			}
		})
	}
}

func TestFastProxyUpstreamFailures(t *testing.T) {
	hang := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			<-hang
		case "/slowbody":
			// Headers at once, then a body that takes longer than the
			// header timeout: it must arrive whole.
			for i := 0; i < 4; i++ {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
				time.Sleep(150 * time.Millisecond)
			}
		case "/truncated":
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "short")
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case "/upgrade":
			conn, brw, _ := w.(http.Hijacker).Hijack()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
			_ = brw.Flush()
			conn.Close()
		}
	}))
	defer up.Close()
	defer close(hang) // before up.Close, which waits for the handler
	for mode, base := range proxyFronts(t, executor(t, func(c *runner.Config) { c.UpstreamHeaderTimeout = 300 * time.Millisecond }), up.URL, nil) {
		t.Run(mode, func(t *testing.T) {

			resp, body := send(t, newReq(t, "GET", base+"/svc/x/hang", nil))
			if resp.StatusCode != http.StatusGatewayTimeout || errorCode(t, body) != "upstream_timeout" {
				t.Errorf("hung upstream: %d %s, want 504 upstream_timeout", resp.StatusCode, body)
			}
			resp, body = send(t, newReq(t, "GET", base+"/svc/x/slowbody", nil))
			if resp.StatusCode != 200 || body != "part0;part1;part2;part3;" {
				t.Errorf("a body slower than the header timeout: %d %q", resp.StatusCode, body)
			}
			resp, body = send(t, newReq(t, "GET", base+"/svc/x/upgrade", nil))
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "upgrades are not proxied") {
				t.Errorf("101 from the upstream: %d %s", resp.StatusCode, body)
			}
			// The client must not take it for a whole response: it gets an error,
			// before the header or in the body.
			tresp, err := http.Get(base + "/svc/x/truncated")
			if err == nil {
				var b []byte
				b, err = io.ReadAll(tresp.Body)
				tresp.Body.Close()
				if err == nil {
					t.Errorf("a truncated upstream body reached the client as a whole one: %d %q", tresp.StatusCode, b)
				}
			}

			dead := proxyFront(t, executor(t, nil), "http://127.0.0.1:1")
			resp, body = send(t, newReq(t, "GET", dead+"/svc/x/", nil))
			if resp.StatusCode != http.StatusBadGateway || errorCode(t, body) != "upstream_unreachable" {
				t.Errorf("unreachable upstream: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// TestFastProxyReusesAndReleases: upstream connections are kept alive and
// reused, a connection the upstream closed while idle is redialled, and the
// executor's concurrency slot comes back with every response.
func TestFastProxyReusesAndReleases(t *testing.T) {
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "x")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	for mode, base := range proxyFronts(t, executor(t, func(c *runner.Config) { c.MaxConcurrentHTTP = 1 }), up.URL, nil) {
		t.Run(mode, func(t *testing.T) {
			for i := 0; i < 50; i++ {
				resp, body := send(t, newReq(t, "GET", base+"/svc/x/", nil))
				if resp.StatusCode != 200 || body != "x" {
					t.Fatalf("request %d: %d %q (a slot not given back answers busy)", i, resp.StatusCode, body)
				}
			}
			if n := conns.Load(); n > 2 {
				t.Errorf("50 sequential requests opened %d upstream connections", n)
			}
			up.CloseClientConnections() // as an upstream dropping idle keep-alives does
			resp, body := send(t, newReq(t, "GET", base+"/svc/x/", nil))
			if resp.StatusCode != 200 || body != "x" {
				t.Errorf("after the upstream closed the idle connection: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestFastProxyUpstreamAnswersDuringSlowUpload: an upstream that answers
// before taking a slow chunked upload reaches the client at once, and the
// body writer left reading the upload is stopped when the handler returns
// (the race detector watches the connection's reuse).
func TestFastProxyUpstreamAnswersDuringSlowUpload(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too big for me", http.StatusRequestEntityTooLarge)
	}))
	defer up.Close()
	for mode, base := range proxyFronts(t, executor(t, nil), up.URL, nil) {
		t.Run(mode, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = pw.Write([]byte("first part of a slow upload")) }()
			done := make(chan *http.Response, 1)
			go func() {
				resp, err := http.DefaultClient.Do(newReq(t, "POST", base+"/svc/x/up", pr))
				if err != nil {
					done <- nil
					return
				}
				done <- resp
			}()
			select {
			case resp := <-done:
				if resp == nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Fatalf("want the upstream's 413, got %+v", resp)
				}
				resp.Body.Close()
			case <-time.After(10 * time.Second):
				t.Fatal("the answer waited for the client's upload")
			}
			// The listener still serves.
			if resp, _ := send(t, newReq(t, "GET", base+"/svc/x/again", nil)); resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("after the cut upload: %d", resp.StatusCode)
			}
		})
	}
}
