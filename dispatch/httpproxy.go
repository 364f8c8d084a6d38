package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
)

// Wire protocol of MethodHTTP. The caller sends a request header frame
// (JSON httpReqWire), then the body as raw frames, then closes its send
// side. The runner answers with a response header frame (JSON
// httpRespWire), the body as raw frames, and ends the stream. A busy runner
// fails the call with code "busy" before answering.
type httpReqWire struct {
	Method        string      `json:"method"`
	Path          string      `json:"path"`
	Query         string      `json:"query,omitempty"`
	Header        http.Header `json:"header,omitempty"`
	Host          string      `json:"host,omitempty"`
	RemoteAddr    string      `json:"remote_addr,omitempty"`
	ContentLength int64       `json:"content_length"`
	Upstream      string      `json:"upstream"`
	// Report: answer an upstream failure before the response with code
	// "upstream" (runner.UpstreamError), so the caller may try another.
	Report bool `json:"report,omitempty"`
	status int  // out: the upstream's status of the last attempt (0: none)
}

type httpRespWire struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
}

const proxyChunk = 32 << 10

// ProxyHTTP proxies r to the http service svc through a live runner of
// cluster: path (e.g. "/x/y") and r's query are appended to the service's
// upstream. The response streams back into w as it arrives.
//
// Errors, with nothing written to w: ErrWrongType, ErrInvalidInput (headers
// over Config.MaxHTTPHeaderBytes), ErrNoRunner, ErrBusy, or a runner failure
// matching transport.ErrUnreachable (502). A runner lost before any response
// byte is retried on another runner when the request can be resent: no
// body, or an idempotent method whose consumed body part (≤ 64 KiB) was
// kept, or nothing of the body consumed yet. An error matching ErrProxyAborted means
// the response had started: the caller should abort the connection.
func (d *Dispatcher) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster string, svc Service, path string) error {
	err := d.proxyHTTP(w, r, cluster, svc, path)
	if err != nil {
		d.stats.proxyFailed.Add(1)
	} else {
		d.stats.proxied.Add(1)
	}
	return err
}

func (d *Dispatcher) proxyHTTP(w http.ResponseWriter, r *http.Request, cluster string, svc Service, path string) error {
	if svc.Type != TypeHTTP {
		return fmt.Errorf("%w: service %q is %q, not http", ErrWrongType, svc.Name, svc.Type)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	hdr := httpReqWire{
		Method: r.Method, Path: path, Query: r.URL.RawQuery, Header: r.Header,
		Host: r.Host, RemoteAddr: r.RemoteAddr, ContentLength: r.ContentLength, Upstream: svc.Upstream,
	}
	if r.Body == nil || r.Body == http.NoBody {
		hdr.ContentLength = 0
	}
	// The header frame is built once, when a remote runner first needs it.
	var hb []byte
	hbFor := ""
	header := func() ([]byte, error) {
		if hb == nil || hbFor != hdr.Upstream {
			hbFor = hdr.Upstream
			b, err := json.Marshal(hdr)
			if err != nil || len(b) > d.cfg.MaxHTTPHeaderBytes {
				return nil, fmt.Errorf("%w: request headers larger than %d bytes", ErrInvalidInput, d.cfg.MaxHTTPHeaderBytes)
			}
			hb = b
		}
		return hb, nil
	}
	body := &replayBody{r: r.Body}
	if hdr.ContentLength != 0 {
		r.Body = body
	}
	// A retry may resend the request when it cannot have reached an
	// upstream in a way that matters: idempotent methods, or a body of
	// which nothing was consumed yet (or all of it kept for replay).
	retryable := func() bool {
		if hdr.ContentLength == 0 {
			return true
		}
		kept, consumed := body.rewind()
		return kept && (consumed == 0 || idempotent(r.Method))
	}
	avoid := map[string]bool{}
	bal := d.balancing(cluster, &svc, r)
	var lastErr error
	for try := 0; ; try++ {
		if bal != nil {
			up, err := bal.pick()
			if err != nil {
				if lastErr != nil && errors.Is(err, errUpstreamsTried) {
					return lastErr
				}
				return err
			}
			hdr.Upstream, hdr.Report = up, true
		}
		rn, err := d.pickHTTP(cluster, &svc, avoid, try == 0)
		if err != nil {
			if lastErr != nil {
				return lastErr
			}
			return err
		}
		started, err := d.proxyOnce(w, r, rn, &hdr, header, body)
		if bal != nil {
			if retry, err := bal.outcome(w, hdr.status, err, func() bool {
				if hdr.ContentLength == 0 {
					return true
				}
				kept, _ := body.rewind()
				return kept
			}); err == nil || !retry {
				return err
			}
			if ae := (*attemptError)(nil); errors.As(err, &ae) && ae.kind == "upstream" {
				lastErr = ae.err
				continue // another upstream, through the same runner if it is fine
			}
		}
		if err == nil {
			return nil
		}
		if started {
			return fmt.Errorf("%w: runner %s: %v", ErrProxyAborted, rn.Name, err)
		}
		var ae *attemptError
		if !errors.As(err, &ae) {
			return err
		}
		switch ae.kind {
		case "busy":
			avoid[rn.Name] = true
			lastErr = fmt.Errorf("%w: %v", ErrBusy, ae.err)
			if !retryable() {
				return lastErr
			}
		case "unreachable", "deadline":
			avoid[rn.Name] = true
			lastErr = fmt.Errorf("proxy through runner %s: %w", rn.Name, ae.err)
			if !retryable() {
				return lastErr
			}
		default:
			return ae.err
		}
	}
}

// pickHTTP prefers this node when it is itself a live runner of the
// service: clients already spread their requests over the nodes, and
// proxying in place saves the QUIC hop on the hot path. Otherwise (a
// gateway-only node, or this runner busy or failed) it picks like runs do.
func (d *Dispatcher) pickHTTP(cluster string, svc *Service, avoid map[string]bool, first bool) (Runner, error) {
	if d.exec != nil && !avoid[d.local] {
		fresh, _ := d.candidates(cluster, svc)
		for _, rn := range fresh {
			if rn.Name == d.local {
				return rn, nil
			}
		}
	}
	return d.pick(cluster, svc, avoid, first)
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// replayBody wraps a request body so a retry on another runner can send
// it again: it keeps the bytes read so far, up to replayMax; rewind fails
// once more than that was consumed.
type replayBody struct {
	r        io.ReadCloser
	mu       sync.Mutex
	buf      []byte // everything read from r, while not overflowed
	off      int    // replay position in buf
	overflow bool
}

const replayMax = 64 << 10

func (b *replayBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.off < len(b.buf) {
		n := copy(p, b.buf[b.off:])
		b.off += n
		return n, nil
	}
	n, err := b.r.Read(p)
	if n > 0 {
		if !b.overflow && len(b.buf)+n <= replayMax {
			b.buf = append(b.buf, p[:n]...)
			b.off = len(b.buf)
		} else {
			b.overflow = true
			b.buf = nil
			b.off = 0
		}
	}
	return n, err
}

// rewind prepares a replay and says how much had been consumed; kept is
// false if the consumed part was not kept.
func (b *replayBody) rewind() (kept bool, consumed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.overflow {
		return false, -1
	}
	b.off = 0
	return true, len(b.buf)
}

func (b *replayBody) Close() error { return b.r.Close() }

// proxyOnce proxies through one runner. started reports whether anything
// was written to w.
func (d *Dispatcher) proxyOnce(w http.ResponseWriter, r *http.Request, rn Runner, hdr *httpReqWire, header func() ([]byte, error), body io.Reader) (started bool, err error) {
	hasBody := hdr.ContentLength != 0
	upgrade := runner.IsUpgrade(r.Header) // the send side stays open (upgrade.go)
	d.acquireRunner(rn.Name)
	defer d.releaseRunner(rn.Name)
	hdr.status = 0
	if rn.Name == d.local && d.exec != nil {
		var err error
		if hdr.Report {
			hdr.status, err = d.exec.ServeProxyReport(w, r, hdr.Upstream, hdr.Path)
		} else {
			err = d.exec.ServeProxy(w, r, hdr.Upstream, hdr.Path)
		}
		var ue *runner.UpstreamError
		switch {
		case errors.As(err, &ue):
			return false, &attemptError{"upstream", ue}
		case errors.Is(err, runner.ErrBusy), errors.Is(err, runner.ErrClosed):
			return false, &attemptError{"busy", err}
		case errors.Is(err, runner.ErrHeaderTooLarge):
			return false, fmt.Errorf("%w: %v", ErrInvalidInput, err)
		case errors.Is(err, runner.ErrAborted):
			return true, err
		case err != nil:
			return false, &attemptError{"invalid", err}
		}
		return true, nil
	}
	if d.rpc == nil {
		return false, &attemptError{"unreachable", fmt.Errorf("no transport to reach runner %s", rn.Name)}
	}
	hb, err := header()
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(r.Context())
	s, err := d.rpc.Stream(ctx, rn.RPCAddr, MethodHTTP)
	if err != nil {
		err = d.classify(ctx, rn, err)
		cancel()
		return false, err
	}
	x := &remoteExchange{w: w, s: s, cancel: cancel, pumpDone: make(chan struct{})}
	handedOff := false
	defer func() {
		if !handedOff {
			x.end()
		}
	}()
	if err := s.Send(hb); err != nil {
		return false, d.classify(ctx, rn, err)
	}
	if hasBody {
		// The upload is pumped while the response comes back: the answer
		// must not wait for a slow client to finish uploading.
		_ = http.NewResponseController(w).EnableFullDuplex()
		go func() {
			defer close(x.pumpDone)
			buf := make([]byte, proxyChunk)
			for {
				n, rerr := body.Read(buf)
				if n > 0 {
					if s.Send(buf[:n]) != nil {
						return
					}
				}
				if rerr == io.EOF {
					_ = s.CloseSend()
					return
				}
				if rerr != nil {
					cancel() // a broken upload must not look complete upstream
					return
				}
			}
		}()
	} else {
		close(x.pumpDone)
		// A runner that answered already may have stopped reading, which
		// fails CloseSend; a broken stream fails Recv below anyway.
		if !upgrade {
			_ = s.CloseSend()
		}
	}

	f, err := s.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: runner %s ended the stream without a response", transport.ErrUnreachable, rn.Name)
		}
		if ae := upstreamFailed(err); ae != nil {
			return false, ae
		}
		return false, d.classify(ctx, rn, err)
	}
	var resp httpRespWire
	if err := json.Unmarshal(f, &resp); err != nil || resp.Status < 100 || resp.Status > 999 {
		return false, &attemptError{"invalid", fmt.Errorf("runner %s sent a malformed response header", rn.Name)}
	}
	d.clearPenalty(rn.Name)
	hdr.status = resp.Status
	if resp.Status == http.StatusSwitchingProtocols && upgrade {
		handedOff = true
		return true, upgradeRemote(w, resp.Header, s, x.end)
	}
	if upgrade {
		_ = s.CloseSend() // no switch: an ordinary answer
	}
	h := w.Header()
	for k, vs := range resp.Header {
		if runner.HopHeader(k, resp.Header) {
			continue
		}
		h[k] = vs
	}
	w.WriteHeader(resp.Status)
	size := contentLength(h)
	streamed := runner.Streamed(h, size)
	if bs, ok := runner.Find[runner.BodyStreamer](w); ok && x.uploaded() {
		// Handed over only once the upload is over: the server reads its
		// connection again after the handler returns.
		if streamed {
			size = -1
		}
		handedOff = true
		bs.SetBodyStream(&frameBody{s: s, onClose: x.end}, size)
		return true, nil
	}
	// A streamed response is flushed frame by frame, header first.
	var rc *http.ResponseController
	if streamed {
		rc = http.NewResponseController(w)
		_ = rc.Flush()
	}
	for {
		f, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		if _, err := w.Write(f); err != nil {
			return true, fmt.Errorf("write to client: %w", err)
		}
		if rc != nil {
			_ = rc.Flush()
		}
	}
}

// contentLength is h's Content-Length, or -1 when absent or malformed.
func contentLength(h http.Header) int64 {
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// serveHTTP is the runner side of MethodHTTP.
func (d *Dispatcher) serveHTTP(ctx context.Context, s *transport.Stream) error {
	f, err := s.Recv()
	if err != nil {
		return transport.Errorf(codeInvalid, "reading request header: %v", err)
	}
	if len(f) > d.cfg.MaxHTTPHeaderBytes {
		return transport.Errorf(codeInvalid, "request header frame larger than %d bytes", d.cfg.MaxHTTPHeaderBytes)
	}
	var hdr httpReqWire
	if err := json.Unmarshal(f, &hdr); err != nil {
		return transport.Errorf(codeInvalid, "malformed request header: %v", err)
	}
	if !validMethod(hdr.Method) || !strings.HasPrefix(hdr.Path, "/") {
		return transport.Errorf(codeInvalid, "bad method or path")
	}
	var body io.ReadCloser = http.NoBody
	if hdr.ContentLength != 0 {
		body = &frameBody{s: s}
	}
	if hdr.Header == nil {
		hdr.Header = http.Header{}
	}
	req := (&http.Request{
		Method:        hdr.Method,
		URL:           &url.URL{Scheme: "http", Host: "meshgw", Path: hdr.Path, RawQuery: hdr.Query},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr.Header,
		Body:          body,
		ContentLength: hdr.ContentLength,
		Host:          hdr.Host,
		RemoteAddr:    hdr.RemoteAddr,
	}).WithContext(ctx)
	rw := &frameResponseWriter{s: s, h: http.Header{}, timeout: d.cfg.OutputWriteTimeout}
	if hdr.Report {
		_, err = d.exec.ServeProxyReport(rw, req, hdr.Upstream, hdr.Path)
	} else {
		err = d.exec.ServeProxy(rw, req, hdr.Upstream, hdr.Path)
	}
	var ue *runner.UpstreamError
	switch {
	case errors.As(err, &ue):
		return upstreamRemoteError(ue)
	case errors.Is(err, runner.ErrBusy), errors.Is(err, runner.ErrClosed):
		return transport.Errorf(codeBusy, "runner %s is at its HTTP concurrency limit or stopping", d.local)
	case errors.Is(err, runner.ErrAborted):
		return transport.Errorf(transport.CodeInternal, "%v", err) // ends the stream as failed: the gateway aborts its client
	case err != nil:
		return transport.Errorf(codeInvalid, "%v", err)
	}
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.err
}

func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// frameBody reads a body from stream frames: a request's on the runner, a
// response's on a data-plane gateway, which ends the exchange with Close.
type frameBody struct {
	s       *transport.Stream
	buf     []byte
	err     error
	onClose func()
}

func (b *frameBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		f, err := b.s.Recv()
		if err != nil {
			b.err = err
			continue
		}
		b.buf = f
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

func (b *frameBody) Close() error {
	if b.onClose != nil {
		b.onClose()
		b.onClose = nil
	}
	return nil
}

// remoteExchange is one proxied request through a remote runner's stream.
type remoteExchange struct {
	w        http.ResponseWriter
	s        *transport.Stream
	cancel   context.CancelFunc
	pumpDone chan struct{} // closed when the upload pump is over
}

// uploaded reports whether the request body has been sent whole.
func (x *remoteExchange) uploaded() bool {
	select {
	case <-x.pumpDone:
		return true
	default:
		return false
	}
}

// end releases the exchange. An upload still going when it ends (the
// upstream answered without taking it all) is cut: a pending body read and
// the stream are unblocked, and the pump waited for.
func (x *remoteExchange) end() {
	select {
	case <-x.pumpDone:
	default:
		x.cancel()
		_ = http.NewResponseController(x.w).SetReadDeadline(time.Now())
		_ = x.s.Close()
		<-x.pumpDone
	}
	_ = x.s.Close()
	x.cancel()
}

// frameResponseWriter sends a response as stream frames: a header frame at
// the first WriteHeader/Write, then one frame per Write.
//
// Each frame has timeout to go (Config.OutputWriteTimeout): a gateway that
// stopped reading (its client stalled) fails the Write, which ends the
// upstream exchange and frees the runner's HTTP slot.
type frameResponseWriter struct {
	s       *transport.Stream
	h       http.Header
	timeout time.Duration
	wrote   bool
	err     error
}

func (w *frameResponseWriter) send(b []byte) error {
	if w.timeout > 0 {
		_ = w.s.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	return w.s.Send(b)
}

func (w *frameResponseWriter) Header() http.Header { return w.h }

func (w *frameResponseWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	if code >= 100 && code < 200 {
		return // informational responses are not relayed
	}
	w.wrote = true
	b, _ := json.Marshal(httpRespWire{Status: code, Header: w.h})
	w.err = w.send(b)
}

func (w *frameResponseWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.err = w.send(p); w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// Flush is a no-op: every Write is already a frame on the wire.
func (w *frameResponseWriter) Flush() {}
