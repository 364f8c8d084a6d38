package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/meshgw/meshgw/dispatch"
)

// Decorator is a shared decorator as the API shows it.
type Decorator struct {
	Name    string          `json:"name"`
	Cluster string          `json:"cluster"`
	Version uint64          `json:"version"`
	Schema  json.RawMessage `json:"schema"`
	// UsedBy lists the services whose "decorator" names it.
	UsedBy []string `json:"used_by"`
}

// DecoratorsBackend keeps a cluster's shared decorators. DeleteDecorator
// refuses (409) one a service still uses.
type DecoratorsBackend interface {
	PutDecorator(ctx context.Context, cluster, name string, schema []byte, cas *uint64) (Decorator, error)
	GetDecorator(ctx context.Context, cluster, name string) (Decorator, error)
	ListDecorators(ctx context.Context, cluster string) ([]Decorator, error)
	DeleteDecorator(ctx context.Context, cluster, name string, cas *uint64) error
}

// WithDecorators serves /v1/decorators (GET: read; PUT, DELETE: write).
func WithDecorators(d DecoratorsBackend) Option { return func(a *API) { a.decorators = d } }

func (a *API) decoratorRoutes() {
	a.handle("GET /v1/decorators", a.listDecorators)
	a.handle("GET /v1/decorators/{name}", a.getDecorator)
	a.handle("PUT /v1/decorators/{name}", a.putDecorator)
	a.handle("DELETE /v1/decorators/{name}", a.deleteDecorator)
}

func decoratorName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := dispatch.ValidateName(name); err != nil {
		return "", Errorf(http.StatusBadRequest, "bad_request", "decorator name: %s", nameProblem(err))
	}
	return name, nil
}

func (a *API) listDecorators(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	ds, err := a.decorators.ListDecorators(r.Context(), c)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []Decorator{}
	}
	return WriteJSON(w, http.StatusOK, ds)
}

func (a *API) getDecorator(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	name, err := decoratorName(r)
	if err != nil {
		return err
	}
	d, err := a.decorators.GetDecorator(r.Context(), c, name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, d)
}

func (a *API) putDecorator(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := decoratorName(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, dispatch.MaxDecoratorSize+1))
	if err != nil {
		return err // a *http.MaxBytesError becomes 413
	}
	if len(body) > dispatch.MaxDecoratorSize {
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "decorator larger than %d bytes", dispatch.MaxDecoratorSize)
	}
	if err := dispatch.ValidateDecorator(body); err != nil {
		e := Errorf(http.StatusBadRequest, "invalid_decorator", "invalid decorator: %v", err)
		e.Path = "schema"
		return e
	}
	d, err := a.decorators.PutDecorator(r.Context(), c, name, body, cas)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, d)
}

func (a *API) deleteDecorator(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := decoratorName(r)
	if err != nil {
		return err
	}
	if err := a.decorators.DeleteDecorator(r.Context(), c, name, cas); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "deleted": true})
}
