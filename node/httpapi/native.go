package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/centrallog"
)

// FastProxy is an ExecBackend that can serve a data-plane /svc/ call on
// fasthttp's own request — an exchange in place on this runner, a hit
// from a copy held here — so the call never becomes an *http.Request. w
// writes into rc's response (it is the data plane's writer: FastRequest,
// BodyStreamer); r reads rc's request. served false: it wrote nothing, and
// the call goes through ProxyHTTP on the request converted.
type FastProxy interface {
	ProxyFast(ctx context.Context, w http.ResponseWriter, rc *fasthttp.RequestCtx, r Request,
		cluster, service, path string) (served bool, err error)
}

// Routes the request observer names for /svc/ calls: the patterns
// execRoutes registers.
const (
	svcRoute     = "/svc/{name}/{path...}"
	svcNameRoute = "/svc/{name}"
)

// native is the data plane's /svc/ call (also one routed by Host or
// prefix) as a fastRequest, when it can be served without net/http's
// types: a target read the same by both servers (nativeTarget), a service
// name, a body of declared length (or none), no protocol upgrade, and an
// ExecBackend that is a FastProxy. false: the caller converts it.
func (d *DataPlane) native(ctx *fasthttp.RequestCtx) (*fastRequest, string, string, bool) {
	if d.api == nil || d.api.fast == nil {
		return nil, "", "", false
	}
	h := &ctx.Request.Header
	if h.ContentLength() == -1 || len(h.Peek("Upgrade")) > 0 || h.IsConnect() {
		return nil, "", "", false
	}
	p, q, ok := nativeTarget(h.RequestURI())
	if !ok {
		return nil, "", "", false
	}
	host := string(ctx.Host())
	name, rest, ok := svcCall(p)
	if !ok && d.router != nil && p != "/v1/health" && !strings.HasPrefix(p, "/svc/") {
		var svc string
		if svc, rest, ok = d.router(host, p); ok {
			p, name = "/svc/"+svc+rest, svc
		}
	}
	if !ok {
		return nil, "", "", false
	}
	return &fastRequest{ctx: ctx, method: string(h.Method()), host: host, path: p, query: q}, name, rest, true
}

// serveNative serves a call native accepted, with the rules the API port
// applies (access, the credential strip, proxyCall's checks and limits,
// the central log, the request observer), read through Request. Only the
// exchange itself may still need the request converted: when the
// FastProxy declines it (a gateway hop, balancing, a cache miss), convert
// builds it, already decided and stripped, for ProxyHTTP.
func (a *API) serveNative(ctx context.Context, w *fastWriter, r *fastRequest, name, rest string,
	convert func() (*http.Request, error)) {
	start := time.Now()
	route := svcRoute
	if r.path == "/svc/"+name {
		route = svcNameRoute
	}
	if a.observe != nil {
		defer func() {
			if v := recover(); v != nil {
				a.observe(route, w.ctx.Response.StatusCode(), time.Since(start))
				panic(v)
			}
			a.observe(route, w.ctx.Response.StatusCode(), time.Since(start))
		}()
	}
	g, err := a.decide(ctx, r)
	if err != nil {
		WriteError(w, err)
		return
	}
	h := &w.ctx.Request.Header
	dropAuth := stripCredential(g, r.Header("Authorization"))
	if dropAuth {
		h.Del("Authorization")
	}
	h.Del(TokenHeader)
	err = a.proxyCall(ctx, w, r, g.token, g.cluster, name, rest, func() error {
		served, err := a.fast.ProxyFast(ctx, w, w.ctx, r, g.cluster, name, rest)
		if served {
			// The response is rc's now (or err's, nothing written).
			w.wrote = w.wrote || err == nil
			return err
		}
		req, err := convert()
		if err != nil {
			return err
		}
		if a.cfg.MaxBodyBytes > 0 && req.Body != nil && req.Body != http.NoBody {
			req.Body = http.MaxBytesReader(w, req.Body, a.cfg.MaxBodyBytes)
		}
		// The conversion reads the header as received: strip again.
		if dropAuth {
			req.Header.Del("Authorization")
		}
		req.Header.Del(TokenHeader)
		req.URL.Path, req.URL.RawPath = r.path, ""
		req = req.WithContext(context.WithValue(req.Context(), grantKey{}, g))
		return a.exec.ProxyHTTP(w, req, g.cluster, name, rest)
	})
	if err != nil {
		a.logFailure(err, r.method, r.path)
		WriteError(w, err)
	}
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if a.central != nil {
		status, out := w.ProxyResult()
		a.record(centrallog.KindHTTP, r, g, start, status, max(r.ContentLength(), 0), out, "")
	}
}

// logFailure logs a request's error as handle does: internal errors are
// worth a warning; expected ones (4xx, and 5xx that say "retry later")
// would only spam the log.
func (a *API) logFailure(err error, method, path string) {
	var e *Error
	if !errors.As(err, &e) || e.Status == http.StatusInternalServerError {
		a.log.Warn().Err(err).Str("method", method).Str("path", path).Msg("request failed")
	} else {
		a.log.Debug().Err(err).Int("status", e.Status).Str("path", path).Msg("request refused")
	}
}
