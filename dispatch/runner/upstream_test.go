package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// frontFor serves ServeProxy to upstream in front of a test server and
// records what ServeProxy returned.
func frontFor(t *testing.T, e *Executor, upstream string) (*httptest.Server, *atomic.Value) {
	t.Helper()
	var last atomic.Value
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := e.ServeProxy(w, r, upstream, r.URL.Path)
		last.Store(fmt.Sprint(err))
		if errors.Is(err, ErrAborted) {
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(front.Close)
	return front, &last
}

// rawUpstream answers every connection with handle, on a plain listener.
func rawUpstream(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyReusesUpstreamConnections(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	e := newExec(t, nil)
	front, _ := frontFor(t, e, up.URL)
	for i := 0; i < 50; i++ {
		if code, body := get(t, front.URL+"/x"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("50 sequential requests opened %d upstream connections, want 1", n)
	}
}

// An upstream that closes each connection after one response (as one whose
// idle timeout fired would): the next request finds the pooled connection
// dead and is sent again on a new one, invisibly.
func TestProxyRetriesStaleConnection(t *testing.T) {
	var served atomic.Int32
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		served.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e := newExec(t, nil)
	front, _ := frontFor(t, e, up)
	for i := 0; i < 20; i++ {
		if code, body := get(t, front.URL+"/x"); code != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if served.Load() != 20 {
		t.Fatalf("upstream served %d, want 20", served.Load())
	}
}

func TestProxyUpstreamFailures(t *testing.T) {
	slow := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br)
		time.Sleep(2 * time.Second)
	})
	bigHeader := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 8<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	truncated := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br)
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
	})
	upgrade := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br)
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	})
	e := newExec(t, func(c *Config) { c.UpstreamHeaderTimeout = 300 * time.Millisecond; c.MaxHeaderBytes = 4 << 10 })
	for _, c := range []struct {
		name, up string
		code     int
		errCode  string
	}{
		{"header timeout", slow, http.StatusGatewayTimeout, "upstream_timeout"},
		{"response headers too large", bigHeader, http.StatusBadGateway, "upstream_unreachable"},
		{"upgrade", upgrade, http.StatusBadGateway, "upstream_unreachable"},
	} {
		front, _ := frontFor(t, e, c.up)
		if code, body := get(t, front.URL+"/x"); code != c.code || !strings.Contains(body, c.errCode) {
			t.Errorf("%s: %d %q", c.name, code, body)
		}
	}
	front, last := frontFor(t, e, truncated)
	resp, err := http.Get(front.URL + "/x")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("truncated upstream body reached the client as a whole one")
	}
	if s, _ := last.Load().(string); !strings.Contains(s, ErrAborted.Error()) {
		t.Errorf("truncated body: ServeProxy returned %q, want ErrAborted", s)
	}
}

func TestProxyInformationalHeadAndEarlyAnswer(t *testing.T) {
	cont := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
		}
	})
	e := newExec(t, nil)
	front, _ := frontFor(t, e, cont)
	if code, body := get(t, front.URL+"/x"); code != 200 || body != "done" {
		t.Fatalf("after 100 Continue: %d %q", code, body)
	}

	var uploads atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/reject":
			// Answer before reading a byte of the upload.
			http.Error(w, "too big", http.StatusRequestEntityTooLarge)
		default:
			n, _ := io.Copy(io.Discard, r.Body)
			uploads.Add(1)
			fmt.Fprint(w, n)
		}
	}))
	defer up.Close()
	front, _ = frontFor(t, e, up.URL)
	resp, err := http.Head(front.URL + "/head")
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != 1234 {
		t.Fatalf("HEAD: %v %+v", err, resp)
	}
	resp.Body.Close()
	body := bytes.Repeat([]byte("x"), 1<<20)
	resp, err = http.Post(front.URL+"/reject", "application/octet-stream", bytes.NewReader(body))
	if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("early answer: %v %+v", err, resp)
	}
	resp.Body.Close()
	for i := 0; i < 3; i++ {
		resp, err = http.Post(front.URL+"/up", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != fmt.Sprint(len(body)) {
			t.Fatalf("upload %d: upstream read %q bytes", i, b)
		}
	}
}

// A client that goes away mid-stream ends the upstream exchange and the
// connection is not pooled half-read.
func TestProxyClientGoneClosesUpstream(t *testing.T) {
	upGone := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			_, _ = io.WriteString(w, "ok")
			return
		}
		_, _ = io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upGone)
	}))
	defer up.Close()
	e := newExec(t, nil)
	front, _ := frontFor(t, e, up.URL)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, front.URL+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); line != "first\n" {
		t.Fatalf("first line %q", line)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-upGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request outlived its client")
	}
	if code, body := get(t, front.URL+"/ok"); code != 200 || body != "ok" {
		t.Fatalf("after a canceled stream: %d %q", code, body)
	}
}

// Connections idle past the pool's idle timeout are closed when the pool is
// next used, not kept open until the executor closes.
func TestUpstreamPoolDropsStaleIdleConnections(t *testing.T) {
	var arrived sync.WaitGroup
	arrived.Add(2)
	var n atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 2 { // the first two wait for each other: two connections
			arrived.Done()
			arrived.Wait()
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	e := newExec(t, nil)
	e.pool.idleTimeout = 50 * time.Millisecond
	front, _ := frontFor(t, e, up.URL)
	errc := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			resp, err := http.Get(front.URL + "/x")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			errc <- err
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	host := strings.TrimPrefix(up.URL, "http://")
	idle := func() int {
		e.pool.mu.Lock()
		defer e.pool.mu.Unlock()
		return len(e.pool.idle[host])
	}
	if got := idle(); got != 2 {
		t.Fatalf("%d idle connections after two concurrent requests, want 2", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		get(t, front.URL+"/x") // takes the newest; its return sweeps the stale one
		if idle() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stale idle connections kept: %d", idle())
		}
		time.Sleep(60 * time.Millisecond)
	}
}

// An upstream that fails while a slow client is still uploading gets the
// client a 502 at once: the proxy does not wait for the upload to end.
func TestProxyUpstreamFailsDuringSlowUpload(t *testing.T) {
	up := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		_, _ = http.ReadRequest(br) // headers only; then hang up
	})
	e := newExec(t, nil)
	front, _ := frontFor(t, e, up)
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("first part of a slow upload")) }()
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/x", pr)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		done <- resp
	}()
	select {
	case resp := <-done:
		if resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("want 502, got %+v", resp)
		}
		resp.Body.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy waited for the client's upload after the upstream failed")
	}
}

// TestProxyNeverForwardsTheMeshgwToken: whatever reached the runner (over
// the hop, say), X-Meshgw-Token is not sent upstream; every other header
// is.
func TestProxyNeverForwardsTheMeshgwToken(t *testing.T) {
	var got atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(fmt.Sprintf("token=%q auth=%q", r.Header.Get(TokenHeader), r.Header.Get("Authorization")))
	})
	plain := httptest.NewServer(h)
	defer plain.Close()
	e := newExec(t, nil)
	front, _ := frontFor(t, e, plain.URL)
	req, _ := http.NewRequest("GET", front.URL+"/x", nil)
	req.Header.Set(TokenHeader, "s3cret")
	req.Header.Set("Authorization", "Basic kept")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := `token="" auth="Basic kept"`; got.Load() != want {
		t.Errorf("upstream saw %v, want %s", got.Load(), want)
	}
}
