package node

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/transport"
)

// execBackend serves runs and executions over the dispatcher, looking the
// service up in the replicated state first.
type execBackend struct {
	state *stateBackend
	d     *dispatch.Dispatcher
	met   *metrics // nil in tests that need none
	// proxyCache keeps http service definitions for the proxy hot path, so
	// a proxied request costs no Raft read: a changed definition is seen
	// within proxyCacheTTL. Runs still read their service linearizably.
	proxyCache sync.Map // cluster + "/" + name → cachedService
}

const proxyCacheTTL = time.Second

type cachedService struct {
	svc     dispatch.Service
	expires time.Time
}

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
		return dispatch.Execution{}, err
	}
	e, err := b.d.Run(ctx, cluster, svc, input, dispatch.RunOptions{Async: opts.Async, IdempotencyKey: opts.IdempotencyKey, OnOutput: opts.OnOutput})
	if errors.Is(err, dispatch.ErrBusy) && b.met != nil {
		b.met.execRefused.WithLabelValues(cluster, svc.Name).Inc()
	}
	return e, dispatchError("run", err)
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

func (b *execBackend) ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error {
	key := cluster + "/" + service
	var svc dispatch.Service
	if c, ok := b.proxyCache.Load(key); ok && time.Now().Before(c.(cachedService).expires) {
		svc = c.(cachedService).svc
	} else {
		var err error
		if svc, err = b.state.GetService(r.Context(), cluster, service); err != nil {
			return err
		}
		b.proxyCache.Store(key, cachedService{svc: svc, expires: time.Now().Add(proxyCacheTTL)})
	}
	start := time.Now()
	sw := &httpapi.StatusWriter{ResponseWriter: w}
	err := b.d.ProxyHTTP(sw, r, cluster, svc, path)
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
