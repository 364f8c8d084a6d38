package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/meshgw/meshgw/dispatch/upstreams"
)

// RouteTable is what GET /v1/routes answers: the route table the
// answering node's data plane uses, and its upstreams as it sees them.
// Policy: read (a GET), like /v1/status.
type RouteTable struct {
	Node     string             `json:"node"`
	Cluster  string             `json:"cluster"`
	Revision string             `json:"revision"` // equal on nodes with the same table
	Routes   []upstreams.Route  `json:"routes"`
	Services []ServiceUpstreams `json:"services"`
}

// ServiceUpstreams is one http service's upstreams as a node sees them.
type ServiceUpstreams struct {
	Service   string                    `json:"service"`
	Upstreams []upstreams.UpstreamState `json:"upstreams"`
}

// RoutesBackend reports the node's route table.
type RoutesBackend interface {
	RouteTable(ctx context.Context) (RouteTable, error)
}

// Router maps a data-plane request's Host and path to a service and the
// path to proxy to it (ok false: no route).
type Router func(host, path string) (service, proxyPath string, ok bool)

// WithRoutes serves GET /v1/routes from r.
func WithRoutes(r RoutesBackend) Option { return func(a *API) { a.routing = r } }

func (a *API) routingRoutes() {
	if a.routing != nil {
		a.handle("GET /v1/routes", a.routeTable)
	}
}

func (a *API) routeTable(w http.ResponseWriter, r *http.Request) error {
	if err := onlyQuery(r); err != nil {
		return err
	}
	t, err := a.routing.RouteTable(r.Context())
	if err != nil {
		return err
	}
	if t.Routes == nil {
		t.Routes = []upstreams.Route{}
	}
	if t.Services == nil {
		t.Services = []ServiceUpstreams{}
	}
	return WriteJSON(w, http.StatusOK, t)
}

// onlyQuery refuses any query parameter: the route table takes none.
func onlyQuery(r *http.Request) error {
	for k := range r.URL.Query() {
		return Errorf(http.StatusBadRequest, "bad_query", "unknown query parameter %q: GET /v1/routes takes none", k)
	}
	return nil
}

// SetRouter makes the data plane route requests outside /svc/ by Host and
// path prefix: a routed request is served as /svc/{service}{path} would
// be (the same ACLs, the same proxy). Call before Serve.
func (d *DataPlane) SetRouter(r Router) { d.router = r }

// routed rewrites a routed request to its /svc/ form; false when no route
// matches. An encoded '/' or '\' is refused as on /svc/.
func (d *DataPlane) routed(r *http.Request) (bool, error) {
	if d.router == nil {
		return false, nil
	}
	svc, p, ok := d.router(r.Host, r.URL.Path)
	if !ok {
		return false, nil
	}
	raw := strings.ToLower(r.URL.EscapedPath())
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") {
		return true, Errorf(http.StatusBadRequest, "bad_path", "path %q: encoded '/' or '\\' is refused", r.URL.EscapedPath())
	}
	r.URL.Path = "/svc/" + svc + p
	r.URL.RawPath = ""
	return true, nil
}
