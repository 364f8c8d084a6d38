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
// (httpReqWire, encoded as httpwire.go says), then the body as raw frames,
// then closes its send side; the open, the header frame and the close of
// a request without a body go in one write. The runner answers with a
// response header frame (status and header), the body as raw frames, and
// ends the stream, a small response of known length in one write. A busy
// runner fails the call with code "busy" before answering.
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
	// The service whose Upstream this is, as the caller read it: the
	// runner checks Upstream against its own cluster's definition of it
	// (verifyhttp.go). Empty from a gateway of an earlier build.
	Service        string `json:"service,omitempty"`
	Cluster        string `json:"cluster,omitempty"`
	ServiceVersion uint64 `json:"service_version,omitempty"`
	status         int    // out: the upstream's status of the last attempt (0: none)
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
// kept, or nothing of the body consumed yet. A remote runner's refusal of
// the upstream (verifyhttp.go) is ErrProxyRefused, ErrServiceChanged (a
// request without a body is first tried once more with the definition
// read again) or ErrUnverified. An error matching ErrProxyAborted means
// the response had started: the caller should abort the connection.
func (d *Dispatcher) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster string, svc Service, path string) error {
	err := proxyRefusal(cluster, svc.Name, d.proxyHTTP(w, r, cluster, svc, path))
	if errors.Is(err, ErrServiceChanged) && (r.Body == nil || r.Body == http.NoBody) {
		// Rewritten since this node read it (verifyhttp.go): once more
		// with the definition as it is now, nothing having been sent.
		if cur, ok := d.reread(r.Context(), cluster, svc.Name); ok && cur.Version > svc.Version {
			err = proxyRefusal(cluster, cur.Name, d.proxyHTTP(w, r, cluster, cur, path))
		}
	}
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
		Service: svc.Name, Cluster: cluster, ServiceVersion: svc.Version,
	}
	if ts := svc.Upstreams; hdr.Upstream == "" && len(ts) == 1 {
		hdr.Upstream = ts[0].URL // one of "upstreams": nothing to balance
	}
	if r.Body == nil || r.Body == http.NoBody {
		hdr.ContentLength = 0
	}
	// The header frame is built once, when a remote runner first needs it
	// (again if the upstream changes), in a pooled buffer.
	var hb *[]byte
	hbFor, hbReport, hbJSON := "", false, false
	defer func() {
		if hb != nil {
			putWireBuf(hb)
		}
	}()
	header := func(jsonWire bool) ([]byte, error) {
		if hb == nil {
			hb = getWireBuf()
		} else if hbFor == hdr.Upstream && hbReport == hdr.Report && hbJSON == jsonWire {
			return *hb, nil
		}
		hbFor, hbReport, hbJSON = hdr.Upstream, hdr.Report, jsonWire
		if jsonWire {
			b, err := json.Marshal(&hdr)
			if err != nil {
				return nil, fmt.Errorf("encoding the request header: %w", err)
			}
			*hb = append((*hb)[:0], b...)
		} else {
			*hb = appendReq((*hb)[:0], &hdr)
		}
		if len(*hb) > d.cfg.MaxHTTPHeaderBytes {
			return nil, fmt.Errorf("%w: request headers larger than %d bytes", ErrInvalidInput, d.cfg.MaxHTTPHeaderBytes)
		}
		return *hb, nil
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
			lastErr = fmt.Errorf("%w: %w", ErrBusy, ae.err) // its code kept: unverified (verifyhttp.go)
			if !retryable() {
				return lastErr
			}
		case "oldwire":
			// The runner runs an earlier build: resend in JSON, to it.
			lastErr = ae.err
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
	eof      bool // r said io.EOF: the body was read to its end
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
	if err == io.EOF {
		b.eof = true
	}
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

// drained reports whether the body was read to its end.
func (b *replayBody) drained() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// proxyOnce proxies through one runner. started reports whether anything
// was written to w.
func (d *Dispatcher) proxyOnce(w http.ResponseWriter, r *http.Request, rn Runner, hdr *httpReqWire, header func(jsonWire bool) ([]byte, error), body io.Reader) (started bool, err error) {
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
	jsonWire := d.speaksJSON(rn.Name)
	hb, err := header(jsonWire)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(r.Context())
	open := d.rpc.Exchange // on a lane: no stream set up per request
	if upgrade {
		open = d.rpc.StreamFirst // a lane would be held as long as the connection
	}
	s, err := open(ctx, rn.RPCAddr, MethodHTTP, hb, !hasBody && !upgrade)
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
		close(x.pumpDone) // StreamFirst has half-closed, unless for an upgrade
	}

	f, err := s.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: runner %s ended the stream without a response", transport.ErrUnreachable, rn.Name)
		}
		if ae := upstreamFailed(err); ae != nil {
			return false, ae
		}
		if !jsonWire && oldWire(err) {
			d.markJSONWire(rn.Name)
			return false, &attemptError{"oldwire", fmt.Errorf("runner %s: %w", rn.Name, err)}
		}
		return false, d.classify(ctx, rn, err)
	}
	var resp httpRespWire
	resp.Status, resp.Header, err = decodeResp(f)
	if err != nil || resp.Status < 100 || resp.Status > 999 {
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
	hdr, legacy, err := decodeReq(f)
	if err != nil {
		return transport.Errorf(codeInvalid, "request header frame: %v", err)
	}
	if !validMethod(hdr.Method) || !strings.HasPrefix(hdr.Path, "/") {
		return transport.Errorf(codeInvalid, "bad method or path")
	}
	if hdr.Upstream, err = d.verifyHTTP(ctx, s.Peer(), &hdr); err != nil {
		return err // refused, service_changed or unverified: nothing was proxied
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
	rw := &frameResponseWriter{s: s, h: http.Header{}, timeout: d.cfg.OutputWriteTimeout, json: legacy}
	var w http.ResponseWriter = rw
	var fw *fastFrameWriter
	if hdr.ContentLength == 0 && !legacy {
		fw = &fastFrameWriter{frameResponseWriter: rw, r: req}
		w = fw
		defer fw.release()
	}
	if hdr.Report {
		_, err = d.exec.ServeProxyReport(w, req, hdr.Upstream, hdr.Path)
	} else {
		err = d.exec.ServeProxy(w, req, hdr.Upstream, hdr.Path)
	}
	if err == nil && fw != nil && fw.ctx != nil {
		err = fw.send()
	}
	var ue *runner.UpstreamError
	switch {
	case errors.As(err, &ue):
		return upstreamRemoteError(ue)
	case errors.Is(err, runner.ErrBusy), errors.Is(err, runner.ErrClosed):
		return transport.Errorf(codeBusy, "runner %s is at its HTTP concurrency limit or stopping", d.local)
	case errors.Is(err, runner.ErrAborted):
		// The response had started: its header goes first, so the
		// gateway knows it did and aborts its client, as in place.
		rw.Flush()
		return transport.Errorf(transport.CodeInternal, "%v", err) // ends the stream as failed
	case err != nil:
		return transport.Errorf(codeInvalid, "%v", err)
	}
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	rw.end()
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

// frameResponseWriter sends a response as stream frames: a header frame,
// then one frame per Write. The header frame of a response of known
// length waits for the body's first Write and leaves with it, and the
// Write that completes the body also ends the stream: a small response is
// one write, usually one packet. A streamed one (Streamed) sends its
// header at once, as the gateway flushes it to its client.
//
// Each frame has timeout to go (Config.OutputWriteTimeout): a gateway that
// stopped reading (its client stalled) fails the Write, which ends the
// upstream exchange and frees the runner's HTTP slot.
type frameResponseWriter struct {
	s       *transport.Stream
	h       http.Header
	timeout time.Duration
	json    bool // the request came as JSON (an older gateway): answer so
	wrote   bool
	pending *[]byte // the header frame not sent yet (a wire buffer)
	left    int64   // body bytes still due of a known length; -1 unknown
	closed  bool    // the send side is half-closed
	err     error
}

func (w *frameResponseWriter) send(b []byte) error {
	w.deadline()
	return w.s.Send(b)
}

func (w *frameResponseWriter) deadline() {
	if w.timeout > 0 {
		_ = w.s.SetWriteDeadline(time.Now().Add(w.timeout))
	}
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
	w.left = contentLength(w.h)
	if w.json {
		b, _ := json.Marshal(httpRespWire{Status: code, Header: w.h})
		w.left = -1
		w.err = w.send(b)
		return
	}
	w.pending = getWireBuf()
	*w.pending = appendResp((*w.pending)[:0], code, w.h)
	if w.left < 0 || runner.Streamed(w.h, w.left) {
		w.left = -1
		w.flushHeader(false)
	}
}

// flushHeader sends the pending header frame, ending the stream with it
// when last.
func (w *frameResponseWriter) flushHeader(last bool) {
	if w.pending == nil {
		return
	}
	w.deadline()
	w.err = w.s.SendLast(last, *w.pending)
	w.closed = last && w.err == nil
	putWireBuf(w.pending)
	w.pending = nil
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
	if w.closed {
		return 0, errors.New("write past the declared Content-Length")
	}
	last := w.left >= 0 && int64(len(p)) >= w.left
	if w.left >= 0 {
		w.left -= int64(len(p))
	}
	w.deadline()
	if w.pending != nil {
		w.err = w.s.SendLast(last, *w.pending, p)
		putWireBuf(w.pending)
		w.pending = nil
	} else {
		w.err = w.s.SendLast(last, p)
	}
	if w.err != nil {
		return 0, w.err
	}
	w.closed = last
	return len(p), nil
}

// end sends a header frame still pending (a response without a body).
func (w *frameResponseWriter) end() {
	if w.err == nil {
		w.flushHeader(true)
	}
}

// Flush sends a pending header frame; every Write is already on the wire.
func (w *frameResponseWriter) Flush() {
	if w.err == nil {
		w.flushHeader(false)
	}
}

// wireBufs hold header frames being built or sent. A buffer belongs to
// its taker until putWireBuf; the transport copies what it sends.
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getWireBuf() *[]byte { return wireBufs.Get().(*[]byte) }

func putWireBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return
	}
	*b = (*b)[:0]
	wireBufs.Put(b)
}

// jsonWireFor is how long a runner that refused a binary header frame is
// sent JSON before binary is tried again (it may have been upgraded).
const jsonWireFor = 10 * time.Minute

// speaksJSON reports whether runner name must be sent JSON header frames.
func (d *Dispatcher) speaksJSON(name string) bool {
	v, ok := d.jsonWire.Load(name)
	if !ok {
		return false
	}
	if time.Now().After(v.(time.Time)) {
		d.jsonWire.Delete(name)
		return false
	}
	return true
}

// oldWire reports whether err is how a runner of an earlier build refuses
// a binary header frame: one that reads JSON only, or one that reads
// binary frames without the service fields (trailing bytes to it).
func oldWire(err error) bool {
	var re *transport.RemoteError
	return errors.As(err, &re) && re.Code == codeInvalid &&
		(strings.HasPrefix(re.Message, "malformed request header") ||
			strings.HasPrefix(re.Message, "request header frame: malformed header frame:") &&
				strings.HasSuffix(re.Message, "trailing bytes"))
}
