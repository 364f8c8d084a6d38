package runner

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// IsUpgrade reports whether a request asks to switch protocols
// (WebSocket, or any Connection: Upgrade with an Upgrade header).
func IsUpgrade(h http.Header) bool {
	if h.Get("Upgrade") == "" {
		return false
	}
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "upgrade") {
				return true
			}
		}
	}
	return false
}

// Upgrader is a ResponseWriter that can switch protocols: Upgrade sends a
// 101 with h and runs fn with the client's connection (its reads yield
// first what was buffered already). fn owns the connection and returns
// when the exchange is over; Upgrade may return before fn runs (the data
// plane's server hands the connection over after the handler returns).
type Upgrader interface {
	Upgrade(h http.Header, fn func(client io.ReadWriteCloser)) error
}

// FindUpgrader returns w's way of switching protocols: an Upgrader, or a
// net/http Hijacker, found through Unwrap; nil when w has neither.
func FindUpgrader(w http.ResponseWriter) Upgrader {
	if u, ok := Find[Upgrader](w); ok {
		return u
	}
	if h, ok := Find[http.Hijacker](w); ok {
		return hijackUpgrader{h}
	}
	return nil
}

type hijackUpgrader struct{ h http.Hijacker }

func (u hijackUpgrader) Upgrade(h http.Header, fn func(io.ReadWriteCloser)) error {
	conn, brw, err := u.h.Hijack()
	if err != nil {
		return fmt.Errorf("switching protocols: %w", err)
	}
	_ = conn.SetDeadline(time.Time{}) // the server's deadlines are for requests
	if _, err := io.WriteString(brw, "HTTP/1.1 101 Switching Protocols\r\n"); err == nil {
		err = h.Write(brw)
	}
	_, _ = io.WriteString(brw, "\r\n")
	if err := brw.Flush(); err != nil {
		_ = conn.Close()
		return fmt.Errorf("switching protocols: %w", err)
	}
	fn(&bufferedConn{Reader: brw.Reader, Conn: conn})
	return nil
}

// bufferedConn reads through a reader holding bytes read ahead.
type bufferedConn struct {
	io.Reader
	net.Conn
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

// Pipe copies both ways between a and b until one side ends, then closes
// both and returns once both copies are over.
func Pipe(a, b io.ReadWriteCloser) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = a.Close()
			_ = b.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(a, b)
		closeBoth()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(b, a)
		closeBoth()
	}()
	wg.Wait()
}

// proxyUpgrade proxies a request that asks to switch protocols: on its
// own connection to the upstream (never pooled), the request with its
// Upgrade and Connection headers; a 101 switches the client's connection
// (through w's Upgrader) and the bytes flow both ways until either side
// closes; any other answer is relayed as usual.
func (e *Executor) proxyUpgrade(w http.ResponseWriter, r *http.Request, target *url.URL, path string, release func(), report bool) (int, error) {
	up := FindUpgrader(w)
	if up == nil {
		release()
		return 0, fmt.Errorf("%w: this listener cannot switch protocols (Connection: Upgrade)", ErrInvalid)
	}
	h := forwardHeader(r)
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = r.Header.Values("Upgrade")
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: target.Scheme, Host: target.Host, Path: joinPath(target.Path, path), RawQuery: joinQuery(target.RawQuery, r.URL.RawQuery)},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       target.Host,
		Body:       http.NoBody,
	}
	d := net.Dialer{Timeout: e.cfg.UpstreamDialTimeout, KeepAlive: 30 * time.Second}
	var conn net.Conn
	var err error
	if target.Scheme == "https" {
		conn, err = (&tls.Dialer{NetDialer: &d, Config: &tls.Config{ServerName: target.Hostname(), NextProtos: []string{"http/1.1"}}}).DialContext(r.Context(), "tcp", hostPort(target))
	} else {
		conn, err = d.DialContext(r.Context(), "tcp", target.Host)
	}
	fail := func(err error) (int, error) {
		release()
		if conn != nil {
			_ = conn.Close()
		}
		if report {
			return 0, e.reportFailure(r, target, err)
		}
		e.upstreamError(w, r, target, err)
		return 0, nil
	}
	if err != nil {
		conn = nil
		return fail(err)
	}
	_ = conn.SetDeadline(time.Now().Add(e.cfg.UpstreamHeaderTimeout))
	if err := out.Write(conn); err != nil {
		return fail(err)
	}
	lim := &limitedReader{r: conn, n: int64(e.cfg.MaxHeaderBytes) + 4<<10}
	br := bufio.NewReaderSize(lim, 4<<10)
	resp, err := http.ReadResponse(br, out)
	if err != nil {
		return fail(err)
	}
	_ = conn.SetDeadline(time.Time{})
	lim.n = math.MaxInt64 // the headers are in
	rh := http.Header{}
	for k, vs := range resp.Header {
		if !HopHeader(k, resp.Header) {
			rh[k] = vs
		}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// No switch: an ordinary answer, relayed whole.
		defer release()
		defer conn.Close()
		for k, vs := range rh {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
		return resp.StatusCode, nil
	}
	rh["Connection"] = []string{"Upgrade"}
	rh["Upgrade"] = resp.Header.Values("Upgrade")
	upConn := &bufferedConn{Reader: br, Conn: conn}
	err = up.Upgrade(rh, func(client io.ReadWriteCloser) {
		defer release()
		if c, ok := client.(interface{ SetDeadline(time.Time) error }); ok {
			_ = c.SetDeadline(time.Time{})
		}
		Pipe(client, upConn)
	})
	if err != nil {
		release()
		_ = conn.Close()
		return http.StatusSwitchingProtocols, fmt.Errorf("%w: %v", ErrAborted, err)
	}
	return http.StatusSwitchingProtocols, nil
}

func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), "443")
}
