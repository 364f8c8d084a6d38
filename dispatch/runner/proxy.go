package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
)

// ErrHeaderTooLarge: the request headers exceed Config.MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("runner: request headers too large")

// ErrAborted: the response had started when the upstream failed; the
// caller must abort its connection so the client sees the truncation.
var ErrAborted = errors.New("runner: upstream response aborted")

// ServeProxy proxies r to upstream (an http(s) base URL) with path (and r's
// raw query) appended: method, headers, body and status are preserved,
// hop-by-hop headers are dropped, X-Forwarded-For gets r.RemoteAddr's IP
// appended, and bodies stream both ways (the response is flushed as it
// arrives). Upstream connections come from a keep-alive pool.
//
// It returns an error, having written nothing, when it does not proxy at
// all: ErrBusy (at Config.MaxConcurrentHTTP), ErrHeaderTooLarge, ErrInvalid
// (bad upstream or path), ErrClosed. Upstream failures before the response
// are answered with 502 (504 on a header timeout) and a JSON error body;
// one after it started returns ErrAborted.
func (e *Executor) ServeProxy(w http.ResponseWriter, r *http.Request, upstream, path string) error {
	_, err := e.serveProxy(w, r, upstream, path, false)
	return err
}

// serveProxy is ServeProxy that also returns the upstream's status (0 when
// there was none).
func (e *Executor) serveProxy(w http.ResponseWriter, r *http.Request, upstream, path string, report bool) (int, error) {
	if e.closed.Load() {
		return 0, ErrClosed
	}
	target, err := e.parseUpstream(upstream)
	if err != nil {
		return 0, err
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	// Checked here too, not only at the gateway: a request over the hop
	// must not climb out of the base either.
	if _, err := JoinPath(target.Path, path); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if headerSize(r.Header) > e.cfg.MaxHeaderBytes {
		return 0, ErrHeaderTooLarge
	}
	select {
	case e.httpSem <- struct{}{}:
	default:
		return 0, ErrBusy
	}
	release := func() { <-e.httpSem }
	if IsUpgrade(r.Header) {
		return e.proxyUpgrade(w, r, target, path, release, report) // WebSocket and the like (upgrade.go)
	}
	if fr, ok := Find[FastRequest](w); ok && target.Scheme == "http" && r.ContentLength >= 0 {
		// A chunked upload goes through proxyPlain, which bounds it as it
		// reads (r.Body); a declared length was checked by the server.
		code, err := e.proxyFast(fr, r, target, path, release, report)
		if _, reported := err.(*UpstreamError); !reported {
			recordStatus(w, fr.TakeRequestCtx().Response.StatusCode())
		}
		return code, err
	}
	if target.Scheme == "http" {
		return e.proxyPlain(w, r, target, path, release, report)
	}
	defer release()
	return e.proxyTransport(w, r, target, path, report)
}

// BodyStreamer is a ResponseWriter that sends a response body from a
// reader itself, after the handler returned: the data-plane server
// (fasthttp) does, and so saves the copy through Write and the handler's
// wait for the body. After WriteHeader, SetBodyStream hands over body,
// which it closes when done or abandoned; size is the body's length, or
// -1 for a body to stream as it arrives (chunked, each piece flushed).
type BodyStreamer interface {
	http.ResponseWriter
	SetBodyStream(body io.ReadCloser, size int64)
}

// parseUpstream parses and checks a service's upstream, caching the last
// few: the proxy sees the same handful on every request.
func (e *Executor) parseUpstream(upstream string) (*url.URL, error) {
	return e.upstreams.get(upstream, func() (*url.URL, error) {
		target, err := url.Parse(upstream)
		if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
			return nil, fmt.Errorf("%w: upstream %q is not an http(s) URL", ErrInvalid, upstream)
		}
		return target, nil
	})
}

const maxCachedUpstreams = 1024

// proxyPlain proxies to an http:// upstream over the executor's own
// keep-alive pool (upstream.go).
// release frees the executor's concurrency slot once the exchange is over.
func (e *Executor) proxyPlain(w http.ResponseWriter, r *http.Request, target *url.URL, path string, release func(), report bool) (int, error) {
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: "http", Host: target.Host, Path: joinPath(target.Path, path), RawQuery: joinQuery(target.RawQuery, r.URL.RawQuery)},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     forwardHeader(r),
		Host:       target.Host,
	}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		out.Body, out.ContentLength = r.Body, r.ContentLength
		// The upload is copied while the response is read: an upstream
		// that answers (or fails) before taking all of it must reach the
		// client at once, not after a slow client finished uploading.
		_ = http.NewResponseController(w).EnableFullDuplex()
	}
	x, err := e.pool.roundTrip(r.Context(), out)
	if err != nil {
		release()
		if report {
			return 0, e.reportFailure(r, target, err)
		}
		e.upstreamError(w, r, target, err)
		return 0, nil
	}
	resp := x.resp
	h := w.Header()
	for k, vs := range resp.Header {
		if !HopHeader(k, resp.Header) {
			h[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	if bs, ok := Find[BodyStreamer](w); ok && x.sent() {
		// Handed over only once the request is sent whole: the server
		// reads its connection again after the handler returns.
		size := resp.ContentLength
		if Streamed(resp.Header, size) {
			size = -1
		}
		bs.SetBodyStream(&exchangeBody{x: x, release: release, done: resp.Body == http.NoBody}, size)
		return resp.StatusCode, nil
	}
	defer release()
	bp := copyBufs.Get().(*[]byte)
	readErr, writeErr := copyBody(w, resp.Body, *bp, Streamed(resp.Header, resp.ContentLength))
	copyBufs.Put(bp)
	x.finish(readErr == nil && writeErr == nil)
	_ = resp.Body.Close()
	if readErr != nil && r.Context().Err() == nil {
		// The upstream broke mid-body: the client must not take a
		// truncated body for a whole one.
		return resp.StatusCode, fmt.Errorf("%w: upstream %s: %v", ErrAborted, target.Host, readErr)
	}
	return resp.StatusCode, nil
}

// exchangeBody is an upstream response body handed to a BodyStreamer: the
// connection goes back to the pool only if the body was read to its end.
type exchangeBody struct {
	x       *exchange
	release func()
	done    bool // read to EOF
	closed  bool
}

func (b *exchangeBody) Read(p []byte) (int, error) {
	n, err := b.x.resp.Body.Read(p)
	if err == io.EOF {
		b.done = true
	}
	return n, err
}

func (b *exchangeBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.x.finish(b.done)
	err := b.x.resp.Body.Close()
	b.release()
	return err
}

// Streamed reports whether a response is streamed — of unknown length
// (contentLength -1), or server-sent events — and so must be flushed to
// the client as it arrives, like httputil.ReverseProxy does. A response of
// known length goes out in as few writes as it arrives in.
func Streamed(h http.Header, contentLength int64) bool {
	return contentLength == -1 || eventStream(h.Get("Content-Type"))
}

// eventStream reports whether a Content-Type is server-sent events.
func eventStream(contentType string) bool {
	return strings.HasPrefix(contentType, "text/event-stream")
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody copies src to w, flushing after every write when stream is set.
func copyBody(w http.ResponseWriter, src io.Reader, buf []byte, stream bool) (readErr, writeErr error) {
	var rc *http.ResponseController
	if stream {
		rc = http.NewResponseController(w)
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil, werr
			}
			if rc != nil {
				_ = rc.Flush()
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// forwardHeader is r's header for the upstream: hop-by-hop headers dropped,
// this hop appended to X-Forwarded-For, X-Forwarded-Host and -Proto set.
func forwardHeader(r *http.Request) http.Header {
	h := make(http.Header, len(r.Header)+3)
	for k, vs := range r.Header {
		if !HopHeader(k, r.Header) {
			h[k] = vs
		}
	}
	delete(h, TokenHeader) // defensive: the gateway strips it already
	xff, host, proto := forwarded(r)
	if xff != "" {
		h["X-Forwarded-For"] = []string{xff}
	} else {
		delete(h, "X-Forwarded-For")
	}
	h["X-Forwarded-Host"] = []string{host}
	h["X-Forwarded-Proto"] = []string{proto}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // not Go's default
	}
	return h
}

// forwarded returns the X-Forwarded-* values for r's upstream request:
// the For chain with r's client appended ("" when r.RemoteAddr has no
// IP: the chain is then dropped), Host and Proto.
func forwarded(r *http.Request) (xff, host, proto string) {
	return forwardedFor(r.RemoteAddr, r.Header["X-Forwarded-For"]), r.Host, forwardedProto(r.TLS != nil)
}

// forwardedFor is the X-Forwarded-For chain prior with the client at
// remote appended, or "" when remote has no IP (the chain is dropped).
func forwardedFor(remote string, prior []string) string {
	ip, _, err := net.SplitHostPort(remote)
	if err != nil {
		return ""
	}
	if len(prior) > 0 {
		return strings.Join(prior, ", ") + ", " + ip
	}
	return ip
}

func forwardedProto(tls bool) string {
	if tls {
		return "https"
	}
	return "http"
}

// TokenHeader is meshgw's own credential header: no upstream ever gets it.
const TokenHeader = "X-Meshgw-Token"

// HopHeader reports whether k is hop-by-hop (RFC 9110 7.6.1), by name or
// listed in h's Connection header: a proxy does not forward it.
func HopHeader(k string, h http.Header) bool {
	switch k = http.CanonicalHeaderKey(k); k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// ErrBadPath: a request path would leave its upstream's base path.
var ErrBadPath = errors.New("runner: request path leaves the upstream's base path")

// JoinPath appends p, a request path already decoded once, to an
// upstream's base path, refusing (ErrBadPath) anything that could reach
// outside base there: a "." or ".." segment, a backslash or NUL, and a
// residual encoding of '.', '/', '\' or '%' (a double encoding, which a
// server decoding again would turn into a climb). Empty segments ("//")
// are kept: they are the upstream's business and cannot climb.
func JoinPath(base, p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if strings.ContainsAny(p, "\\\x00") {
		return "", fmt.Errorf("%w: %q holds a backslash or NUL", ErrBadPath, p)
	}
	for rest := p; ; {
		i := strings.IndexByte(rest, '%')
		if i < 0 {
			break
		}
		if i+2 < len(rest) {
			switch strings.ToLower(rest[i+1 : i+3]) {
			case "2e", "2f", "5c", "25", "00":
				return "", fmt.Errorf("%w: %q holds an encoded '.', '/', '\\', '%%' or NUL", ErrBadPath, p)
			}
		}
		rest = rest[i+1:]
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("%w: %q holds a %q segment", ErrBadPath, p, seg)
		}
	}
	return joinPath(base, p), nil
}

func joinPath(base, p string) string {
	switch {
	case base == "" || base == "/":
		return p
	case strings.HasSuffix(base, "/"):
		return base + strings.TrimPrefix(p, "/")
	}
	return base + p
}

func joinQuery(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "&" + b
}

// upstreamError answers an upstream failure: 504 on a timeout, else 502.
func (e *Executor) upstreamError(w http.ResponseWriter, r *http.Request, target *url.URL, err error) {
	status, body := e.upstreamFailure(r.Context(), target, err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// upstreamFailure is the status and JSON body that answer an upstream
// failure: 504 on a timeout, else 502.
// ctx is the client request's.
func (e *Executor) upstreamFailure(ctx context.Context, target *url.URL, err error) (int, []byte) {
	status, code := http.StatusBadGateway, "upstream_unreachable"
	if isTimeout(err) && ctx.Err() == nil {
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
	}
	if ctx.Err() != nil {
		// The caller is gone; nobody reads this answer.
		e.log.Debug().Err(err).Str("upstream", target.Host).Msg("proxy canceled")
	} else {
		e.log.Debug().Err(err).Str("upstream", target.Host).Msg("upstream error")
	}
	body, _ := json.Marshal(map[string]string{
		"error": fmt.Sprintf("upstream %s: %v", target.Host, err),
		"code":  code,
	})
	return status, append(body, '\n')
}

// proxyTransport proxies to an https:// upstream through http.Transport
// (TLS, HTTP/2).
func (e *Executor) proxyTransport(w http.ResponseWriter, r *http.Request, target *url.URL, path string, report bool) (int, error) {
	var failed error
	status := 0
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Path = path
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.SetURL(target)
			// Keep the incoming chain and append this hop's client.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.Out.Header.Del(TokenHeader)
			pr.SetXForwarded()
			// SetURL rewrites Host to the upstream's; that is what a
			// backend behind a gateway expects.
		},
		Transport: e.client,
		ErrorLog:  e.errorLog,
		ModifyResponse: func(resp *http.Response) error {
			status = resp.StatusCode
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if report {
				failed = e.reportFailure(r, target, err)
				return
			}
			e.upstreamError(w, r, target, err)
		},
	}
	rp.ServeHTTP(w, r)
	return status, failed
}

func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
