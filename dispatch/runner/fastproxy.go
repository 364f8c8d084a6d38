package runner

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// FastRequest is a ResponseWriter of a fasthttp server (the data-plane
// listener) that hands its request over, to be proxied in place: the
// request is rewritten and sent upstream as it is, and the upstream's
// response fills the server's, its body streamed by the server. After
// TakeRequestCtx the writer writes nothing itself.
type FastRequest interface {
	TakeRequestCtx() *fasthttp.RequestCtx
}

// proxyFast is proxyPlain for a FastRequest: the same rewrite rules
// (forwarded, HopHeader, joinPath, joinQuery) and the same errors, with
// fasthttp's client instead of net/http's parser and writer, and no copy of
// headers or body into net/http's types (BENCHMARKS.md, session 4). The
// client has no context: a request in flight ends with its deadlines.
func (e *Executor) proxyFast(fr FastRequest, r *http.Request, target *url.URL, path string, release func(), report bool) (int, error) {
	ctx := fr.TakeRequestCtx()
	req := &ctx.Request
	for k := range r.Header {
		if HopHeader(k, r.Header) {
			req.Header.Del(k)
		}
	}
	// The server's request still holds what the gateway took out of r's
	// header (the meshgw credential it consumed): r's header decides.
	if _, ok := r.Header["Authorization"]; !ok {
		req.Header.Del("Authorization")
	}
	xff, host, proto := forwarded(r)
	return e.exchangeFast(ctx, fastCall{fr: fr, r: r, cctx: r.Context(), xff: xff, host: host, proto: proto,
		query: r.URL.RawQuery, length: r.ContentLength}, target, path, release, report)
}

// fastCall is what exchangeFast needs of the request besides the server's
// own: the X-Forwarded-* values, the client's query and declared length,
// and, to report a failure (report), the request and its writer.
type fastCall struct {
	fr               FastRequest   // nil in place (ServeInPlace): no report
	r                *http.Request // nil in place
	cctx             context.Context
	xff, host, proto string
	query            string
	length           int64
}

// exchangeFast sends the server's request ctx (hop-by-hop headers gone)
// to target with path, and makes the upstream's answer ctx's response.
func (e *Executor) exchangeFast(ctx *fasthttp.RequestCtx, c fastCall, target *url.URL, path string, release func(), report bool) (int, error) {
	req := &ctx.Request
	req.Header.Del(TokenHeader)
	req.Header.Del("Expect")          // the server has taken the whole body already
	req.Header.ResetConnectionClose() // the client's wish, not the upstream's
	if c.xff != "" {
		req.Header.Set("X-Forwarded-For", c.xff)
	} else {
		req.Header.Del("X-Forwarded-For")
	}
	req.Header.Set("X-Forwarded-Host", c.host)
	req.Header.Set("X-Forwarded-Proto", c.proto)
	uri := (&url.URL{Path: joinPath(target.Path, path), RawQuery: joinQuery(target.RawQuery, c.query)}).RequestURI()
	req.SetRequestURI(uri)
	req.SetHost(target.Host)
	req.UseHostHeader = false

	up := fasthttp.AcquireResponse()
	err := e.hostClient(target.Host).Do(req, up)
	if err == nil && up.StatusCode() == http.StatusSwitchingProtocols {
		closeUpstream(up)
		err = errors.New("upstream switched protocols: upgrades are not proxied")
	}
	resp := &ctx.Response
	if err != nil {
		fasthttp.ReleaseResponse(up)
		release()
		if report && c.r != nil {
			ue := e.reportFailure(c.r, target, err).(*UpstreamError)
			ue.BodyTaken = ue.Sent && c.length != 0
			if u, ok := c.fr.(Untaker); ok {
				u.UntakeRequestCtx()
			}
			return 0, ue
		}
		status, body := e.upstreamFailure(c.cctx, target, err)
		resp.SetStatusCode(status)
		resp.Header.SetContentType("application/json")
		resp.SetBody(body)
		return 0, nil
	}
	code := up.StatusCode()
	liftHeaderDeadline(up)
	up.Header.CopyTo(&resp.Header)
	resp.Header.ResetConnectionClose() // the upstream's wish, not the client's
	var listed http.Header             // the upstream's Connection header, for HopHeader
	if c := up.Header.Peek("Connection"); len(c) > 0 {
		listed = http.Header{"Connection": {string(c)}}
	}
	var drop []string
	for k := range resp.Header.All() {
		if key := string(k); key != "Content-Length" && key != "Content-Type" && HopHeader(key, listed) {
			drop = append(drop, key)
		}
	}
	for _, k := range drop {
		resp.Header.Del(k)
	}
	size := up.Header.ContentLength()
	if size < 0 || eventStream(string(up.Header.ContentType())) {
		// Of unknown length or an event stream: chunked, each piece
		// flushed as it arrives, header first (Streamed).
		size = -1
		resp.ImmediateHeaderFlush = true
	}
	body := up.BodyStream()
	if body == nil {
		// No body (HEAD, 204, 304): the header says what it would be.
		fasthttp.ReleaseResponse(up)
		release()
		resp.SkipBody = true
		return code, nil
	}
	fb := &fastBody{up: up, release: release}
	if a, ok := up.LocalAddr().(*connAddr); ok {
		fb.conn = a.c.Conn
	}
	resp.SetBodyStream(fb, size)
	return code, nil
}

// fastBody is an upstream response's body handed to the server, which
// closes it when sent or abandoned: fasthttp's client pools the upstream
// connection again only if the body was read to its end.
type fastBody struct {
	up      *fasthttp.Response
	release func()
	conn    net.Conn // the upstream connection, for Abort

	mu       sync.Mutex // orders Abort against the end of the body
	finished bool       // read to its end, or closed: Abort does nothing
}

// Aborter is a response body that another goroutine may cut short while
// it is read: the caller's context ended, so the exchange must too.
type Aborter interface {
	Abort()
}

// Abort closes the upstream connection, so a Read blocked on it returns
// an error, unless the body was read to its end or closed already (the
// connection may be in the pool, serving another request, by then).
// Safe to call concurrently with Read and Close.
func (b *fastBody) Abort() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.finished && b.conn != nil {
		_ = b.conn.Close()
	}
}

func (b *fastBody) Read(p []byte) (int, error) {
	if b.up == nil {
		return 0, io.ErrClosedPipe
	}
	n, err := b.up.BodyStream().Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.finished = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *fastBody) Close() error {
	b.mu.Lock()
	b.finished = true
	b.mu.Unlock()
	if b.up == nil {
		return nil
	}
	err := b.up.CloseBodyStream()
	fasthttp.ReleaseResponse(b.up)
	b.up = nil
	b.release()
	return err
}

// hostClient is the fasthttp client of one upstream host:port.
func (e *Executor) hostClient(host string) *fasthttp.HostClient {
	c, _ := e.hostClients.get(host, func() (*fasthttp.HostClient, error) {
		return e.newHostClient(host), nil
	})
	return c
}

func (e *Executor) newHostClient(host string) *fasthttp.HostClient {
	dialer := &net.Dialer{Timeout: e.cfg.UpstreamDialTimeout, KeepAlive: 30 * time.Second}
	return &fasthttp.HostClient{
		Addr: host,
		Dial: func(addr string) (net.Conn, error) {
			c, err := dialer.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return newUpstreamConn(c), nil
		},
		MaxConns: e.cfg.MaxConcurrentHTTP,
		// Read and write deadlines bound the request and the response
		// headers; the body's is lifted once they are in
		// (liftHeaderDeadline), as UpstreamHeaderTimeout promises.
		ReadTimeout:              e.cfg.UpstreamHeaderTimeout,
		WriteTimeout:             e.cfg.UpstreamHeaderTimeout,
		MaxIdleConnDuration:      upstreamIdleTimeout,
		ReadBufferSize:           e.cfg.MaxHeaderBytes, // bounds the response headers
		StreamResponseBody:       true,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true, // the URI is sent as built
		// One resend, only of a body-less request that met a connection
		// the upstream had closed while it sat idle, as the plain pool
		// does, or one closed here after an upgrade (closeUpstream).
		MaxIdemponentCallAttempts: 2,
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			n := req.Header.ContentLength() // -2: neither a length nor chunked, so no body
			return false, attempts < 2 && (n == 0 || n == -2) && (staleConn(err) || errors.Is(err, net.ErrClosed))
		},
	}
}

// upstreamConn is a data-plane upstream connection that the exchange can
// reach from the response: its LocalAddr, which fasthttp records in every
// response (Response.LocalAddr), points back to it.
type upstreamConn struct {
	net.Conn
	addr connAddr
}

type connAddr struct {
	net.Addr
	c *upstreamConn
}

func newUpstreamConn(c net.Conn) *upstreamConn {
	u := &upstreamConn{Conn: c}
	u.addr = connAddr{Addr: c.LocalAddr(), c: u}
	return u
}

func (u *upstreamConn) LocalAddr() net.Addr { return &u.addr }

// liftHeaderDeadline clears the read deadline fasthttp set for the response
// (ReadTimeout) once its headers are in, so a long or streamed body is not
// cut at UpstreamHeaderTimeout; fasthttp sets a fresh one on the next use.
func liftHeaderDeadline(resp *fasthttp.Response) {
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		_ = a.c.Conn.SetReadDeadline(time.Time{})
	}
}

// closeUpstream closes the connection a response came on. fasthttp may
// have pooled it already; its next use then fails before sending anything,
// with net.ErrClosed, which hostClient's RetryIfErr resends.
func closeUpstream(resp *fasthttp.Response) {
	resp.SetConnectionClose()
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		_ = a.c.Conn.Close()
	}
}
