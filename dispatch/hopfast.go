package dispatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
	"github.com/valyala/fasthttp"
)

// HopRequest is what ProxyHop needs of a data-plane call beyond
// fasthttp's request: the parts the caller's rules already read.
type HopRequest struct {
	Path       string // below the service's upstream ("/x/y")
	Query      string // raw, without '?'
	Host       string
	RemoteAddr string
}

// ProxyHop is ProxyHTTP for a data-plane request that is still fasthttp's
// own (rc) and must go through a runner on another node: its header frame
// is written straight from rc's header (already stripped of meshgw's
// credentials by the caller), and the runner's answer is written into
// rc's response, so the hop never builds net/http's types. It covers a
// service with a single upstream and no health checks (nothing to
// balance), a request without an upgrade and with a body of declared
// length (or none), when this node is not itself a runner of the service
// (ProxyInPlace serves that one).
//
// served is false, with nothing done, in every other case: the caller then
// goes through ProxyHTTP on the request converted. The retry rules are
// ProxyHTTP's: a runner lost before any response byte is tried again
// elsewhere when the request can be resent; the frame names the service,
// so the runner checks the upstream against its cluster's definition
// (verifyhttp.go), and a request refused as service_changed is tried once
// more with the definition read again. Errors are ProxyHTTP's; one
// matching ErrProxyAborted means the response had started (the caller
// cuts the client's connection).
func (d *Dispatcher) ProxyHop(ctx context.Context, rc *fasthttp.RequestCtx, cluster string, svc Service,
	hr HopRequest) (served bool, err error) {
	if svc.Type != TypeHTTP || d.rpc == nil || len(svc.Upstreams) != 0 || svc.Upstream == "" ||
		svc.Health != nil {
		return false, nil
	}
	h := &rc.Request.Header
	length := int64(h.ContentLength())
	switch {
	case length == -1:
		return false, nil // chunked: the converted path streams it
	case length < 0:
		length = 0 // neither a length nor chunked: no body
	}
	if len(h.Peek("Upgrade")) > 0 || h.IsConnect() {
		return false, nil
	}
	if d.exec != nil && d.localRunner(cluster, &svc) {
		return false, nil // in place, or ProxyHTTP's choice when that declined
	}
	err = proxyRefusal(cluster, svc.Name, d.proxyHop(ctx, rc, cluster, &svc, hr, length))
	if errors.Is(err, ErrServiceChanged) && length == 0 {
		// Rewritten since this node read it (verifyhttp.go): once more
		// with the definition as it is now, nothing having been sent,
		// when it still needs nothing the converted path does.
		cur, ok := d.reread(ctx, cluster, svc.Name)
		if ok && cur.Version > svc.Version && len(cur.Upstreams) == 0 && cur.Upstream != "" && cur.Health == nil {
			err = proxyRefusal(cluster, cur.Name, d.proxyHop(ctx, rc, cluster, &cur, hr, length))
		}
	}
	if err != nil {
		d.stats.proxyFailed.Add(1)
	} else {
		d.stats.proxied.Add(1)
		d.stats.hopsNative.Add(1)
	}
	return true, err
}

func (d *Dispatcher) proxyHop(ctx context.Context, rc *fasthttp.RequestCtx, cluster string, svc *Service,
	hr HopRequest, length int64) error {
	if !strings.HasPrefix(hr.Path, "/") {
		hr.Path = "/" + hr.Path
	}
	method := string(rc.Request.Header.Method())
	hb := getWireBuf()
	defer putWireBuf(hb)
	hbJSON := -1 // what *hb holds: -1 nothing, 0 binary, 1 JSON
	header := func(jsonWire bool) ([]byte, error) {
		want := 0
		if jsonWire {
			want = 1
		}
		if hbJSON == want {
			return *hb, nil
		}
		hbJSON = want
		if jsonWire {
			b, err := json.Marshal(hopWireJSON(rc, method, hr, cluster, svc, length))
			if err != nil {
				return nil, fmt.Errorf("encoding the request header: %w", err)
			}
			*hb = append((*hb)[:0], b...)
		} else {
			*hb = appendReqFast((*hb)[:0], method, hr, cluster, svc, length, &rc.Request.Header)
		}
		if len(*hb) > d.cfg.MaxHTTPHeaderBytes {
			return nil, fmt.Errorf("%w: request headers larger than %d bytes", ErrInvalidInput,
				d.cfg.MaxHTTPHeaderBytes)
		}
		return *hb, nil
	}
	var body *replayBody
	if length > 0 {
		src := rc.RequestBodyStream()
		if src == nil {
			src = bytes.NewReader(rc.Request.Body()) // not streamed: read whole already
		}
		body = &replayBody{r: io.NopCloser(io.LimitReader(src, length))}
		defer func() {
			if !body.drained() {
				rc.SetConnectionClose() // where the client's body ends is unknown
			}
		}()
	}
	retryable := func() bool {
		if body == nil {
			return true
		}
		kept, consumed := body.rewind()
		return kept && (consumed == 0 || idempotent(method))
	}
	var avoid map[string]bool
	var lastErr error
	for try := 0; ; try++ {
		rn, err := d.pick(cluster, svc, avoid, try == 0)
		if err != nil {
			if lastErr != nil {
				return lastErr
			}
			return err
		}
		started, err := d.hopOnce(ctx, rc, rn, method, header, body)
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
		if avoid == nil {
			avoid = map[string]bool{}
		}
		switch ae.kind {
		case "busy":
			avoid[rn.Name] = true
			lastErr = fmt.Errorf("%w: %w", ErrBusy, ae.err) // its code kept: unverified (verifyhttp.go)
		case "oldwire":
			lastErr = ae.err // resent in JSON, to the same runner
		case "unreachable", "deadline":
			avoid[rn.Name] = true
			lastErr = fmt.Errorf("proxy through runner %s: %w", rn.Name, ae.err)
		default:
			return ae.err
		}
		if !retryable() {
			return lastErr
		}
	}
}

// hopOnce is proxyOnce for ProxyHop: one runner, rc's response filled
// from its answer. started reports whether rc's response holds any of it.
func (d *Dispatcher) hopOnce(ctx context.Context, rc *fasthttp.RequestCtx, rn Runner, method string,
	header func(jsonWire bool) ([]byte, error), body *replayBody) (started bool, err error) {
	d.acquireRunner(rn.Name)
	defer d.releaseRunner(rn.Name)
	jsonWire := d.speaksJSON(rn.Name)
	hb, err := header(jsonWire)
	if err != nil {
		return false, err
	}
	s, err := d.rpc.Exchange(ctx, rn.RPCAddr, MethodHTTP, hb, body == nil)
	if err != nil {
		return false, d.classify(ctx, rn, err)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			_ = s.Close()
		}
	}()
	if body != nil {
		// Sent whole before the answer is read, as the data plane does in
		// place; a runner that answers without reading it all stops
		// reading, which fails a Send, and its answer is read all the same.
		bp := fastBufs.Get().(*[]byte)
		for {
			n, rerr := body.Read(*bp)
			if n > 0 && s.Send((*bp)[:n]) != nil {
				break
			}
			if rerr == io.EOF {
				_ = s.CloseSend()
				break
			}
			if rerr != nil {
				fastBufs.Put(bp)
				return false, fmt.Errorf("%w: reading the request body: %v", ErrInvalidInput, rerr)
			}
		}
		fastBufs.Put(bp)
	}
	f, err := s.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: runner %s ended the stream without a response", transport.ErrUnreachable, rn.Name)
		}
		if !jsonWire && oldWire(err) {
			d.markJSONWire(rn.Name)
			return false, &attemptError{"oldwire", fmt.Errorf("runner %s: %w", rn.Name, err)}
		}
		return false, d.classify(ctx, rn, err)
	}
	resp := &rc.Response
	status, size, streamed, err := decodeRespFast(f, &resp.Header)
	if err != nil || status < 100 || status > 999 {
		resp.Header.Reset()
		return false, &attemptError{"invalid", fmt.Errorf("runner %s sent a malformed response header", rn.Name)}
	}
	d.clearPenalty(rn.Name)
	resp.SetStatusCode(status)
	if streamed {
		size = -1
	}
	if size >= 0 && size <= proxyChunk*2 && method != http.MethodHead && status >= 200 &&
		status != http.StatusNoContent && status != http.StatusNotModified {
		// Small and of known length: read here, so the exchange (and its
		// stream) ends before the client's answer is written.
		for {
			f, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return true, err
			}
			if int64(len(resp.Body())+len(f)) > size {
				return true, fmt.Errorf("runner %s sent more than the declared %d bytes", rn.Name, size)
			}
			resp.AppendBody(f)
		}
		if int64(len(resp.Body())) != size {
			return true, fmt.Errorf("runner %s sent %d of the declared %d bytes", rn.Name, len(resp.Body()), size)
		}
		return true, nil
	}
	if size < 0 {
		resp.ImmediateHeaderFlush = true // the header goes out before the first piece
	}
	handedOff = true
	resp.SetBodyStream(&frameBody{s: s, onClose: func() { _ = s.Close() }}, int(size))
	return true, nil
}

// markJSONWire remembers that runner name reads only JSON header frames.
func (d *Dispatcher) markJSONWire(name string) {
	d.jsonWire.Store(name, time.Now().Add(jsonWireFor))
	d.log.Info().Str("runner", name).
		Msg("runner reads only JSON proxy headers (an earlier build): sending it JSON")
}

// appendReqFast is appendReq from fasthttp's request header, as the
// conversion to net/http's request would have framed it: every header but
// Host (which travels apart) under its canonical name, one entry per
// value (the reader merges repeated names), then the service fields.
func appendReqFast(dst []byte, method string, hr HopRequest, cluster string, svc *Service, length int64,
	h *fasthttp.RequestHeader) []byte {
	dst = append(dst, httpWireV1, 2) // flags: the service fields follow
	dst = binary.AppendVarint(dst, length)
	for _, s := range [...]string{method, hr.Path, hr.Query, hr.Host, hr.RemoteAddr, svc.Upstream} {
		dst = appendStr(dst, s)
	}
	n := 0
	for k := range h.All() {
		if string(k) != "Host" {
			n++
		}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for k, v := range h.All() {
		if string(k) == "Host" {
			continue
		}
		if canonicalKey(k) {
			dst = appendBytesLen(dst, k)
		} else {
			dst = appendStr(dst, http.CanonicalHeaderKey(string(k)))
		}
		dst = appendBytesLen(binary.AppendUvarint(dst, 1), v)
	}
	dst = appendStr(appendStr(dst, svc.Name), cluster)
	return binary.AppendUvarint(dst, svc.Version)
}

// canonicalKey reports whether k is already in the form
// http.CanonicalHeaderKey gives (fasthttp normalizes names the same way).
func canonicalKey(k []byte) bool {
	upper := true
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z':
			if upper {
				return false
			}
		case c >= 'A' && c <= 'Z':
			if !upper {
				return false
			}
		case c == '-' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '!' || c == '#' ||
			c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' || c == '+' || c == '^' ||
			c == '`' || c == '|' || c == '~':
		default:
			return false // not a token: CanonicalHeaderKey leaves it as is, so must we
		}
		upper = c == '-'
	}
	return true
}

// hopWireJSON is the header frame for a runner of an earlier build.
func hopWireJSON(rc *fasthttp.RequestCtx, method string, hr HopRequest, cluster string, svc *Service,
	length int64) *httpReqWire {
	hdr := &httpReqWire{Method: method, Path: hr.Path, Query: hr.Query, Host: hr.Host,
		RemoteAddr: hr.RemoteAddr, ContentLength: length, Upstream: svc.Upstream, Header: http.Header{},
		Service: svc.Name, Cluster: cluster, ServiceVersion: svc.Version}
	for k, v := range rc.Request.Header.All() {
		if string(k) != "Host" {
			hdr.Header.Add(string(k), string(v))
		}
	}
	return hdr
}

// decodeRespFast reads a response header frame (binary, or an earlier
// build's JSON) into h, leaving out the hop-by-hop headers and the
// framing ones, as ProxyHTTP does: size is the declared Content-Length
// (-1 none), streamed whether the response must be flushed as it comes
// (runner.Streamed).
func decodeRespFast(p []byte, h *fasthttp.ResponseHeader) (status int, size int64, streamed bool, err error) {
	var pairs []hopPair
	if len(p) > 0 && p[0] == '{' {
		var hdr http.Header
		if status, hdr, err = decodeResp(p); err != nil {
			return 0, 0, false, err
		}
		for k, vs := range hdr {
			for _, v := range vs {
				pairs = append(pairs, hopPair{http.CanonicalHeaderKey(k), v})
			}
		}
	} else {
		d := newWireReader(p)
		if d.byte() != httpWireV1 {
			return 0, 0, false, fmt.Errorf("%w: unknown version", errWire)
		}
		status = int(d.byte())<<8 | int(d.byte())
		n := d.count(2)
		if d.err == nil {
			pairs = make([]hopPair, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			k := d.str()
			nv := d.count(1)
			for j := 0; j < nv && d.err == nil; j++ {
				pairs = append(pairs, hopPair{k, d.str()})
			}
		}
		if d.err == nil && d.rest() != 0 {
			d.err = fmt.Errorf("%w: %d trailing bytes", errWire, d.rest())
		}
		if d.err != nil {
			return 0, 0, false, d.err
		}
	}
	size = -1
	var conn http.Header // the Connection header's tokens, when there is one
	for _, kv := range pairs {
		if strings.EqualFold(kv.k, "Connection") {
			if conn == nil {
				conn = http.Header{}
			}
			conn.Add("Connection", kv.v)
		}
	}
	for _, kv := range pairs {
		switch {
		case strings.EqualFold(kv.k, "Content-Length"):
			var n int64
			for i := 0; i < len(kv.v); i++ {
				c := kv.v[i]
				if c < '0' || c > '9' || n > 1<<50 {
					n = -1
					break
				}
				n = n*10 + int64(c-'0')
			}
			if len(kv.v) > 0 && n >= 0 {
				size = n
			}
			continue
		case runner.HopHeader(kv.k, conn):
			continue
		case strings.EqualFold(kv.k, "Content-Type") && strings.HasPrefix(kv.v, "text/event-stream"):
			streamed = true
		}
		h.Add(kv.k, kv.v)
	}
	return status, size, streamed, nil
}

type hopPair struct{ k, v string }
