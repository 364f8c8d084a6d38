package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
)

// ExecBackend runs services and reads execution records.
type ExecBackend interface {
	// Run executes service with input; with opts.Async it returns once the
	// execution is durably queued. opts.OnOutput, when set, receives output
	// chunks while the process runs.
	Run(ctx context.Context, cluster, service string, input []byte, opts RunOptions) (dispatch.Execution, error)
	GetExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error)
	ListExecutions(ctx context.Context, cluster string, f ExecFilter) ([]dispatch.Execution, error)
	// Watch calls emit for live output until the execution is terminal and
	// returns its final record.
	Watch(ctx context.Context, cluster, id string, emit func(stream string, data []byte)) (dispatch.Execution, error)
	// CancelExecution stops an execution (any node; dispatch.Cancel) and
	// returns its record: cancelled, or with an *Error 409
	// "already_finished" when it ended otherwise.
	CancelExecution(ctx context.Context, cluster, id string) (dispatch.Execution, error)
	// ProxyHTTP forwards r to the http service through a runner.
	ProxyHTTP(w http.ResponseWriter, r *http.Request, cluster, service, path string) error
}

// RunOptions modify a run.
type RunOptions struct {
	Async          bool
	IdempotencyKey string
	OnOutput       func(stream string, data []byte)
}

// ExecFilter selects executions, newest first.
type ExecFilter struct {
	Service string
	Status  string
	Limit   int
}

// WithExec serves runs, executions and the /svc/ proxy.
// An e that is also a FastProxy serves data-plane calls natively.
func WithExec(e ExecBackend) Option {
	return func(a *API) {
		a.exec = e
		a.fast, _ = e.(FastProxy)
	}
}

func (a *API) execRoutes() {
	a.handle("POST /v1/services/{name}/run", a.run)
	a.handle("GET /v1/executions", a.listExecutions)
	a.handle("GET /v1/executions/{id}", a.getExecution)
	a.handle("GET /v1/executions/{id}/watch", a.watchExecution)
	a.handle("POST /v1/executions/{id}/cancel", a.cancelExecution)
	a.handle("/svc/{name}/{path...}", a.proxy)
	a.handle("/svc/{name}", a.proxy)
}

// execView is the API's execution JSON: the run response plus the record's
// bookkeeping.
type execView struct {
	dispatch.RunResponse
	Cluster        string             `json:"cluster"`
	AcceptedBy     string             `json:"accepted_by"`
	Async          bool               `json:"async"`
	IdempotencyKey string             `json:"idempotency_key,omitempty"`
	CreatedAt      time.Time          `json:"created_at"`
	StartedAt      time.Time          `json:"started_at,omitzero"`
	FinishedAt     time.Time          `json:"finished_at,omitzero"`
	History        []dispatch.Attempt `json:"history,omitempty"`
	// CancelRequestedAt: a cancel was recorded (the run may still be
	// stopping).
	CancelRequestedAt time.Time `json:"cancel_requested_at,omitzero"`
	// Schedule and ScheduledAt: the schedule and tick that started it.
	Schedule    string    `json:"schedule,omitempty"`
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
}

func view(e dispatch.Execution) execView {
	return execView{RunResponse: e.Response(), Cluster: e.Cluster, AcceptedBy: e.AcceptedBy, Async: e.Async,
		IdempotencyKey: e.IdempotencyKey, CreatedAt: e.CreatedAt, StartedAt: e.StartedAt, FinishedAt: e.FinishedAt, History: e.History,
		CancelRequestedAt: e.CancelRequestedAt, Schedule: e.Schedule, ScheduledAt: e.ScheduledAt}
}

func (a *API) run(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "async", "stream")
	if err != nil {
		return err
	}
	name, err := serviceName(r)
	if err != nil {
		return err
	}
	async, err := boolParam(q, "async")
	if err != nil {
		return err
	}
	stream, err := boolParam(q, "stream")
	if err != nil {
		return err
	}
	if async && stream {
		return Errorf(http.StatusBadRequest, "bad_query", "async and stream exclude each other")
	}
	input, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(input))) == 0 {
		input = []byte("{}")
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 128 {
		return Errorf(http.StatusBadRequest, "bad_request", "Idempotency-Key longer than 128 bytes")
	}
	release, err := a.admit(r.Context(), w, netRequest{r}, tokenOf(r.Context()), c, name)
	if err != nil {
		return err
	}
	defer release()
	opts := RunOptions{Async: async, IdempotencyKey: key}
	if stream {
		return a.runStreaming(w, r, c, name, input, opts)
	}
	e, err := a.exec.Run(r.Context(), c, name, input, opts)
	noteExecution(r.Context(), e.ID) // the run's central log entry (logs.go)
	if err != nil {
		return err
	}
	if async {
		return WriteJSON(w, http.StatusAccepted, map[string]any{"execution_id": e.ID, "service": e.Service, "status": e.Status})
	}
	return WriteJSON(w, http.StatusOK, e.Response())
}

// runStreaming answers with newline-delimited JSON events: output chunks
// {"stream","data"} while the process runs, then {"execution": {...}}.
func (a *API) runStreaming(w http.ResponseWriter, r *http.Request, cluster, name string, input []byte, opts RunOptions) error {
	ew := a.newEventWriter(w)
	opts.OnOutput = ew.output
	e, err := a.exec.Run(r.Context(), cluster, name, input, opts)
	noteExecution(r.Context(), e.ID) // the run's central log entry (logs.go)
	return ew.finish(e, err)
}

func (a *API) getExecution(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !dispatch.ValidID(id) {
		return Errorf(http.StatusNotFound, "not_found", "execution %q not found", id)
	}
	e, err := a.exec.GetExecution(r.Context(), c, id)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, view(e))
}

func (a *API) listExecutions(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "service", "status", "limit")
	if err != nil {
		return err
	}
	f := ExecFilter{Service: q.Get("service"), Status: q.Get("status")}
	if f.Service != "" {
		if err := dispatch.ValidateName(f.Service); err != nil {
			return Errorf(http.StatusBadRequest, "bad_query", "service: %v", err)
		}
	}
	if f.Status != "" && !dispatch.ValidStatus(f.Status) {
		return Errorf(http.StatusBadRequest, "bad_query", "status %q: want queued, running, succeeded, failed, timed_out, lost or cancelled", f.Status)
	}
	if f.Limit, err = intParam(q, "limit", 100, 1, 1000); err != nil {
		return err
	}
	es, err := a.exec.ListExecutions(r.Context(), c, f)
	if err != nil {
		return err
	}
	out := make([]execView, len(es))
	for i, e := range es {
		out[i] = view(e)
	}
	return WriteJSON(w, http.StatusOK, out)
}

func (a *API) watchExecution(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !dispatch.ValidID(id) {
		return Errorf(http.StatusNotFound, "not_found", "execution %q not found", id)
	}
	ew := a.newEventWriter(w)
	e, err := a.exec.Watch(r.Context(), c, id, ew.output)
	return ew.finish(e, err)
}

// cancelExecution answers 200 with the cancelled record (also on a second
// cancel), 202 with the running record when the cancel is recorded but the
// driver has not ended the run yet, 409 already_finished (with the record)
// when it ended otherwise.
func (a *API) cancelExecution(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if !dispatch.ValidID(id) {
		return Errorf(http.StatusNotFound, "not_found", "execution %q not found", id)
	}
	// The permission depends on the execution's service (run:GLOB), which
	// only its record names: refuse tokens that could cancel nothing
	// before reading it.
	if err := mayCancel(r, ""); err != nil {
		return err
	}
	cur, err := a.exec.GetExecution(r.Context(), c, id)
	if err != nil {
		return err
	}
	if err := mayCancel(r, cur.Service); err != nil {
		return err
	}
	e, err := a.exec.CancelExecution(r.Context(), c, id)
	var ae *Error
	switch {
	case errors.As(err, &ae) && ae.Code == "already_finished" && e.ID != "":
		return WriteJSON(w, ae.Status, struct {
			*Error
			Execution execView `json:"execution"`
		}{ae, view(e)})
	case err != nil:
		return err
	case e.Status != dispatch.StatusCancelled:
		return WriteJSON(w, http.StatusAccepted, view(e))
	}
	return WriteJSON(w, http.StatusOK, view(e))
}

// mayCancel checks, when the request is checked, that its token may cancel
// an execution of service: write (or manage), or run for that service.
// With service "", whether it may cancel any at all.
func mayCancel(r *http.Request, service string) error {
	t, ok := TokenFrom(r.Context())
	if !ok || t.Allows(PermWrite, "") {
		return nil
	}
	if service != "" && t.Allows(PermRun, service) {
		return nil
	}
	if service == "" {
		for _, p := range t.Policies {
			if p == PermRun || strings.HasPrefix(p, PermRun+":") {
				return nil
			}
		}
	}
	what := "run:" + service
	if service == "" {
		what = "run"
	}
	return Errorf(http.StatusForbidden, "forbidden", "token %s lacks the %q (or write) permission to cancel",
		t.AccessorID, what)
}

func (a *API) proxy(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	c, ok := clusterFrom(r.Context())
	if !ok {
		c = a.b.LocalCluster()
	}
	return a.proxyCall(r.Context(), w, netRequest{r}, tokenOf(r.Context()), c, name, "/"+r.PathValue("path"), func() error {
		return a.exec.ProxyHTTP(w, r, c, name, "/"+r.PathValue("path"))
	})
}

// proxyCall is a /svc/ call of service name (path p below it) once access
// allowed it, on either listener: the name and path checks, the limits,
// then proxy (the exchange, or the cache).
func (a *API) proxyCall(ctx context.Context, w http.ResponseWriter, r Request, tok *Token, cluster, name, p string, proxy func() error) error {
	if err := dispatch.ValidateName(name); err != nil {
		return Errorf(http.StatusNotFound, "not_found", "service %q: %v", name, err)
	}
	if err := checkProxyPath(r.EscapedPath(), p); err != nil {
		return err
	}
	release, err := a.admit(ctx, w, r, tok, cluster, name)
	if err != nil {
		return err
	}
	defer release()
	return proxy()
}

// checkProxyPath refuses (400) a /svc/ path that could leave its upstream's
// base path: an encoded '/' or '\' in the request (the mux decoded it into
// a segment), or what runner.JoinPath refuses in the decoded path p. The
// runner checks again; this makes the answer a 400 on both listeners.
func checkProxyPath(escaped, p string) error {
	raw := strings.ToLower(escaped)
	if strings.Contains(raw, "%2f") || strings.Contains(raw, "%5c") {
		return Errorf(http.StatusBadRequest, "bad_path", "path %q: encoded '/' or '\\' is refused", escaped)
	}
	if _, err := runner.JoinPath("/", p); err != nil {
		return Errorf(http.StatusBadRequest, "bad_path", "%v", err)
	}
	return nil
}

func boolParam(q map[string][]string, name string) (bool, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	switch v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, Errorf(http.StatusBadRequest, "bad_query", "%s %q: want true or false", name, v)
}
