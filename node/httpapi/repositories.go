package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/meshgw/meshgw/dispatch"
)

// RepositoryBackend serves the Git repositories services take their files
// from (dispatch.Repository, stored under repository/<name>). Errors
// follow the Backend rules.
//
// Who may call: GET (list, get) needs read; PUT and DELETE need write
// (permFor's defaults). A definition holds no credential, only the name
// of the secret that has it, so a read shows nothing secret.
type RepositoryBackend interface {
	PutRepository(ctx context.Context, cluster string, r dispatch.Repository, cas *uint64) (uint64, error)
	GetRepository(ctx context.Context, cluster, name string) (dispatch.Repository, error)
	ListRepositories(ctx context.Context, cluster string) ([]dispatch.Repository, error)
	DeleteRepository(ctx context.Context, cluster, name string, cas *uint64) error
}

// WithRepositories serves /v1/repositories.
func WithRepositories(b RepositoryBackend) Option { return func(a *API) { a.repos = b } }

func (a *API) repositoryRoutes() {
	a.handle("GET /v1/repositories", a.listRepositories)
	a.handle("GET /v1/repositories/{name}", a.getRepository)
	a.handle("PUT /v1/repositories/{name}", a.putRepository)
	a.handle("DELETE /v1/repositories/{name}", a.deleteRepository)
}

func repositoryName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := dispatch.ValidateName(name); err != nil {
		return "", Errorf(http.StatusBadRequest, "bad_request", "repository name: %s", err.(*dispatch.ValidationError).Message)
	}
	return name, nil
}

func invalidRepository(err error) error {
	var ve *dispatch.ValidationError
	if !errors.As(err, &ve) {
		return Errorf(http.StatusBadRequest, "invalid_repository", "invalid repository: %v", err)
	}
	msg := "invalid repository: " + ve.Message
	if ve.Field != "" {
		msg = "invalid repository: " + ve.Field + ": " + ve.Message
	}
	e := Errorf(http.StatusBadRequest, "invalid_repository", "%s", msg)
	e.Path = ve.Field
	return e
}

func (a *API) listRepositories(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	rs, err := a.repos.ListRepositories(r.Context(), c)
	if err != nil {
		return err
	}
	if rs == nil {
		rs = []dispatch.Repository{}
	}
	return WriteJSON(w, http.StatusOK, rs)
}

func (a *API) getRepository(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	name, err := repositoryName(r)
	if err != nil {
		return err
	}
	repo, err := a.repos.GetRepository(r.Context(), c, name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, repo)
}

func (a *API) putRepository(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := repositoryName(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, dispatch.MaxRepositorySize+1))
	if err != nil {
		return err // a *http.MaxBytesError becomes 413
	}
	if len(body) > dispatch.MaxRepositorySize {
		return Errorf(http.StatusRequestEntityTooLarge, "too_large", "repository definition larger than %d bytes", dispatch.MaxRepositorySize)
	}
	repo, err := dispatch.ParseRepository(body)
	var ve *dispatch.ValidationError
	if repo.Name == "" && errors.As(err, &ve) && ve.Field == "name" {
		repo.Name, err = name, nil
		if err = repo.Validate(); err != nil {
			return invalidRepository(err)
		}
	} else if err != nil {
		return invalidRepository(err)
	}
	if repo.Name != name {
		return Errorf(http.StatusBadRequest, "invalid_repository", "invalid repository: name: %q in the body does not match %q in the path", repo.Name, name)
	}
	version, err := a.repos.PutRepository(r.Context(), c, repo, cas)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "version": version})
}

func (a *API) deleteRepository(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := repositoryName(r)
	if err != nil {
		return err
	}
	if err := a.repos.DeleteRepository(r.Context(), c, name, cas); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "deleted": true})
}
