package node

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// ProxyFast implements httpapi.FastProxy: a data-plane call answered from
// a copy of the response cache held here, exchanged in place on this
// runner (dispatch.ProxyInPlace), or sent through a runner elsewhere
// (dispatch.ProxyHop), all on fasthttp's request as it is. Everything
// else declines (served false) and takes ProxyHTTP: a cache miss (the
// peers' copies, the fill), balancing, a chunked upload, a service that
// cannot be read (ProxyHTTP answers the 404 or the error).
func (b *execBackend) ProxyFast(ctx context.Context, w http.ResponseWriter, rc *fasthttp.RequestCtx, r httpapi.Request,
	cluster, service, path string) (bool, error) {
	svc, ok, err := b.cachedService(ctx, cluster, service)
	if err != nil || !ok {
		return false, nil
	}
	start := time.Now()
	if t, ok := b.cacheTarget(cluster, svc); ok {
		if !b.cache.ServeHit(w, r, t, path) {
			return false, nil
		}
	} else {
		served, err := b.d.ProxyInPlace(ctx, rc, cluster, svc, path)
		if !served {
			served, err = b.d.ProxyHop(ctx, rc, cluster, svc, dispatch.HopRequest{
				Path: path, Query: r.RawQuery(), Host: r.Host(), RemoteAddr: r.RemoteAddr()})
		}
		if !served {
			return false, nil
		}
		if errors.Is(err, dispatch.ErrProxyAborted) {
			// The answer had started: cut the client's connection, as
			// ProxyHTTP does, so a truncated answer is not taken whole.
			if b.met != nil {
				b.met.observeProxy(cluster, svc.Name, rc.Response.StatusCode(), time.Since(start), err)
			}
			panic(http.ErrAbortHandler)
		}
		if err = dispatchError("proxy", err); err != nil {
			if b.met != nil {
				b.met.observeProxy(cluster, svc.Name, 0, time.Since(start), err)
			}
			return true, err // nothing was written: the caller answers err
		}
	}
	if b.met != nil {
		b.met.observeProxy(cluster, svc.Name, rc.Response.StatusCode(), time.Since(start), nil)
	}
	return true, nil
}

var _ httpapi.FastProxy = (*execBackend)(nil)
