package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshgw/meshgw/cache"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/transport"
)

// execBackend serves runs and executions over the dispatcher, looking the
// service up in the replicated state first.
type execBackend struct {
	state *stateBackend
	d     *dispatch.Dispatcher
	// services keeps http service definitions for the proxy hot path and
	// for authentication (public, pass_authorization), so a /svc/ call
	// costs no Raft read: a changed definition is seen within cacheFresh,
	// and while the group has no quorum one comes from this node's last
	// known state for up to -stale-serve-for (stale.go). Runs still read
	// their service linearizably: they need the quorum for their record.
	services *freshCache[dispatch.Service]
	met      *metrics // nil in tests that need none
	// stale reads the last known state; nil: never (wireStale sets it).
	stale staleStore
	// cache is the response cache around the proxy, for cacheCluster's
	// services (cache.go); nil: none.
	cache        *cache.Cache
	cacheCluster string
}

// Bounds of the service cache: definitions are at most 64 KiB, most far
// smaller; unknown names (anyone may call /svc/anything) are kept apart.
const (
	serviceCacheEntries  = 2048
	serviceCacheBytes    = 8 << 20
	serviceCacheNegative = 2048
)

// newExecBackend's service cache shares down with the token cache, so a
// /svc/ call during a lost quorum waits out at most one read.
func newExecBackend(state *stateBackend, d *dispatch.Dispatcher, down *groupsDown) *execBackend {
	b := &execBackend{state: state, d: d,
		services: newFreshCache[dispatch.Service](serviceCacheEntries, serviceCacheBytes, serviceCacheNegative)}
	b.services.down = down
	state.changed = b.services.invalidate
	return b
}

// cachedService returns cluster's service name from the cache (found
// false for none).
func (b *execBackend) cachedService(ctx context.Context, cluster, name string) (dispatch.Service, bool, error) {
	if svc, found, ok := b.services.cached(cluster, name, b.services.now()); ok {
		return svc, found, nil // before the loaders' closures are made: they escape
	}
	decode := func(it fsm.Item) (dispatch.Service, int, error) {
		svc, err := decodeService(it)
		if err != nil {
			return svc, 0, fmt.Errorf("%w: %v", errUndecodable, err)
		}
		return svc, 2*len(it.Value) + 256, nil
	}
	var stale staleFunc[dispatch.Service]
	if b.stale != nil {
		stale = func(ctx context.Context) (dispatch.Service, int, bool, time.Time, error) {
			it, ok, asOf, err := b.stale.StaleGet(ctx, cluster, dispatch.ServiceKey(name))
			if err != nil || !ok {
				return dispatch.Service{}, 0, false, asOf, err
			}
			svc, size, err := decode(it)
			return svc, size, err == nil, asOf, err
		}
	}
	svc, ok, err := b.services.get(ctx, cluster, name, func(ctx context.Context) (dispatch.Service, int, bool, error) {
		it, ok, err := b.state.kv.Get(ctx, cluster, dispatch.ServiceKey(name))
		if err != nil || !ok {
			return dispatch.Service{}, 0, false, err
		}
		svc, size, err := decode(it)
		return svc, size, err == nil, err
	}, stale)
	return svc, ok, readError("get service", err)
}

// ProxyPolicy implements httpapi.ProxyPolicies from the service cache.
func (b *execBackend) ProxyPolicy(ctx context.Context, cluster, service string) (httpapi.ProxyPolicy, error) {
	if dispatch.ValidateName(service) != nil {
		return httpapi.ProxyPolicy{}, nil // the proxy answers 404 after the token check
	}
	svc, ok, err := b.cachedService(ctx, cluster, service)
	if err != nil || !ok || svc.Type != dispatch.TypeHTTP {
		return httpapi.ProxyPolicy{}, err
	}
	return httpapi.ProxyPolicy{Public: svc.Public, PassAuthorization: svc.PassAuthorization}, nil
}

// close stops the service cache's background reads.
func (b *execBackend) close() { b.services.close() }

var _ httpapi.ExecBackend = (*execBackend)(nil)

// dispatchError maps dispatch errors to API errors.
func dispatchError(op string, err error) error {
	if err == nil {
		return nil
	}
	var se *dispatch.SchemaError
	var he *httpapi.Error
	switch {
	case errors.As(err, &he):
		return err
	case errors.As(err, &se):
		e := httpapi.Errorf(http.StatusBadRequest, "invalid_input", "%v", err)
		if ps := se.Paths(); len(ps) > 0 {
			e.Path = ps[0]
		}
		return e
	case errors.Is(err, dispatch.ErrInvalidInput):
		return httpapi.Errorf(http.StatusBadRequest, "invalid_input", "%v", err)
	case errors.Is(err, dispatch.ErrInputTooLarge), errors.Is(err, dispatch.ErrTooLarge):
		return httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large", "%v", err)
	case errors.Is(err, dispatch.ErrWrongType):
		return httpapi.Errorf(http.StatusBadRequest, "wrong_type", "%v", err)
	case errors.Is(err, dispatch.ErrNotFound):
		return httpapi.Errorf(http.StatusNotFound, "not_found", "%v", err)
	case errors.Is(err, dispatch.ErrNoRunner):
		return httpapi.Errorf(http.StatusServiceUnavailable, "no_runner", "%v", err).WithRetryAfter(1)
	case errors.Is(err, dispatch.ErrNoHealthyUpstream):
		return httpapi.Errorf(http.StatusServiceUnavailable, "no_healthy_upstream", "%v", err).WithRetryAfter(1)
	case errors.Is(err, dispatch.ErrProxyRefused):
		// A runner would not proxy to the upstream this node sent: its
		// cluster's state does not name it (dispatch/verifyhttp.go).
		return httpapi.Errorf(http.StatusBadGateway, "refused", "%v", err)
	case errors.Is(err, dispatch.ErrServiceChanged):
		return httpapi.Errorf(http.StatusServiceUnavailable, "service_changed", "%v", err).WithRetryAfter(1)
	case errors.Is(err, dispatch.ErrUnverified):
		return httpapi.Errorf(http.StatusServiceUnavailable, "unverified", "%v", err).WithRetryAfter(1)
	case errors.Is(err, dispatch.ErrBusy):
		return httpapi.Errorf(http.StatusTooManyRequests, "busy", "%v", err).WithRetryAfter(1)
	case errors.Is(err, transport.ErrUnreachable):
		return httpapi.Errorf(http.StatusBadGateway, "runner_unreachable", "%v", err)
	case errors.Is(err, dispatch.ErrStopped):
		return httpapi.Errorf(http.StatusServiceUnavailable, "stopping", "%v", err).WithRetryAfter(1)
	}
	return apiError(op, err)
}

func (b *execBackend) Run(ctx context.Context, cluster, service string, input []byte, opts httpapi.RunOptions) (dispatch.Execution, error) {
	svc, err := b.state.GetService(ctx, cluster, service)
	if err != nil {
		return dispatch.Execution{}, staleNoQuorum(err) // stale.go
	}
	e, err := b.d.Run(ctx, cluster, svc, input, dispatch.RunOptions{Async: opts.Async, IdempotencyKey: opts.IdempotencyKey, OnOutput: opts.OnOutput})
	if errors.Is(err, dispatch.ErrBusy) && b.met != nil {
		b.met.execRefused.WithLabelValues(cluster, svc.Name).Inc()
	}
	return e, staleNoQuorum(dispatchError("run", err))
}

func (b *execBackend) GetExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error) {
	e, err := b.d.Get(ctx, cluster, id)
	return e, dispatchError("get execution", err)
}

func (b *execBackend) ListExecutions(ctx context.Context, cluster string, f httpapi.ExecFilter) ([]dispatch.Execution, error) {
	es, err := b.d.List(ctx, cluster, dispatch.ListFilter{Service: f.Service, Status: dispatch.Status(f.Status), Limit: f.Limit})
	return es, dispatchError("list executions", err)
}

func (b *execBackend) Watch(ctx context.Context, cluster, id string, emit func(string, []byte)) (dispatch.Execution, error) {
	e, err := b.d.Watch(ctx, cluster, id, emit)
	return e, dispatchError("watch", err)
}

func (b *execBackend) CancelExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error) {
	e, err := b.d.Cancel(ctx, cluster, id)
	if errors.Is(err, dispatch.ErrAlreadyFinished) {
		return e, httpapi.Errorf(http.StatusConflict, "already_finished", "%v", err)
	}
	return e, dispatchError("cancel execution", err)
}

func (b *execBackend) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error {
	svc, ok, err := b.cachedService(r.Context(), cluster, service)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("service", service)
	}
	start := time.Now()
	sw := &httpapi.StatusWriter{ResponseWriter: w}
	err = b.proxyCached(sw, r, cluster, svc, path) // the response cache wraps the proxy (cache.go)
	aborted := errors.Is(err, dispatch.ErrProxyAborted)
	if !aborted {
		err = dispatchError("proxy", err)
	}
	if b.met != nil {
		b.met.observeProxy(cluster, svc.Name, sw.Code, time.Since(start), err)
	}
	if aborted {
		panic(http.ErrAbortHandler)
	}
	return err
}
