package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshgw/meshgw/centrallog"
)

// CentralLog is the central log as the API uses it (node adapts
// centrallog.Service): Record spools an entry on this node without
// blocking on the network; Logs and KPIs read the cluster's log.
type CentralLog interface {
	Record(e centrallog.Entry)
	Logs(ctx context.Context, q centrallog.Query) (centrallog.Result, error)
	KPIs(ctx context.Context, q centrallog.KPIQuery) ([]centrallog.KPI, error)
}

// WithCentralLog records every /svc/ request, run and administrative
// change served here, and serves GET /v1/logs and GET /v1/kpis.
func WithCentralLog(l CentralLog) Option { return func(a *API) { a.central = l } }

// followPoll is how often a follow=true stream looks for new entries.
const followPoll = 200 * time.Millisecond

func (a *API) logRoutes() {
	a.handle("GET /v1/logs", a.logs)
	a.handle("GET /v1/kpis", a.kpis)
}

// logKind is the central-log kind of a request ("" for none): /svc/
// calls, runs, and the routes that change services, tokens or keys.
func logKind(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/svc/"):
		return centrallog.KindHTTP
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/v1/services/") && strings.HasSuffix(p, "/run"):
		return centrallog.KindRun
	case (r.Method == http.MethodPut || r.Method == http.MethodDelete) && strings.HasPrefix(p, "/v1/services/"),
		(r.Method == http.MethodPut || r.Method == http.MethodPost) && p == "/v1/snapshot",
		r.Method == http.MethodPost && (p == "/v1/acl/tokens" || p == "/v1/acl/bootstrap"),
		r.Method == http.MethodDelete && strings.HasPrefix(p, "/v1/acl/tokens/"),
		r.Method == http.MethodPost && strings.HasPrefix(p, "/v1/keyring/"):
		return centrallog.KindAdmin
	}
	return ""
}

// logNote carries what a handler learns for the request's entry.
type logNote struct{ executionID string }

type logNoteKey struct{}

// noteExecution tells the request's entry which execution it started.
func noteExecution(ctx context.Context, id string) {
	if n, ok := ctx.Value(logNoteKey{}).(*logNote); ok {
		n.executionID = id
	}
}

// ProxyResult is implemented by a ResponseWriter that knows, once the
// handler returned, the status and body bytes it will send (the data
// plane's), so the central log need not wrap it and hide its fast paths.
type ProxyResult interface {
	ProxyResult() (status int, bytesOut int64)
}

// countingWriter records status and body bytes for the central log.
type countingWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts a request body of unknown length.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// serveLogged routes r and records its entry before returning, so the
// entry is spooled before the response is complete on the client's side
// (both servers finish a buffered response after the handler returns).
// It reports false, serving nothing, for requests that have no entry.
func (a *API) serveLogged(w http.ResponseWriter, r *http.Request) bool {
	kind := logKind(r)
	if kind == "" {
		return false
	}
	start := time.Now()
	note := &logNote{}
	r = r.WithContext(context.WithValue(r.Context(), logNoteKey{}, note))
	var body *countingBody
	if r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{ReadCloser: r.Body}
		r.Body = body
	}
	pr, fast := w.(ProxyResult)
	var cw *countingWriter
	if !fast {
		cw = &countingWriter{ResponseWriter: w}
		w = cw
	}
	a.mux.ServeHTTP(w, r)
	var status int
	var out, in int64
	if fast {
		status, out = pr.ProxyResult()
	} else {
		status, out = cw.code, cw.n
		if status == 0 {
			status = http.StatusOK
		}
	}
	switch {
	case body != nil:
		in = body.n
	case r.ContentLength > 0:
		in = r.ContentLength
	}
	a.record(kind, netRequest{r}, grantFrom(r.Context()), start, status, in, out, note.executionID)
	return true
}

// record spools the central log entry of a request r (of kind, started at
// start) that access decided g for, on either listener.
func (a *API) record(kind string, r Request, g *grant, start time.Time, status int, in, out int64, executionID string) {
	p := r.Path()
	e := centrallog.Entry{Time: start.UTC(), Kind: kind, Method: r.Method(), Path: p,
		DurationMS: float64(time.Since(start).Microseconds()) / 1000, ExecutionID: executionID,
		Status: status, BytesIn: in, BytesOut: out}
	if f, ok := r.(*fastRequest); ok {
		e.ClientIP = f.clientIP()
	} else {
		e.ClientIP = hostOnly(r.RemoteAddr())
	}
	if g != nil {
		e.Cluster = g.cluster
		if g.token != nil {
			e.TokenAccessor = g.token.AccessorID
		}
	}
	e.Service = logService(p)
	a.central.Record(e)
}

// hostOnly is a remote address without its port (as it is without one).
func hostOnly(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// logService is the service a logged path is about ("" for none).
func logService(p string) string {
	if name, ok := svcName(p); ok {
		return name
	}
	if rest, ok := strings.CutPrefix(p, "/v1/services/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	return ""
}

// logQuery parses /v1/logs' filters.
func logQuery(r *http.Request) (centrallog.Query, bool, error) {
	q, err := query(r, "service", "kind", "status", "since", "until", "limit", "after", "follow")
	if err != nil {
		return centrallog.Query{}, false, err
	}
	lq := centrallog.Query{Service: q.Get("service"), Kind: q.Get("kind"), Status: q.Get("status")}
	if lq.Limit, err = intParam(q, "limit", 100, 1, centrallog.MaxLimit); err != nil {
		return lq, false, err
	}
	if s := q.Get("after"); s != "" {
		if lq.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			return lq, false, Errorf(http.StatusBadRequest, "bad_query", "after: %q is not a cursor (X-Log-Cursor of an earlier answer)", s)
		}
	}
	if lq.Since, err = timeParam(q.Get("since"), "since"); err != nil {
		return lq, false, err
	}
	if lq.Until, err = timeParam(q.Get("until"), "until"); err != nil {
		return lq, false, err
	}
	follow, err := boolParam(q, "follow")
	if err != nil {
		return lq, false, err
	}
	if err := lq.Validate(); err != nil {
		return lq, false, Errorf(http.StatusBadRequest, "bad_query", "%v", err)
	}
	return lq, follow, nil
}

// timeParam parses an RFC 3339 time or a duration back from now ("15m").
func timeParam(s, name string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return time.Now().Add(-d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, Errorf(http.StatusBadRequest, "bad_query", "%s: %q is neither an RFC 3339 time nor a duration like 15m", name, s)
	}
	return t, nil
}

// logs answers GET /v1/logs: a JSON array of entries, oldest first, with
// the cursor for ?after= in X-Log-Cursor; with follow=true, the matching
// entries as newline-delimited JSON, then every new one as it is stored,
// until the client goes away.
func (a *API) logs(w http.ResponseWriter, r *http.Request) error {
	q, follow, err := logQuery(r)
	if err != nil {
		return err
	}
	res, err := a.central.Logs(r.Context(), q)
	if err != nil {
		return logError(err)
	}
	entries := make([]centrallog.Entry, len(res.Entries))
	for i, st := range res.Entries {
		entries[i] = st.Entry
	}
	w.Header().Set("X-Log-Cursor", strconv.FormatUint(res.Cursor, 10))
	if !follow {
		return WriteJSON(w, http.StatusOK, entries)
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	write := func(es []centrallog.Stored) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(a.cfg.StreamWriteTimeout))
		for _, st := range es {
			if enc.Encode(st.Entry) != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	if !write(res.Entries) {
		return nil
	}
	q.After, q.Limit = res.Cursor, centrallog.MaxLimit
	tick := time.NewTicker(followPoll)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-tick.C:
		}
		res, err := a.central.Logs(r.Context(), q)
		if err != nil {
			continue // a failover: the next poll finds the new logger
		}
		if !write(res.Entries) {
			return nil
		}
		q.After = res.Cursor
	}
}

// kpis answers GET /v1/kpis?service=&window=1m&since=&until=.
func (a *API) kpis(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "service", "window", "since", "until")
	if err != nil {
		return err
	}
	kq := centrallog.KPIQuery{Service: q.Get("service"), Window: time.Minute}
	if s := q.Get("window"); s != "" {
		if kq.Window, err = time.ParseDuration(s); err != nil {
			return Errorf(http.StatusBadRequest, "bad_query", "window: %q is not a duration like 1m", s)
		}
	}
	if kq.Since, err = timeParam(q.Get("since"), "since"); err != nil {
		return err
	}
	if kq.Until, err = timeParam(q.Get("until"), "until"); err != nil {
		return err
	}
	if err := kq.Validate(); err != nil {
		return Errorf(http.StatusBadRequest, "bad_query", "%v", err)
	}
	out, err := a.central.KPIs(r.Context(), kq)
	if err != nil {
		return logError(err)
	}
	if out == nil {
		out = []centrallog.KPI{}
	}
	return WriteJSON(w, http.StatusOK, out)
}

// logError: the log cannot be read from here right now (no logger, no
// quorum of the log shard): 503, retry.
func logError(err error) error {
	if _, ok := err.(*Error); ok {
		return err
	}
	return Errorf(http.StatusServiceUnavailable, "log_unavailable", "the central log cannot be read now: %v; retry shortly", err).WithRetryAfter(1)
}
