package httpapi

import (
	"context"
	"net/http"
)

// Readiness is what /v1/ready asks the agent: nil when this node can serve
// writes for its cluster, else an error saying what it waits for.
type Readiness interface {
	Readiness(ctx context.Context) error
}

// LeaveGuard is asked before a leave: an error says why the leave would
// hurt (a group below quorum) and the leave is refused unless forced.
type LeaveGuard interface {
	LeaveCheck(ctx context.Context) error
}

// WithReadiness serves GET /v1/ready from r and guards /v1/agent/leave
// with it when r is also a LeaveGuard.
func WithReadiness(r Readiness) Option { return func(a *API) { a.ready = r } }

// readiness answers 200 {"status":"ready"} or 503 {"error": reason,
// "code": "not_ready"}. Like /v1/health it needs no token: load balancers
// and scripts poll it; it tells them why a node cannot serve, nothing else.
func (a *API) readiness(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	if err := a.b.Ready(); err != nil {
		return Errorf(http.StatusServiceUnavailable, "not_ready", "%v", err).WithRetryAfter(1)
	}
	if a.ready != nil {
		if err := a.ready.Readiness(r.Context()); err != nil {
			return Errorf(http.StatusServiceUnavailable, "not_ready", "%v", err).WithRetryAfter(1)
		}
	}
	return WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// leaveChecked refuses a leave that would take a group below quorum unless
// the request says ?force=true.
func (a *API) leaveChecked(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "force")
	if err != nil {
		return err
	}
	force := q.Get("force")
	if force != "" && force != "true" && force != "false" {
		return Errorf(http.StatusBadRequest, "bad_query", "force %q: want true or false", force)
	}
	if g, ok := a.ready.(LeaveGuard); ok && force != "true" {
		if err := g.LeaveCheck(r.Context()); err != nil {
			return Errorf(http.StatusConflict, "would_lose_quorum",
				"%v; bring the other voters back first, or leave anyway with force (meshgw leave -force)", err)
		}
	}
	return a.leave(w, r)
}
