package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/meshgw/meshgw/dispatch"
)

// StateBackend serves the replicated resources: services and clusters.
// Errors follow the Backend rules (*Error for a specific status).
type StateBackend interface {
	PutService(ctx context.Context, cluster string, svc dispatch.Service, cas *uint64) (uint64, error)
	GetService(ctx context.Context, cluster, name string) (dispatch.Service, error)
	ListServices(ctx context.Context, cluster string) ([]dispatch.Service, error)
	DeleteService(ctx context.Context, cluster, name string, cas *uint64) error
	Clusters(ctx context.Context) ([]Cluster, error)
	Snapshot(ctx context.Context, cluster string) ([]byte, error)
	Restore(ctx context.Context, cluster string, data []byte) error
}

// Cluster is one cluster ID known to the mesh.
type Cluster struct {
	ID      string `json:"id"`
	Members int    `json:"members"`
	Alive   int    `json:"alive"`
	Runners int    `json:"runners"`
	Leader  string `json:"leader,omitempty"`
	ShardID uint64 `json:"shard_id,omitempty"`
}

// WithState serves /v1/services, /v1/clusters and /v1/snapshot.
func WithState(s StateBackend) Option { return func(a *API) { a.state = s } }

func (a *API) stateRoutes() {
	a.handle("GET /v1/services", a.listServices)
	a.handle("GET /v1/services/{name}", a.getService)
	a.handle("PUT /v1/services/{name}", a.putService)
	a.handle("DELETE /v1/services/{name}", a.deleteService)
	a.handle("GET /v1/clusters", a.clusters)
	a.handle("GET /v1/snapshot", a.snapshot)
	a.handle("PUT /v1/snapshot", a.restore)
	a.handle("POST /v1/snapshot", a.restore)
}

// clusterQuery parses the query (cluster plus the extra keys allowed) and
// returns it with the cluster the request is about.
func (a *API) clusterQuery(r *http.Request, extra ...string) (url.Values, string, error) {
	q, err := query(r, append([]string{"cluster"}, extra...)...)
	if err != nil {
		return nil, "", err
	}
	if c, ok := clusterFrom(r.Context()); ok {
		return q, c, nil
	}
	c, err := a.cluster(q)
	return q, c, err
}

// cluster returns ?cluster= or the node's own.
func (a *API) cluster(q url.Values) (string, error) {
	c := q.Get("cluster")
	if c == "" {
		return a.b.LocalCluster(), nil
	}
	return c, checkName("cluster", c, false)
}

func casParam(q url.Values) (*uint64, error) {
	s := q.Get("cas")
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "bad_query", "cas %q: want a version number", s)
	}
	return &v, nil
}

func serviceName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := dispatch.ValidateName(name); err != nil {
		return "", Errorf(http.StatusBadRequest, "bad_request", "service name: %v", err)
	}
	return name, nil
}

func (a *API) listServices(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	svcs, err := a.state.ListServices(r.Context(), c)
	if err != nil {
		return err
	}
	if svcs == nil {
		svcs = []dispatch.Service{}
	}
	return WriteJSON(w, http.StatusOK, svcs)
}

func (a *API) getService(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	svc, err := a.state.GetService(r.Context(), c, name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, svc)
}

func (a *API) putService(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err // a *http.MaxBytesError becomes 413
	}
	if len(body) > dispatch.MaxServiceSize {
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "service definition larger than %d bytes", dispatch.MaxServiceSize)
	}
	svc, err := dispatch.ParseService(body)
	var ve *dispatch.ValidationError
	if svc.Name == "" && errors.As(err, &ve) && ve.Field == "name" {
		svc.Name, err = name, nil
		if err = svc.Validate(); err != nil {
			return invalidService(err)
		}
	} else if err != nil {
		return invalidService(err)
	}
	if svc.Name != name {
		return Errorf(http.StatusBadRequest, "invalid_service", "invalid service: name: %q in the body does not match %q in the path", svc.Name, name)
	}
	svc.Normalize()
	version, err := a.state.PutService(r.Context(), c, svc, cas)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "version": version})
}

func invalidService(err error) error {
	e := Errorf(http.StatusBadRequest, "invalid_service", "%v", err)
	var ve *dispatch.ValidationError
	if errors.As(err, &ve) {
		e.Path = ve.Field
	}
	return e
}

func (a *API) deleteService(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	if err := a.state.DeleteService(r.Context(), c, name, cas); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "deleted": true})
}

func (a *API) clusters(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	cs, err := a.state.Clusters(r.Context())
	if err != nil {
		return err
	}
	if cs == nil {
		cs = []Cluster{}
	}
	return WriteJSON(w, http.StatusOK, cs)
}

func (a *API) snapshot(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	data, err := a.state.Snapshot(r.Context(), c)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="meshgw-`+c+`.snap"`)
	_, err = w.Write(data)
	return err
}

func (a *API) restore(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return Errorf(http.StatusBadRequest, "bad_request", "empty snapshot")
	}
	if err := a.state.Restore(r.Context(), c, data); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"cluster": c, "restored": true, "bytes": len(data)})
}
