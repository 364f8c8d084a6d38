package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// DataPlane serves the API's http-service routes (/svc/ and /v1/health) on
// a fasthttp server, for a -proxy listener of its own. It is the same
// handler as the API's — routing, ACLs, body bounds, the proxy itself —
// on a leaner HTTP/1.1 server: net/http's makes about three reads and
// several goroutine wake-ups per keep-alive request (its background read
// watches for the client going away), fasthttp's one read, which is most
// of a proxy's cost on a small machine (BENCHMARKS.md). A plain /svc/
// call is not even converted to net/http's types: the API's rules read
// fasthttp's request in place (native.go).
//
// What the data plane gives up, and why it is a listener of its own rather
// than the API's: a client that goes away is noticed when its response is
// written, not while the upstream works; an upload of declared length is
// sent whole before the upstream's answer is read; and the streaming API
// calls (watch, streaming runs) need net/http's flushes, so only /svc/ and
// /v1/health are served here.
type DataPlane struct {
	srv    *fasthttp.Server
	h      http.Handler
	api    *API // h, when it is the API: /svc/ calls are then served natively (native.go)
	log    zerolog.Logger
	ctx    context.Context // every request's context: canceled at Shutdown
	cancel context.CancelFunc
	mu     sync.Mutex
	ln     net.Listener
	// maxBody bounds request bodies: a longer declared length is refused
	// before anything is read, a chunked body fails its read past it.
	maxBody int64
	router  Router // routes by Host and path prefix (routes.go); nil: none
}

// NewDataPlane serves h's /svc/ and /v1/health routes; maxBody bounds
// request bodies (413 beyond).
func NewDataPlane(h http.Handler, maxBody int64, log zerolog.Logger) *DataPlane {
	ctx, cancel := context.WithCancel(context.Background())
	d := &DataPlane{h: h, log: log, ctx: ctx, cancel: cancel, maxBody: maxBody}
	d.api, _ = h.(*API)
	d.srv = &fasthttp.Server{
		Handler:               d.serve,
		ErrorHandler:          d.badRequest,
		Name:                  "",
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		ReadBufferSize:        maxHeaderBytes,
		MaxRequestBodySize:    int(maxBody),
		// Bodies stream to the handler (8 KiB read ahead), as on the API
		// port: a proxy must not hold every upload in memory, least of all
		// before the token is checked. Multipart bodies are passed on as
		// they are, not parsed.
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		ReadTimeout:                  60 * time.Second,
		IdleTimeout:                  120 * time.Second,
		CloseOnShutdown:              true,
		Logger:                       fastLogger{log},
	}
	return d
}

// maxHeaderBytes bounds request headers, as Server does for the API.
const maxHeaderBytes = 64 << 10

// Serve accepts connections on ln until Shutdown, and then returns nil.
func (d *DataPlane) Serve(ln net.Listener) error {
	return d.serveOn(ln, func() error { return d.srv.Serve(ln) })
}

// ServeTLS is Serve over TLS with the given PEM files.
func (d *DataPlane) ServeTLS(ln net.Listener, certFile, keyFile string) error {
	return d.serveOn(ln, func() error { return d.srv.ServeTLS(ln, certFile, keyFile) })
}

func (d *DataPlane) serveOn(ln net.Listener, serve func() error) error {
	d.mu.Lock()
	if d.ctx.Err() != nil {
		d.mu.Unlock()
		_ = ln.Close()
		return nil
	}
	d.ln = ln
	d.mu.Unlock()
	err := serve()
	if d.ctx.Err() != nil {
		return nil // the listener was closed by Shutdown
	}
	return err
}

// Shutdown stops accepting, cancels the requests in flight and waits for
// them until ctx ends. A Serve that has not started yet will not.
func (d *DataPlane) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.cancel()
	ln := d.ln
	d.mu.Unlock()
	if ln != nil {
		// fasthttp closes only a listener its Serve has already taken.
		_ = ln.Close()
	}
	err := d.srv.ShutdownWithContext(ctx)
	if errors.Is(err, net.ErrClosed) {
		err = nil // the listener we closed above
	}
	return err
}

func (d *DataPlane) serve(ctx *fasthttp.RequestCtx) {
	w := &fastWriter{ctx: ctx}
	if n := ctx.Request.Header.ContentLength(); int64(n) > d.maxBody {
		ctx.SetConnectionClose() // the body is not read
		WriteError(w, Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", d.maxBody))
		return
	}
	if v, name, rest, ok := d.native(ctx); ok {
		var body *streamBody // only if the exchange needs the request converted
		defer d.finish(ctx, &body, v.path)
		d.api.serveNative(d.ctx, w, v, name, rest, func() (*http.Request, error) {
			r, b, err := d.request(ctx, w)
			body = b
			return r, err
		})
		return
	}
	r, body, err := d.request(ctx, w)
	if err != nil {
		WriteError(w, err)
		return
	}
	if p := r.URL.Path; !strings.HasPrefix(p, "/svc/") && p != "/v1/health" {
		ok, err := d.routed(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		if !ok {
			WriteError(w, Errorf(http.StatusNotFound, "not_found", "%s is not served on the data-plane listener: it serves /svc/ and the routes of GET /v1/routes only; use the API address (-http)", p))
			return
		}
	}
	defer d.finish(ctx, &body, r.URL.Path)
	d.h.ServeHTTP(w, r)
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
}

// finish ends a request's handling: it stops the readers of its body
// (*body, when one was given to a handler), and turns a panic (an abort,
// ErrAbortHandler, or a bug) into a cut connection. Deferred by serve.
func (d *DataPlane) finish(ctx *fasthttp.RequestCtx, body **streamBody, path string) {
	if b := *body; b != nil && !b.end(ctx.Conn()) {
		ctx.SetConnectionClose() // a read was cut short: where the body ends is unknown
	}
	if v := recover(); v != nil {
		if v != http.ErrAbortHandler {
			d.log.Error().Interface("panic", v).Str("path", path).Msg("data-plane handler panic")
		}
		// The response may have started: cut the connection so the
		// client cannot take a truncated answer for a whole one.
		ctx.Response.Reset()
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { _ = c.Close() })
	}
}

// request is ctx's request as net/http would have parsed it; its body
// reads from the connection, bounded by maxBody, until the handler returns
// (streamBody.end).
func (d *DataPlane) request(ctx *fasthttp.RequestCtx, w http.ResponseWriter) (*http.Request, *streamBody, error) {
	uri := string(ctx.RequestURI())
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, nil, Errorf(http.StatusBadRequest, "bad_request", "request target %q: %v", uri, err)
	}
	h := make(http.Header, 8)
	for k, v := range ctx.Request.Header.AllInOrder() {
		key := http.CanonicalHeaderKey(string(k))
		if key == "Host" {
			continue
		}
		h[key] = append(h[key], string(v))
	}
	length := int64(ctx.Request.Header.ContentLength())
	if length < -1 {
		length = 0 // -2: no length and not chunked, which for a request means no body
	}
	r := &http.Request{
		Method:        string(ctx.Method()),
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          http.NoBody,
		ContentLength: length,
		Host:          string(ctx.Host()),
		RemoteAddr:    ctx.RemoteAddr().String(),
		RequestURI:    uri,
		TLS:           ctx.TLSConnectionState(),
	}
	if !ctx.Request.Header.IsHTTP11() {
		r.Proto, r.ProtoMinor = "HTTP/1.0", 0
	}
	var body *streamBody
	if s := ctx.RequestBodyStream(); length != 0 && s != nil {
		body = &streamBody{r: s}
		r.Body = http.MaxBytesReader(w, body, d.maxBody)
	}
	return r.WithContext(d.ctx), body, nil
}

// streamBody is a request body read from the connection. The server owns
// the connection again once the handler returns, so a reader the handler
// left behind (an upload pump, a body writer) must be stopped then: end
// cuts a read in progress and fails every later one.
type streamBody struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

var errBodyEnded = errors.New("request body read after its handler returned")

func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errBodyEnded
	}
	return b.r.Read(p)
}

// Close does nothing: the body's life ends with its handler (end).
func (b *streamBody) Close() error { return nil }

// end stops every reader; it reports false if it had to cut a read in
// progress (through conn's read deadline), leaving the connection unusable.
func (b *streamBody) end(conn net.Conn) bool {
	clean := b.mu.TryLock()
	if !clean {
		_ = conn.SetReadDeadline(time.Unix(1, 0))
		b.mu.Lock()
	}
	b.closed = true
	b.mu.Unlock()
	return clean
}

// badRequest answers a request the server could not read, in the API's
// error shape.
func (d *DataPlane) badRequest(ctx *fasthttp.RequestCtx, err error) {
	w := &fastWriter{ctx: ctx, h: http.Header{}}
	var e *Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", d.maxBody)
	case isTimeout(err):
		e = Errorf(http.StatusRequestTimeout, "timeout", "reading the request: %v", err)
	case errors.As(err, new(*fasthttp.ErrSmallBuffer)):
		e = Errorf(http.StatusRequestHeaderFieldsTooLarge, "too_large", "request headers larger than %d bytes", maxHeaderBytes)
	default:
		e = Errorf(http.StatusBadRequest, "bad_request", "malformed request: %v", err)
	}
	ctx.SetConnectionClose()
	WriteError(w, e)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// fastWriter is an http.ResponseWriter on a fasthttp response. Written
// bytes are buffered and sent when the handler returns; a proxied body is
// handed over whole with SetBodyStream (runner.BodyStreamer) and streams.
type fastWriter struct {
	ctx   *fasthttp.RequestCtx
	h     http.Header // made on first use: a cache hit needs none
	wrote bool
}

func (w *fastWriter) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}

func (w *fastWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		return // informational answers are the server's business
	}
	w.wrote = true
	w.ctx.SetStatusCode(code)
	rh := &w.ctx.Response.Header
	for k, vs := range w.h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection":
			continue // the server frames the response itself
		}
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
}

// WriteStored implements cache.StoredWriter: a cache hit's header fields
// go into the response as the entry holds them (canonical names, so
// fasthttp need not normalize them), and its body is referred to, not
// copied: the server copies it once, onto the connection.
func (w *fastWriter) WriteStored(status int, fields [][2][]byte, age int, xcache string, body []byte) {
	if w.wrote {
		return
	}
	w.WriteHeader(status) // and what the handler set before (w.h)
	rh := &w.ctx.Response.Header
	rh.DisableNormalizing() // until the response's Reset: every name below is canonical
	for _, f := range fields {
		rh.AddBytesKV(f[0], f[1])
	}
	var num [20]byte
	rh.AddBytesKV(ageHeader, strconv.AppendInt(num[:0], int64(age), 10))
	rh.Add("X-Cache", xcache)
	if body != nil {
		w.ctx.Response.SetBodyRaw(body)
	}
}

var ageHeader = []byte("Age")

func (w *fastWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	w.ctx.Response.AppendBody(p)
	return len(p), nil
}

// SetReadDeadline sets the connection's read deadline: the proxy uses it
// (http.ResponseController) to stop an upload it no longer needs.
func (w *fastWriter) SetReadDeadline(t time.Time) error { return w.ctx.Conn().SetReadDeadline(t) }

// Flush does nothing: buffered writes go out when the handler returns.
// Streaming responses come through SetBodyStream.
func (w *fastWriter) Flush() {}

func (w *fastWriter) TakeRequestCtx() *fasthttp.RequestCtx {
	w.wrote = true
	return w.ctx
}

// Upgrade implements runner.Upgrader: the server sends the 101 once the
// handler returned, then hands the connection (with what it read ahead)
// to fn, and closes it when fn returns.
func (w *fastWriter) Upgrade(h http.Header, fn func(io.ReadWriteCloser)) error {
	w.wrote = true
	w.ctx.SetStatusCode(http.StatusSwitchingProtocols)
	rh := &w.ctx.Response.Header
	for k, vs := range h {
		for _, v := range vs {
			rh.Add(k, v)
		}
	}
	w.ctx.Hijack(func(c net.Conn) {
		_ = c.SetDeadline(time.Time{})
		fn(c)
	})
	return nil
}

// UntakeRequestCtx implements runner.Untaker: the proxy wrote nothing.
func (w *fastWriter) UntakeRequestCtx() { w.wrote = false }

// SetBodyStream implements runner.BodyStreamer.
func (w *fastWriter) SetBodyStream(body io.ReadCloser, size int64) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if size < 0 || size > int64(^uint(0)>>1) {
		size = -1
		// The header goes out before the first piece of a stream.
		w.ctx.Response.ImmediateHeaderFlush = true
	}
	w.ctx.Response.SetBodyStream(body, int(size))
}

// fastLogger sends fasthttp's own messages (connection errors) to debug.
type fastLogger struct{ log zerolog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	l.log.Debug().Msg(fmt.Sprintf(format, args...))
}

// ProxyResult implements ProxyResult for the central log: the status and
// the body bytes of the response as it will be sent. A body in memory is
// its length (the server sets Content-Length from it only when writing:
// the header says 0 until then); a stream, its declared length.
func (w *fastWriter) ProxyResult() (int, int64) {
	resp := &w.ctx.Response
	if !resp.IsBodyStream() {
		return resp.StatusCode(), int64(len(resp.Body()))
	}
	return resp.StatusCode(), max(int64(resp.Header.ContentLength()), 0)
}
