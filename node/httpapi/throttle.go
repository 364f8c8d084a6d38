package httpapi

import (
	"context"
	"net/http"
)

// Throttler checks requests against their service's limits and
// max_in_flight (package throttle, wired by node) and reports usage.
type Throttler interface {
	// Admit checks one run or /svc/ request r of cluster's service, sent
	// with token tok (nil: none read), before anything runs or is
	// proxied. Admitted: release ends the request (it frees its
	// max_in_flight slot). Refused: an *Error (429), with the RateLimit-*
	// headers already set on w's header. An admitted request does not
	// touch w (the data plane's writer makes its header on first use).
	Admit(ctx context.Context, w http.ResponseWriter, r Request, tok *Token, cluster, service string) (release func(), err error)
	// Throttles is the usage per limit and key of service ("" all) of
	// cluster ("" the local one), from the active manager.
	Throttles(ctx context.Context, cluster, service string) (any, error)
}

// WithThrottle checks runs and /svc/ requests with t and serves
// GET /v1/throttles (policy read, like every GET).
func WithThrottle(t Throttler) Option { return func(a *API) { a.throttle = t } }

func (a *API) admit(ctx context.Context, w http.ResponseWriter, r Request, tok *Token, cluster, service string) (func(), error) {
	if a.throttle == nil {
		return func() {}, nil
	}
	release, err := a.throttle.Admit(ctx, w, r, tok, cluster, service)
	if err != nil {
		return nil, err
	}
	if release == nil {
		release = func() {}
	}
	return release, nil
}

func (a *API) throttles(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "cluster", "service")
	if err != nil {
		return err
	}
	cluster, service := q.Get("cluster"), q.Get("service")
	if err := checkName("cluster", cluster, true); err != nil {
		return err
	}
	if err := checkName("service", service, true); err != nil {
		return err
	}
	out, err := a.throttle.Throttles(r.Context(), cluster, service)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, out)
}
