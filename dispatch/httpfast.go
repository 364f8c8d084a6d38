package dispatch

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/valyala/fasthttp"
)

// fastFrameWriter is the runner side of MethodHTTP for a request without
// a body: it offers the runner's fasthttp path (runner.FastRequest), so
// the exchange with a plain-http upstream uses fasthttp's client, as in
// place on a data-plane node, instead of net/http's parser and writer;
// the upstream's response is then sent from fasthttp's types (send),
// without building an http.Header. Requests with a body keep the
// net/http path, which sends the upload while the answer comes back.
type fastFrameWriter struct {
	*frameResponseWriter
	r   *http.Request
	ctx *fasthttp.RequestCtx // once taken: the response is in ctx.Response
}

var (
	_ runner.FastRequest = (*fastFrameWriter)(nil)
	_ runner.Untaker     = (*fastFrameWriter)(nil)
)

var fastCtxs = sync.Pool{New: func() any { return new(fasthttp.RequestCtx) }}

// TakeRequestCtx implements runner.FastRequest: the request as fasthttp's,
// with r's method and header (the proxy rewrites URI, Host and the rest).
func (w *fastFrameWriter) TakeRequestCtx() *fasthttp.RequestCtx {
	if w.ctx == nil {
		w.ctx = fastCtxs.Get().(*fasthttp.RequestCtx)
		req := &w.ctx.Request
		req.Header.SetMethod(w.r.Method)
		for k, vs := range w.r.Header {
			for _, v := range vs {
				req.Header.Add(k, v)
			}
		}
	}
	return w.ctx
}

// UntakeRequestCtx implements runner.Untaker: nothing was written, the
// upstream failure is reported instead.
func (w *fastFrameWriter) UntakeRequestCtx() { w.release() }

func (w *fastFrameWriter) release() {
	if w.ctx == nil {
		return
	}
	w.ctx.Request.Reset()
	w.ctx.Response.Reset()
	fastCtxs.Put(w.ctx)
	w.ctx = nil
}

// send relays the response the fast path left in ctx.Response: the header
// frame (with the body's first piece when its length is known), the body
// from the upstream as it arrives, the end. It closes the body, which
// frees the executor's slot and the upstream connection. (Body() of a
// streamed response would read it whole: only the failure answer, set
// with SetBody, is taken that way.)
func (w *fastFrameWriter) send() error {
	defer w.release()
	resp := &w.ctx.Response
	fr := w.frameResponseWriter
	fr.wrote = true
	var body io.Reader
	var closer io.Closer
	var size int64
	switch {
	case resp.SkipBody:
		size = int64(resp.Header.ContentLength()) // what the body would be (HEAD, 304)
	case resp.IsBodyStream():
		body = resp.BodyStream()
		closer, _ = body.(io.Closer)
		size = int64(resp.Header.ContentLength())
		if size < 0 || resp.ImmediateHeaderFlush {
			size = -1
		}
	default:
		size = int64(len(resp.Body())) // the answer of an upstream failure, whole
	}
	if closer != nil {
		defer closer.Close()
	}
	if a, ok := body.(runner.Aborter); ok {
		// fasthttp's client takes no context: a gateway that goes away
		// (or a transport closing) cuts the upstream exchange this way.
		stop := context.AfterFunc(w.r.Context(), a.Abort)
		defer stop()
	}
	fr.pending = getWireBuf()
	*fr.pending = appendRespFast((*fr.pending)[:0], resp.StatusCode(), &resp.Header, size)
	fr.left = size
	if size < 0 {
		fr.flushHeader(false) // streamed: the header goes first
	}
	switch {
	case resp.SkipBody:
	case body == nil:
		if b := resp.Body(); len(b) > 0 {
			_, _ = fr.Write(b)
		}
	default:
		bp := fastBufs.Get().(*[]byte)
		defer fastBufs.Put(bp)
		for fr.err == nil && !fr.closed {
			n, err := body.Read(*bp)
			if n > 0 {
				if _, werr := fr.Write((*bp)[:n]); werr != nil {
					break
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				// The upstream broke mid-body: the header goes first, so the
				// gateway aborts its client rather than retrying.
				fr.Flush()
				return fmt.Errorf("%w: upstream body: %v", runner.ErrAborted, err)
			}
		}
	}
	fr.end()
	return nil
}

var fastBufs = sync.Pool{New: func() any { b := make([]byte, proxyChunk); return &b }}

// appendRespFast is appendResp from fasthttp's response header; framing
// headers are left out and Content-Length is size (none when negative).
func appendRespFast(dst []byte, status int, h *fasthttp.ResponseHeader, size int64) []byte {
	n := 0
	for k := range h.All() {
		if !framing(k) {
			n++
		}
	}
	if size >= 0 {
		n++
	}
	dst = append(dst, httpWireV1, byte(status>>8), byte(status))
	dst = binary.AppendUvarint(dst, uint64(n))
	for k, v := range h.All() {
		if framing(k) {
			continue
		}
		dst = appendBytesLen(dst, k)
		dst = appendBytesLen(binary.AppendUvarint(dst, 1), v)
	}
	if size >= 0 {
		dst = appendStr(dst, "Content-Length")
		dst = binary.AppendUvarint(dst, 1)
		var num [20]byte
		dst = appendBytesLen(dst, fasthttp.AppendUint(num[:0], int(size)))
	}
	return dst
}

func appendBytesLen(dst, b []byte) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(b))), b...)
}

// framing reports the headers the hop frames itself (or must not pass).
func framing(k []byte) bool {
	switch string(k) {
	case "Content-Length", "Transfer-Encoding", "Connection":
		return true
	}
	return false
}
