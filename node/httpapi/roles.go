package httpapi

import (
	"context"
	"net/http"
	"time"
)

// RoleStatus is one singleton role of a cluster: GET /v1/roles.
type RoleStatus struct {
	Cluster string `json:"cluster"`
	Role    string `json:"role"`
	// Active is the node running the role ("" while none does: a new
	// leader waiting out its lease, or no quorum).
	Active string `json:"active"`
	// Standbys are the other voters of the cluster's group.
	Standbys []string `json:"standbys"`
	// Since is when the active instance started (null without one).
	Since *time.Time `json:"since"`
	// Fence is the active instance's fencing number (its Raft term; 0
	// without one).
	Fence uint64 `json:"fence"`
	// State: "active", "starting" (a leader is elected and waits out its
	// lease) or "none".
	State string `json:"state"`
	// Leader and Term are the group's Raft leader and term as the
	// answering node sees them (empty when it holds no replica).
	Leader string `json:"leader,omitempty"`
	Term   uint64 `json:"term,omitempty"`
}

// RolesBackend reports the singleton roles of a cluster ("" for the local
// one).
type RolesBackend interface {
	Roles(ctx context.Context, cluster string) ([]RoleStatus, error)
}

// WithRoles serves GET /v1/roles from r.
func WithRoles(r RolesBackend) Option { return func(a *API) { a.roles = r } }

func (a *API) rolesList(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "cluster")
	if err != nil {
		return err
	}
	cluster := q.Get("cluster")
	if err := checkName("cluster", cluster, true); err != nil {
		return err
	}
	rs, err := a.roles.Roles(r.Context(), cluster)
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []RoleStatus{}
	}
	for i := range rs {
		if rs[i].Standbys == nil {
			rs[i].Standbys = []string{}
		}
	}
	return WriteJSON(w, http.StatusOK, rs)
}
