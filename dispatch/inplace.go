package dispatch

import (
	"context"

	"github.com/valyala/fasthttp"
)

// ProxyInPlace is ProxyHTTP for a request of the data-plane listener that
// is still fasthttp's own (rc), in the one case that needs no more than
// the request itself: this node is a live runner of svc, which has a
// single upstream and no health checks (nothing to balance). The exchange
// is then done here on rc (runner.Executor.ServeInPlace), rc's response
// filled with the upstream's answer (or a 502/504).
//
// served is false, with nothing done, in every other case, and when the
// runner declines (busy, an https upstream, an upgrade, a chunked body):
// the caller then goes through ProxyHTTP, which picks, balances, retries
// and hops.
func (d *Dispatcher) ProxyInPlace(ctx context.Context, rc *fasthttp.RequestCtx, cluster string, svc Service, path string) (served bool, err error) {
	if svc.Type != TypeHTTP || d.exec == nil || len(svc.Upstreams) != 0 || svc.Upstream == "" || svc.Health != nil {
		return false, nil
	}
	if !d.localRunner(cluster, &svc) {
		return false, nil
	}
	d.acquireRunner(d.local)
	defer d.releaseRunner(d.local)
	served, _, err = d.exec.ServeInPlace(ctx, rc, svc.Upstream, path)
	if !served {
		return false, nil
	}
	if err != nil {
		d.stats.proxyFailed.Add(1)
	} else {
		d.stats.proxied.Add(1)
	}
	return true, err
}

// localRunner reports whether this node is a fresh runner candidate of
// svc: the runner pickHTTP prefers.
func (d *Dispatcher) localRunner(cluster string, svc *Service) bool {
	fresh, _ := d.candidates(cluster, svc)
	for _, rn := range fresh {
		if rn.Name == d.local {
			return true
		}
	}
	return false
}
