package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// Permissions a token's policies grant.
const (
	PermRead   = "read"   // read members, services, executions, status
	PermWrite  = "write"  // create, change and delete services; restore snapshots
	PermManage = "manage" // tokens, leave, snapshots; implies every other permission
	PermRun    = "run"    // "run" runs every service; "run:PATTERN" those matching the glob
	// PermSecrets puts, lists and deletes secrets (never reads a value);
	// apart from write, so a service author need not hold the secrets.
	PermSecrets = "secrets"
)

// Token is an API token as stored (the secret itself is never stored, only
// its SHA-256).
type Token struct {
	AccessorID  string    `json:"accessor_id"`
	SecretHash  string    `json:"secret_hash,omitempty"`
	Description string    `json:"description,omitempty"`
	Policies    []string  `json:"policies"`
	CreatedAt   time.Time `json:"created_at"`
}

// Allows reports whether the token grants perm; for PermRun, on service.
func (t *Token) Allows(perm, service string) bool {
	for _, p := range t.Policies {
		switch {
		case p == PermManage:
			return true
		case p == perm && perm != PermRun:
			return true
		case perm == PermRead && (p == PermWrite):
			return true
		case perm == PermRun && p == PermRun:
			return true
		case perm == PermRun && strings.HasPrefix(p, PermRun+":"):
			if ok, _ := path.Match(strings.TrimPrefix(p, PermRun+":"), service); ok {
				return true
			}
		}
	}
	return false
}

// ValidPolicy reports whether p is a policy the API understands.
func ValidPolicy(p string) bool {
	switch p {
	case PermRead, PermWrite, PermManage, PermRun:
		return true
	case PermSecrets:
		return true
	}
	if pat, ok := strings.CutPrefix(p, PermRun+":"); ok && pat != "" && len(pat) <= 128 {
		_, err := path.Match(pat, "x")
		return err == nil
	}
	return false
}

// HashSecret is how secrets are stored and looked up.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TokenStore is what ACLs need from the replicated state. Every method
// names the cluster whose group holds the tokens: a token belongs to the
// cluster it was issued in and is looked up nowhere else. A lookup's
// answer may be reused briefly, but must come from a read that started at
// most a second before (so a revoked token is refused on every node within
// a second), except while the group cannot answer (no quorum), when an
// answer known valid may serve for a bounded while (node's freshCache).
type TokenStore interface {
	// ACLEnabled reports whether the cluster's replicated state says ACLs
	// are on (a node of it ran with -acl). Once on they stay on, so an
	// implementation may remember a true answer; an error means the
	// answer is unknown and the request is refused.
	ACLEnabled(ctx context.Context, cluster string) (bool, error)
	// LookupSecret returns the cluster's token whose secret hashes to
	// hash, or an *Error 401 (unknown) / 503 (no quorum).
	LookupSecret(ctx context.Context, cluster, hash string) (Token, error)
	// Bootstrap creates the cluster's first management token, only once.
	Bootstrap(ctx context.Context, cluster string) (Token, string, error)
	CreateToken(ctx context.Context, cluster string, t Token) (Token, string, error)
	ListTokens(ctx context.Context, cluster string) ([]Token, error)
	RevokeToken(ctx context.Context, cluster, accessorID string) error
}

// WithACL is a node started with -acl: every request it serves but
// /v1/health and the one-time /v1/acl/bootstrap needs a token of the
// cluster the request is for, and its own cluster's ACLs are on whatever
// the replicated state says yet.
func WithACL(s TokenStore) Option { return func(a *API) { a.acl, a.aclFlag = s, true } }

// WithTokens is a node started without -acl: a request is checked only
// when the replicated state of the cluster it is for says ACLs are on.
func WithTokens(s TokenStore) Option { return func(a *API) { a.acl = s } }

// ProxyPolicy is what authentication needs to know of an http service
// before a /svc/ call to it is checked.
type ProxyPolicy struct {
	// Public: the call needs no token.
	Public bool
	// PassAuthorization: the caller's Authorization is the upstream's; the
	// caller's token, if the call needs one, is in X-Meshgw-Token only.
	PassAuthorization bool
}

// ProxyPolicies looks services' ProxyPolicy up at authentication time. It
// is asked on every checked /svc/ call, before the token, so it must cost
// no read per call: answers as fresh as a TokenStore's (at most a second
// old while the group answers). An unknown service has the zero policy
// (nil error): the call then needs a token, and a 404 comes after it.
type ProxyPolicies interface {
	ProxyPolicy(ctx context.Context, cluster, service string) (ProxyPolicy, error)
}

// WithProxyPolicies lets services be public or keep their Authorization
// (without it every checked /svc/ call needs a token, from either header).
func WithProxyPolicies(p ProxyPolicies) Option { return func(a *API) { a.policies = p } }

// grantKey holds, in a request's context, the *grant access decided.
type grantKey struct{}

// grant is what access decided for a request: the cluster it is for and,
// when it was checked, its service's ProxyPolicy and its token.
type grant struct {
	cluster string
	// checked: ACLs are on for cluster (the request needed a token, or
	// was to a public service), whether or not a token was then read.
	checked bool
	policy  ProxyPolicy
	token   *Token // nil: no token read
}

func grantFrom(ctx context.Context) *grant {
	g, _ := ctx.Value(grantKey{}).(*grant)
	return g
}

// tokenOf is TokenFrom's token, nil when none was read.
func tokenOf(ctx context.Context) *Token {
	if g := grantFrom(ctx); g != nil {
		return g.token
	}
	return nil
}

// TokenFrom returns the request's token when ACLs are on.
func TokenFrom(ctx context.Context) (*Token, bool) {
	if g := grantFrom(ctx); g != nil && g.token != nil {
		return g.token, true
	}
	return nil, false
}

// bearer extracts the secret from Authorization: Bearer or X-Meshgw-Token;
// from X-Meshgw-Token only when the Authorization is the upstream's
// (pass_authorization).
func bearer(r Request, passAuthorization bool) string {
	if passAuthorization {
		return r.Header("X-Meshgw-Token")
	}
	if h := r.Header("Authorization"); h != "" {
		if s, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(s)
		}
		return ""
	}
	return r.Header("X-Meshgw-Token")
}

// stripCredential says what a /svc/ request must lose of what meshgw's
// authentication reads, so an upstream never sees a caller's meshgw
// token: X-Meshgw-Token always (TokenHeader: meshgw's own header), and
// Authorization (dropAuthorization) when ACLs are on and it is the Bearer
// credential bearer reads, unless the service passes Authorization (then
// it is the upstream's, and meshgw did not read it). On a public service
// the Bearer goes too: a client that sends its token everywhere must not
// hand it to a public upstream. Any other Authorization (a scheme meshgw
// does not read, or ACLs off) is the upstream's business. Each listener
// deletes from its own request what this one rule says.
func stripCredential(g *grant, authorization string) (dropAuthorization bool) {
	return g != nil && g.checked && !g.policy.PassAuthorization && strings.HasPrefix(authorization, "Bearer ")
}

// TokenHeader is meshgw's own credential header (never sent upstream).
const TokenHeader = "X-Meshgw-Token"

// clusterFrom returns the cluster access resolved the request to be for.
func clusterFrom(ctx context.Context) (string, bool) {
	if g := grantFrom(ctx); g != nil {
		return g.cluster, true
	}
	return "", false
}

// scoped reports whether a route acts on one cluster's state and so is
// for the cluster its ?cluster= names; the other routes are about the
// receiving node or the mesh and are for the node's own cluster.
func scoped(p string) bool {
	if strings.HasPrefix(p, "/v1/repositories") { // per-cluster state (repositories.go)
		return true
	}
	return strings.HasPrefix(p, "/v1/services") || strings.HasPrefix(p, "/v1/executions") ||
		strings.HasPrefix(p, "/svc/") || p == "/v1/snapshot" || strings.HasPrefix(p, "/v1/acl/") ||
		strings.HasPrefix(p, "/v1/secrets") || strings.HasPrefix(p, "/v1/decorators")
}

// targetCluster is the cluster a request is for: ?cluster= on a scoped
// route, else the node's own. Handlers read it back with clusterFrom, so
// the cluster that authorized a request is the one it acts on; a second
// ?cluster= is refused rather than guessed at.
func (a *API) targetCluster(r Request) (string, error) {
	local := a.b.LocalCluster()
	if !scoped(r.Path()) {
		return local, nil
	}
	raw := r.RawQuery()
	if !strings.Contains(raw, "cluster") && !strings.Contains(raw, "%") {
		return local, nil // no cluster key, not even an encoded one
	}
	q, _ := url.ParseQuery(raw) // as URL.Query: what parses counts
	vs := q["cluster"]
	switch {
	case len(vs) > 1:
		return "", Errorf(http.StatusBadRequest, "bad_query", "cluster: given %d times", len(vs))
	case len(vs) == 0 || vs[0] == "":
		return local, nil
	}
	return vs[0], checkName("cluster", vs[0], false)
}

// nodeRead reports whether r only reads this node's own views (members,
// runners, status, clusters, metrics).
func nodeRead(r Request) bool {
	if m := r.Method(); m != http.MethodGet && m != http.MethodHead {
		return false
	}
	switch r.Path() {
	case "/v1/members", "/v1/runners", "/v1/status", "/v1/clusters", "/metrics":
		return true
	}
	return false
}

// aclOn reports whether cluster c's ACLs are on: this node's -acl for its
// own cluster, else c's replicated state.
func (a *API) aclOn(ctx context.Context, c string) (bool, error) {
	if a.aclFlag && c == a.b.LocalCluster() {
		return true, nil
	}
	return a.acl.ACLEnabled(ctx, c)
}

// access resolves the cluster the request is for and, when it must be
// checked (this node runs -acl, or that cluster's ACLs are on), the
// request's token in that cluster's group and the permission the route
// needs (decide), and records the decision in the request's context.
func (a *API) access(r *http.Request) (*http.Request, error) {
	g, err := a.decide(r.Context(), netRequest{r})
	return r.WithContext(context.WithValue(r.Context(), grantKey{}, g)), err
}

// decide is access for either listener: r is read through Request only.
// /v1/health is open; /v1/acl/bootstrap checks for itself. The grant is
// never nil; with an error it holds what was decided before it.
func (a *API) decide(ctx context.Context, r Request) (*grant, error) {
	c, err := a.targetCluster(r)
	g := &grant{cluster: c}
	if err != nil {
		return g, err
	}
	p := r.Path()
	if a.acl == nil || p == "/v1/health" || p == "/v1/ready" || p == "/v1/acl/bootstrap" ||
		(a.publicMetrics && p == "/metrics") {
		return g, nil
	}
	if a.consoleAsset(r) { // the web console's static files: no data, no token
		return g, nil
	}
	if !a.aclFlag {
		on, err := a.aclOn(ctx, c)
		if err != nil && nodeRead(r) {
			// The cluster's state cannot be read (no quorum, no group
			// yet): what it says is unknown. The node's own read-only
			// views stay open so an operator can see why; everything
			// else is refused until the state answers.
			return g, nil
		}
		if err != nil {
			return g, err
		}
		if !on {
			return g, nil
		}
	}
	g.checked = true
	if name, ok := svcName(p); ok && a.policies != nil {
		if g.policy, err = a.policies.ProxyPolicy(ctx, c, name); err != nil {
			// The definition cannot be read (no group, no quorum, nothing
			// cached): fail closed, as a service that is neither public
			// nor passes Authorization. The proxy cannot serve it without
			// its definition anyway; a caller without a token gets 401.
			g.policy = ProxyPolicy{}
		}
		if g.policy.Public {
			return g, nil // checked, and open: no token is read or needed
		}
	}
	if g.token, err = a.authenticate(ctx, r, c, g.policy.PassAuthorization); err != nil {
		return g, err
	}
	perm, svc := permFor(r.Method(), p)
	return g, requireToken(g.token, perm, svc)
}

// svcName is the service a /svc/ path calls.
func svcName(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/svc/")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, "/")
	return name, name != ""
}

// authenticate resolves the request's token in cluster c or returns a 401.
func (a *API) authenticate(ctx context.Context, r Request, c string, passAuthorization bool) (*Token, error) {
	secret := bearer(r, passAuthorization)
	if secret == "" {
		if passAuthorization {
			return nil, Errorf(http.StatusUnauthorized, "unauthorized", "a token of cluster %s is required: this service passes Authorization to its upstream, so send X-Meshgw-Token: SECRET", c)
		}
		return nil, Errorf(http.StatusUnauthorized, "unauthorized", "a token of cluster %s is required: Authorization: Bearer SECRET", c)
	}
	if len(secret) > 256 {
		return nil, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	t, err := a.acl.LookupSecret(ctx, c, HashSecret(secret))
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// require checks that the request's token grants perm (no-op with ACLs off).
func require(r *http.Request, perm, service string) error {
	t, _ := TokenFrom(r.Context())
	return requireToken(t, perm, service)
}

// requireToken checks that t grants perm (no-op with ACLs off: t nil).
func requireToken(t *Token, perm, service string) error {
	if t == nil || perm == "" {
		return nil
	}
	if !t.Allows(perm, service) {
		what := perm
		if perm == PermRun {
			what = "run:" + service
		}
		return Errorf(http.StatusForbidden, "forbidden", "token %s lacks the %q permission", t.AccessorID, what)
	}
	return nil
}

// permFor names the permission a route needs, from method and path.
func permFor(method, p string) (perm, service string) {
	switch {
	case p == "/v1/acl/whoami":
		return "", "" // any valid token may ask who it is
	case strings.HasPrefix(p, "/v1/acl/"), strings.HasPrefix(p, "/v1/keyring"), p == "/v1/agent/leave", p == "/v1/snapshot":
		return PermManage, ""
	case p == "/v1/import": // it may create schedules, which run services
		return PermManage, ""
	case strings.HasPrefix(p, "/svc/"):
		name, _, _ := strings.Cut(strings.TrimPrefix(p, "/svc/"), "/")
		return PermRun, name
	case strings.HasPrefix(p, "/v1/services/") && strings.HasSuffix(p, "/run") && method == http.MethodPost:
		return PermRun, strings.TrimSuffix(strings.TrimPrefix(p, "/v1/services/"), "/run")
	case p == "/v1/logs":
		// The central log holds client IPs and token accessors of every
		// caller: manage only. /v1/kpis (counts and latencies per
		// service, no caller) needs read, as any GET.
		return PermManage, ""
	case strings.HasPrefix(p, "/v1/executions/") && strings.HasSuffix(p, "/cancel") && method == http.MethodPost:
		// run for the execution's service, or write: the handler checks
		// once the record names the service (mayCancel).
		return "", ""
	case p == "/v1/secrets" || strings.HasPrefix(p, "/v1/secrets/"):
		return PermSecrets, ""
	case method == http.MethodGet || method == http.MethodHead:
		return PermRead, ""
	default:
		return PermWrite, ""
	}
}

func (a *API) aclRoutes() {
	a.handle("POST /v1/acl/bootstrap", a.aclBootstrap)
	a.handle("POST /v1/acl/tokens", a.aclCreate)
	a.handle("GET /v1/acl/tokens", a.aclList)
	a.handle("DELETE /v1/acl/tokens/{id}", a.aclRevoke)
	a.handle("GET /v1/acl/whoami", a.aclWhoami)
}

// aclCluster is the cluster an ACL route is for; token management needs the
// request to have been checked (ACLs on for that cluster, or this node's
// -acl), so no one mints tokens in a cluster whose ACLs are off, to be
// valid the day they are turned on.
func aclCluster(r *http.Request) (string, error) {
	c, _ := clusterFrom(r.Context())
	if _, ok := TokenFrom(r.Context()); !ok {
		return c, Errorf(http.StatusBadRequest, "acl_disabled", "ACLs are not on in cluster %s", c)
	}
	return c, nil
}

// aclBootstrap mints a cluster's first management token. Only through a
// node of that cluster whose ACLs are on: a node of another cluster (or a
// node without ACLs) must not be a way to lock a cluster or take it over.
func (a *API) aclBootstrap(w http.ResponseWriter, r *http.Request) error {
	c, _ := clusterFrom(r.Context())
	if c != a.b.LocalCluster() {
		return Errorf(http.StatusForbidden, "forbidden", "bootstrap the ACLs of cluster %s through one of its own nodes", c)
	}
	on, err := a.aclOn(r.Context(), c)
	if err != nil {
		return err
	}
	if !on {
		return Errorf(http.StatusBadRequest, "acl_disabled", "ACLs are not on in cluster %s: start its agents with -acl", c)
	}
	t, secret, err := a.acl.Bootstrap(r.Context(), c)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"accessor_id": t.AccessorID, "secret_id": secret, "policies": t.Policies})
}

func (a *API) aclCreate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Description string   `json:"description"`
		Policies    []string `json:"policies"`
	}
	c, err := aclCluster(r)
	if err != nil {
		return err
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Policies) == 0 || len(req.Policies) > 32 {
		return Errorf(http.StatusBadRequest, "bad_request", "policies: 1 to 32 of read, write, manage, run, run:PATTERN")
	}
	for _, p := range req.Policies {
		if !ValidPolicy(p) {
			return Errorf(http.StatusBadRequest, "bad_request", "policies: unknown policy %q (read, write, manage, run, run:PATTERN, secrets)", p)
		}
	}
	if len(req.Description) > 256 {
		return Errorf(http.StatusBadRequest, "bad_request", "description: longer than 256 bytes")
	}
	t, secret, err := a.acl.CreateToken(r.Context(), c, Token{Description: req.Description, Policies: req.Policies})
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"accessor_id": t.AccessorID, "secret_id": secret, "policies": t.Policies, "description": t.Description})
}

func (a *API) aclList(w http.ResponseWriter, r *http.Request) error {
	c, err := aclCluster(r)
	if err != nil {
		return err
	}
	ts, err := a.acl.ListTokens(r.Context(), c)
	if err != nil {
		return err
	}
	for i := range ts {
		ts[i].SecretHash = ""
	}
	if ts == nil {
		ts = []Token{}
	}
	return WriteJSON(w, http.StatusOK, ts)
}

func (a *API) aclRevoke(w http.ResponseWriter, r *http.Request) error {
	c, err := aclCluster(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if len(id) == 0 || len(id) > 64 {
		return Errorf(http.StatusBadRequest, "bad_request", "accessor id: 1 to 64 characters")
	}
	if err := a.acl.RevokeToken(r.Context(), c, id); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"accessor_id": id, "revoked": true})
}

func (a *API) aclWhoami(w http.ResponseWriter, r *http.Request) error {
	t, ok := TokenFrom(r.Context())
	if !ok {
		c, _ := clusterFrom(r.Context())
		return Errorf(http.StatusBadRequest, "acl_disabled", "ACLs are not on in cluster %s", c)
	}
	out := *t
	out.SecretHash = ""
	return WriteJSON(w, http.StatusOK, out)
}
