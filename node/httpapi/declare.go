package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ConfigBackend serves the declarative export and import of a cluster's
// configuration, and the history of service definitions.
type ConfigBackend interface {
	// Export returns the configuration as the file shows it:
	// {"format": 1, KIND: [items...], ...}, never secret values.
	Export(ctx context.Context, cluster string) (map[string]any, error)
	// Import validates body (an export file), computes the changes and,
	// unless opts.DryRun, applies them all in one atomic write. A file
	// with problems is an *Error 400 with the result's Problems set.
	Import(ctx context.Context, cluster string, body []byte, opts ImportOptions) (ImportResult, error)
	// ServiceHistory returns a service's kept revisions, newest first.
	ServiceHistory(ctx context.Context, cluster, name string) ([]ServiceRevision, error)
	// RevertService writes revision rev of a service's definition again
	// (a new write, hence a new revision) and returns the store version.
	RevertService(ctx context.Context, cluster, name string, rev uint64) (uint64, error)
}

// ImportOptions modify an import.
type ImportOptions struct {
	DryRun bool // compute the changes, write nothing
	Prune  bool // delete what the file's kinds do not list
	// Plan, when set, is the plan of an earlier dry run: the import
	// applies only if nothing it read has changed since (409 otherwise).
	Plan string
}

// Change actions.
const (
	ChangeCreate = "create"
	ChangeUpdate = "update"
	ChangeDelete = "delete"
)

// ImportChange is one item an import creates, updates or deletes.
type ImportChange struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action string `json:"action"`
	// Version is the version read (and compared at apply); 0 for a create.
	Version uint64 `json:"version,omitempty"`
}

// ImportProblem is one thing wrong with an import file.
type ImportProblem struct {
	Kind  string `json:"kind,omitempty"`
	Index *int   `json:"index,omitempty"`
	Name  string `json:"name,omitempty"`
	Field string `json:"field,omitempty"`
	Error string `json:"error"`
}

// ImportResult is the answer to an import.
type ImportResult struct {
	DryRun  bool           `json:"dry_run"`
	Prune   bool           `json:"prune"`
	Applied bool           `json:"applied"`
	Changes []ImportChange `json:"changes"`
	// Unchanged counts the file's items equal to the cluster's; Kept the
	// cluster's items the file does not list (deleted with prune).
	Unchanged int `json:"unchanged"`
	Kept      int `json:"kept"`
	// Plan fingerprints what the import read; give it back with ?plan=
	// to apply exactly the diff a dry run showed.
	Plan     string          `json:"plan"`
	Problems []ImportProblem `json:"problems,omitempty"`
}

// ServiceRevision is one kept definition of a service.
type ServiceRevision struct {
	Revision   uint64          `json:"revision"`
	WrittenAt  time.Time       `json:"written_at"`
	Current    bool            `json:"current"`
	Definition json.RawMessage `json:"definition"`
}

// WithConfig serves export, import and service history. Who may call
// them (ACLs on):
//
//	GET  /v1/export                        read
//	POST /v1/import                        manage (it may create schedules, which run services)
//	GET  /v1/services/{name}/history       read
//	POST /v1/services/{name}/revert        write
//
// Export and import are for the node's own cluster; history and revert
// take ?cluster= as every /v1/services route.
func WithConfig(c ConfigBackend) Option { return func(a *API) { a.config = c } }

func (a *API) configRoutes() {
	a.handle("GET /v1/export", a.export)
	a.handle("POST /v1/import", a.importConfig)
	a.handle("GET /v1/services/{name}/history", a.serviceHistory)
	a.handle("POST /v1/services/{name}/revert", a.revertService)
}

func (a *API) export(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	out, err := a.config.Export(r.Context(), a.b.LocalCluster())
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, out)
}

func (a *API) importConfig(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "dry_run", "prune", "plan")
	if err != nil {
		return err
	}
	var opts ImportOptions
	if opts.DryRun, err = boolParam(q, "dry_run"); err != nil {
		return err
	}
	if opts.Prune, err = boolParam(q, "prune"); err != nil {
		return err
	}
	opts.Plan = q.Get("plan")
	if len(opts.Plan) > 64 {
		return Errorf(http.StatusBadRequest, "bad_query", "plan: longer than 64 characters")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	res, err := a.config.Import(r.Context(), a.b.LocalCluster(), body, opts)
	var e *Error
	if errors.As(err, &e) && len(res.Problems) > 0 {
		return WriteJSON(w, e.Status, struct {
			*Error
			Problems []ImportProblem `json:"problems"`
		}{e, res.Problems})
	}
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, res)
}

func (a *API) serviceHistory(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	revs, err := a.config.ServiceHistory(r.Context(), c, name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"service": name, "cluster": c, "revisions": revs})
}

func (a *API) revertService(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "revision")
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	rev, err := strconv.ParseUint(q.Get("revision"), 10, 64)
	if err != nil || rev == 0 {
		return Errorf(http.StatusBadRequest, "bad_query", "revision %q: want a revision number from the service's history", q.Get("revision"))
	}
	v, err := a.config.RevertService(r.Context(), c, name, rev)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "version": v, "reverted_to": rev})
}
