package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Member is one mesh member as the API shows it.
type Member struct {
	Name    string            `json:"name"`
	Addr    string            `json:"addr"`
	Status  string            `json:"status"`
	Cluster string            `json:"cluster"`
	Roles   []string          `json:"roles"`
	Tags    map[string]string `json:"tags"`
	Version string            `json:"version,omitempty"`
	RPCAddr string            `json:"rpc_addr,omitempty"`
	HTTP    string            `json:"http_addr,omitempty"`
	// Refused says why this node and the member refuse each other's TLS
	// (a foreign CA): it is then never a runner, voter or forwarding
	// target of this node, whatever its gossip status.
	Refused string `json:"refused,omitempty"`
}

// MemberFilter selects members; empty fields match everything.
type MemberFilter struct {
	Cluster string
	Role    string
	Status  string
	Tags    map[string]string
}

// Status is the node's view of itself and its Raft groups.
type Status struct {
	Node    string         `json:"node"`
	Cluster string         `json:"cluster"`
	Roles   []string       `json:"roles"`
	Version string         `json:"version"`
	Members map[string]int `json:"members"`
	Groups  []GroupStatus  `json:"groups"`
	// Stale: clusters served from this node's last known state (stale.go).
	Stale []StaleStatus `json:"stale,omitempty"`
}

// GroupStatus describes one Raft group as seen from this node.
type GroupStatus struct {
	Cluster      string    `json:"cluster"`
	ShardID      uint64    `json:"shard_id"`
	Leader       string    `json:"leader"`
	LeaderID     uint64    `json:"leader_replica_id"`
	Term         uint64    `json:"term"`
	AppliedIndex uint64    `json:"applied_index"`
	Local        bool      `json:"local"`
	Replicas     []Replica `json:"replicas"`
	// HeartbeatMs and ElectionTimeoutMs are this node's Raft timings (-raft-rtt).
	HeartbeatMs       int64 `json:"heartbeat_ms,omitempty"`
	ElectionTimeoutMs int64 `json:"election_timeout_ms,omitempty"`
}

// Replica is one member of a Raft group.
type Replica struct {
	ID   uint64 `json:"id"`
	Node string `json:"node"`
	Addr string `json:"addr"`
}

// Backend is what the API needs from the agent. Methods must be safe for
// concurrent use. Errors that should reach the client with a specific status
// are *Error values (or wrap one); anything else is a 500.
type Backend interface {
	// Ready returns nil once the agent serves requests.
	Ready() error
	// LocalCluster is the cluster used when a request names none.
	LocalCluster() string
	// Members lists the mesh as gossip sees it.
	Members(f MemberFilter) []Member
	// Status reports this node and its Raft groups.
	Status(ctx context.Context) (Status, error)
	// Leave starts a graceful leave and shutdown of the agent.
	Leave(ctx context.Context) error
}

// Config holds the API's bounds.
type Config struct {
	// MaxBodyBytes bounds every request body; larger ones get 413.
	MaxBodyBytes int64
	// StreamWriteTimeout bounds each write of an event stream (a streamed
	// run, a watch): a client that takes longer to take one is cut.
	StreamWriteTimeout time.Duration
}

// maxSnapshotBytes bounds a snapshot restore body.
const maxSnapshotBytes = 512 << 20

// DefaultConfig returns the API's default bounds.
func DefaultConfig() Config {
	return Config{MaxBodyBytes: 4 << 20, StreamWriteTimeout: 10 * time.Second}
}

// API is the HTTP handler of the client API.
type API struct {
	cfg     Config
	b       Backend
	metrics http.Handler
	// publicMetrics opens /metrics to scrapers without a token.
	publicMetrics bool
	state         StateBackend  // optional: services, clusters, snapshots
	acl           TokenStore    // optional: token checks
	aclFlag       bool          // this node runs -acl: every request is checked
	policies      ProxyPolicies // optional: public and pass_authorization services
	exec          ExecBackend   // optional: runs, executions, proxy
	fast          FastProxy     // exec, when it serves data-plane calls natively (native.go)
	keyring       KeyringBackend
	ready         Readiness       // optional: /v1/ready and the leave guard
	roles         RolesBackend    // optional: /v1/roles
	observe       RequestObserver // optional: metrics
	routing       RoutesBackend   // optional: /v1/routes (routes.go)
	central       CentralLog      // optional: the central log (logs.go)
	throttle      Throttler       // optional: limits, max_in_flight, /v1/throttles (throttle.go)
	log           zerolog.Logger
	mux           *http.ServeMux
	console       http.Handler      // optional: the web console at /ui/
	repos         RepositoryBackend // optional: /v1/repositories (repositories.go)
	schedules     ScheduleBackend   // optional: /v1/schedules
	config        ConfigBackend     // optional: /v1/export, /v1/import, service history
	secrets       SecretsBackend    // optional: /v1/secrets
	decorators    DecoratorsBackend // optional: /v1/decorators
	cache         CacheBackend      // optional: /v1/cache (cache.go)
}

// Option adds optional parts to the API.
type Option func(*API)

// WithMetrics serves h at /metrics. With public set, /metrics needs no
// token under ACLs (for scrapers); it shows counts, never secrets.
func WithMetrics(h http.Handler, public bool) Option {
	return func(a *API) { a.metrics, a.publicMetrics = h, public }
}

// New builds the API over b.
func New(cfg Config, b Backend, log zerolog.Logger, opts ...Option) *API {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultConfig().MaxBodyBytes
	}
	if cfg.StreamWriteTimeout <= 0 {
		cfg.StreamWriteTimeout = DefaultConfig().StreamWriteTimeout
	}
	a := &API{cfg: cfg, b: b, log: log.With().Str("component", "http").Logger(), mux: http.NewServeMux()}
	for _, o := range opts {
		o(a)
	}
	a.routes()
	return a
}

func (a *API) routes() {
	a.handle("GET /v1/health", a.health)
	a.handle("GET /v1/members", a.members)
	a.handle("GET /v1/runners", a.runners)
	a.handle("GET /v1/status", a.status)
	a.handle("GET /v1/ready", a.readiness)
	a.handle("POST /v1/agent/leave", a.leaveChecked)
	a.handle("PUT /v1/agent/leave", a.leaveChecked)
	if a.metrics != nil {
		a.mux.Handle("GET /metrics", a.metrics)
	}
	if a.state != nil {
		a.stateRoutes()
	}
	if a.acl != nil {
		a.aclRoutes()
	}
	if a.exec != nil {
		a.execRoutes()
	}
	if a.keyring != nil {
		a.keyringRoutes()
	}
	if a.roles != nil {
		a.handle("GET /v1/roles", a.rolesList)
	}
	if a.console != nil {
		a.consoleRoutes() // the web console's static assets
	}
	if a.repos != nil {
		a.repositoryRoutes()
	}
	if a.schedules != nil {
		a.scheduleRoutes()
	}
	if a.config != nil {
		a.configRoutes()
	}
	if a.secrets != nil {
		a.secretRoutes()
	}
	if a.decorators != nil {
		a.decoratorRoutes()
	}
	if a.cache != nil {
		a.cacheRoutes() // the response cache (cache.go)
	}
	a.routingRoutes() // GET /v1/routes (routes.go)
	if a.central != nil {
		a.logRoutes() // GET /v1/logs, /v1/kpis (logs.go)
	}
	if a.throttle != nil {
		a.handle("GET /v1/throttles", a.throttles)
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, Errorf(http.StatusNotFound, "not_found", "no route for %s %s", r.Method, r.URL.Path))
	})
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (a *API) handle(pattern string, h handlerFunc) {
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			// Internal errors are worth a warning; expected ones (4xx, and
			// 5xx that say "retry later") would only spam the log.
			var e *Error
			if !errors.As(err, &e) || e.Status == http.StatusInternalServerError {
				a.log.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
			} else {
				a.log.Debug().Err(err).Int("status", e.Status).Str("path", r.URL.Path).Msg("request refused")
			}
			WriteError(w, err)
		}
	})
}

// ServeHTTP implements http.Handler: bounds the body, checks access, routes,
// and turns a panic in a handler into a 500 instead of a dead connection.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.observe != nil {
		a.observed(w, r, a.serve)
		return
	}
	a.serve(w, r)
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panic")
			WriteError(w, Errorf(http.StatusInternalServerError, "internal", "internal error"))
		}
	}()
	if r.Body != nil {
		limit := a.cfg.MaxBodyBytes
		if r.URL.Path == "/v1/snapshot" {
			limit = maxSnapshotBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	r, err := a.access(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/svc/") {
		if stripCredential(grantFrom(r.Context()), r.Header.Get("Authorization")) {
			r.Header.Del("Authorization")
		}
		r.Header.Del(TokenHeader)
	}
	if a.central != nil && a.serveLogged(w, r) {
		return // routed, and its central log entry recorded (logs.go)
	}
	a.mux.ServeHTTP(w, r)
}

func (a *API) health(w http.ResponseWriter, r *http.Request) error {
	if err := a.b.Ready(); err != nil {
		return Errorf(http.StatusServiceUnavailable, "not_ready", "%v", err).WithRetryAfter(1)
	}
	return WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

var validStatus = map[string]bool{"alive": true, "suspect": true, "failed": true, "left": true}
var validRole = map[string]bool{"gateway": true, "runner": true}

// memberFilter parses ?cluster= ?role= ?status= ?tag=k=v (repeatable).
func memberFilter(r *http.Request) (MemberFilter, error) {
	q, err := query(r, "cluster", "role", "status", "tag")
	if err != nil {
		return MemberFilter{}, err
	}
	f := MemberFilter{Cluster: q.Get("cluster"), Role: q.Get("role"), Status: q.Get("status")}
	if f.Status != "" && !validStatus[f.Status] {
		return f, Errorf(http.StatusBadRequest, "bad_query", "status %q: want alive, suspect, failed or left", f.Status)
	}
	if f.Role != "" && !validRole[f.Role] {
		return f, Errorf(http.StatusBadRequest, "bad_query", "role %q: want gateway or runner", f.Role)
	}
	if err := checkName("cluster", f.Cluster, true); err != nil {
		return f, err
	}
	for _, t := range q["tag"] {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return f, Errorf(http.StatusBadRequest, "bad_query", "tag %q: want k=v", t)
		}
		if f.Tags == nil {
			f.Tags = map[string]string{}
		}
		f.Tags[k] = v
	}
	return f, nil
}

func (a *API) members(w http.ResponseWriter, r *http.Request) error {
	f, err := memberFilter(r)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, nonNil(a.b.Members(f)))
}

func (a *API) runners(w http.ResponseWriter, r *http.Request) error {
	f, err := memberFilter(r)
	if err != nil {
		return err
	}
	if f.Role != "" && f.Role != "runner" {
		return Errorf(http.StatusBadRequest, "bad_query", "runners has role runner; got role %q", f.Role)
	}
	f.Role = "runner"
	if f.Cluster == "" {
		f.Cluster = a.b.LocalCluster()
	}
	return WriteJSON(w, http.StatusOK, nonNil(a.b.Members(f)))
}

func nonNil(m []Member) []Member {
	if m == nil {
		return []Member{}
	}
	for i := range m {
		if m[i].Roles == nil {
			m[i].Roles = []string{}
		}
		if m[i].Tags == nil {
			m[i].Tags = map[string]string{}
		}
	}
	return m
}

func (a *API) status(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	st, err := a.b.Status(r.Context())
	if err != nil {
		return err
	}
	if st.Groups == nil {
		st.Groups = []GroupStatus{}
	}
	return WriteJSON(w, http.StatusOK, st)
}

func (a *API) leave(w http.ResponseWriter, r *http.Request) error {
	if err := a.b.Leave(r.Context()); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]string{"status": "leaving"})
}

// query parses the URL query, refusing malformed encodings and unknown keys.
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, Errorf(http.StatusBadRequest, "bad_query", "malformed query: %v", err)
	}
	for k := range q {
		ok := false
		for _, a := range allowed {
			if k == a {
				ok = true
				break
			}
		}
		if !ok {
			return nil, Errorf(http.StatusBadRequest, "bad_query", "unknown query parameter %q", k)
		}
	}
	return q, nil
}

// intParam parses an optional integer query parameter within [min, max].
func intParam(q url.Values, name string, def, min, max int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, Errorf(http.StatusBadRequest, "bad_query", "%s %q: want an integer from %d to %d", name, s, min, max)
	}
	return n, nil
}

// checkName bounds names that appear in paths and queries.
func checkName(what, s string, emptyOK bool) error {
	if s == "" {
		if emptyOK {
			return nil
		}
		return Errorf(http.StatusBadRequest, "bad_request", "%s is required", what)
	}
	if len(s) > 63 {
		return Errorf(http.StatusBadRequest, "bad_request", "%s is longer than 63 characters", what)
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '-' || c == '_' || c == '.'))
		if !ok {
			return Errorf(http.StatusBadRequest, "bad_request", "%s %q: only letters, digits, '-', '_' and '.' (not first)", what, s)
		}
	}
	return nil
}

// decodeJSON decodes a bounded JSON body into v, refusing unknown fields.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return Errorf(http.StatusBadRequest, "bad_json", "malformed JSON body: %v", err)
	}
	return nil
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

// Error is an API error with its HTTP status and a stable code.
type Error struct {
	Status     int    `json:"-"`
	Code       string `json:"code"`
	Message    string `json:"error"`
	RetryAfter int    `json:"-"` // seconds; set for 429 and 503
	// Path names the failing input location (schema violations).
	Path string `json:"path,omitempty"`
	err  error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.err }

// WithRetryAfter sets the Retry-After seconds.
func (e *Error) WithRetryAfter(s int) *Error { e.RetryAfter = s; return e }

// Errorf builds an *Error.
func Errorf(status int, code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Status: status, Code: code, Message: err.Error(), err: errors.Unwrap(err)}
}

// WriteError writes err as {"error","code"} with its status; errors that
// are not *Error become 500, and a body-limit overflow becomes 413.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &e):
	case errors.As(err, &mbe):
		e = Errorf(http.StatusRequestEntityTooLarge, "too_large", "request body larger than %d bytes", mbe.Limit)
	case errors.Is(err, context.DeadlineExceeded):
		e = Errorf(http.StatusGatewayTimeout, "timeout", "%v", err)
	default:
		e = Errorf(http.StatusInternalServerError, "internal", "%v", err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	_ = WriteJSON(w, e.Status, e)
}

// Server runs the API on addr with slow-client timeouts and header bounds.
func Server(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}
