package runner

import (
	"bytes"
	"context"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
)

// ServeInPlace is ServeProxy for a request of a fasthttp server (the data
// plane) that never became an *http.Request: rc's request is rewritten by
// the rules proxyFast applies (hop-by-hop headers, X-Forwarded-*, the
// path joined below the upstream's base, no meshgw credential) and sent,
// and the upstream's answer fills rc's response, its body streamed by the
// server. ctx is the request's (a canceled one makes an upstream failure
// quiet). The caller has already taken what it authenticated with out of
// rc's header.
//
// served is false, with nothing done, for what ServeProxy handles on its
// other paths or refuses: an https upstream, an upgrade, a chunked upload,
// headers over MaxHeaderBytes, a path leaving the base, the executor busy
// or closed. The caller then goes through ServeProxy, which answers them.
// An upstream failure is answered in rc (502 or 504), as ServeProxy does.
func (e *Executor) ServeInPlace(ctx context.Context, rc *fasthttp.RequestCtx, upstream, path string) (served bool, code int, err error) {
	if e.closed.Load() {
		return false, 0, nil
	}
	target, err := e.parseUpstream(upstream)
	if err != nil || target.Scheme != "http" {
		return false, 0, nil
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if _, err := JoinPath(target.Path, path); err != nil {
		return false, 0, nil
	}
	req := &rc.Request
	if req.Header.ContentLength() == -1 || len(req.Header.Peek("Upgrade")) > 0 {
		return false, 0, nil
	}
	n, hop := 0, false
	listed := connectionListed(&req.Header)
	for k, v := range req.Header.All() {
		if string(k) == "Host" {
			continue // not a header to net/http either, nor counted there
		}
		n += len(k) + len(v) + 4
		hop = hop || HopHeader(string(k), listed)
	}
	if n > e.cfg.MaxHeaderBytes {
		return false, 0, nil
	}
	select {
	case e.httpSem <- struct{}{}:
	default:
		return false, 0, nil
	}
	release := func() { <-e.httpSem }
	if hop {
		var drop []string
		for k := range req.Header.All() {
			if HopHeader(string(k), listed) {
				drop = append(drop, string(k))
			}
		}
		for _, k := range drop {
			req.Header.Del(k)
		}
	}
	query := ""
	if uri := req.Header.RequestURI(); bytes.IndexByte(uri, '?') >= 0 {
		query = string(uri[bytes.IndexByte(uri, '?')+1:]) // as sent, as net/http's RawQuery
	}
	var prior []string
	for _, v := range req.Header.PeekAll("X-Forwarded-For") {
		prior = append(prior, string(v))
	}
	c := fastCall{cctx: ctx, xff: forwardedFor(rc.RemoteAddr().String(), prior), host: string(rc.Host()),
		proto: forwardedProto(rc.IsTLS()), query: query, length: int64(max(req.Header.ContentLength(), 0))}
	code, err = e.exchangeFast(rc, c, target, path, release, false)
	return true, code, err
}

// connectionListed is h's Connection header as HopHeader reads it (nil
// when absent).
func connectionListed(h *fasthttp.RequestHeader) http.Header {
	vs := h.PeekAll("Connection")
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return http.Header{"Connection": out}
}
