package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
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

// TokenStore is what ACLs need from the replicated state. Lookups must be
// linearizable so a revoked token is refused on every node at once.
type TokenStore interface {
	// LookupSecret returns the token whose secret hashes to hash, or an
	// *Error 401 (unknown) / 503 (no quorum).
	LookupSecret(ctx context.Context, hash string) (Token, error)
	// Bootstrap creates the first management token; only once per cluster.
	Bootstrap(ctx context.Context) (Token, string, error)
	CreateToken(ctx context.Context, t Token) (Token, string, error)
	ListTokens(ctx context.Context) ([]Token, error)
	RevokeToken(ctx context.Context, accessorID string) error
}

// WithACL turns on token checks for every route but /v1/health and the
// one-time /v1/acl/bootstrap.
func WithACL(s TokenStore) Option { return func(a *API) { a.acl = s } }

type tokenKey struct{}

// TokenFrom returns the request's token when ACLs are on.
func TokenFrom(ctx context.Context) (*Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(*Token)
	return t, ok
}

// bearer extracts the secret from Authorization: Bearer or X-Meshgw-Token.
func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if s, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(s)
		}
		return ""
	}
	return r.Header.Get("X-Meshgw-Token")
}

// stripCredential removes from a /svc/ request what meshgw's authentication
// reads, so an upstream never sees a caller's meshgw token: X-Meshgw-Token
// always (it is meshgw's own header), and Authorization when ACLs are on and
// it was the Bearer credential bearer consumed. Any other Authorization (a
// scheme meshgw does not read, or ACLs off) is the upstream's business.
func stripCredential(r *http.Request, aclOn bool) {
	if aclOn {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			r.Header.Del("Authorization")
		}
	}
	r.Header.Del("X-Meshgw-Token")
}

// authenticate resolves the request's token (ACLs on) or returns a 401.
func (a *API) authenticate(r *http.Request) (*http.Request, error) {
	secret := bearer(r)
	if secret == "" {
		return r, Errorf(http.StatusUnauthorized, "unauthorized", "a token is required: Authorization: Bearer SECRET")
	}
	if len(secret) > 256 {
		return r, Errorf(http.StatusUnauthorized, "unauthorized", "token not found")
	}
	t, err := a.acl.LookupSecret(r.Context(), HashSecret(secret))
	if err != nil {
		return r, err
	}
	return r.WithContext(context.WithValue(r.Context(), tokenKey{}, &t)), nil
}

// require checks that the request's token grants perm (no-op with ACLs off).
func require(r *http.Request, perm, service string) error {
	t, ok := TokenFrom(r.Context())
	if !ok || perm == "" {
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
func permFor(r *http.Request) (perm, service string) {
	p := r.URL.Path
	switch {
	case p == "/v1/acl/whoami":
		return "", "" // any valid token may ask who it is
	case strings.HasPrefix(p, "/v1/acl/"), strings.HasPrefix(p, "/v1/keyring"), p == "/v1/agent/leave", p == "/v1/snapshot":
		return PermManage, ""
	case strings.HasPrefix(p, "/svc/"):
		name, _, _ := strings.Cut(strings.TrimPrefix(p, "/svc/"), "/")
		return PermRun, name
	case strings.HasPrefix(p, "/v1/services/") && strings.HasSuffix(p, "/run") && r.Method == http.MethodPost:
		return PermRun, strings.TrimSuffix(strings.TrimPrefix(p, "/v1/services/"), "/run")
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
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

func (a *API) aclBootstrap(w http.ResponseWriter, r *http.Request) error {
	t, secret, err := a.acl.Bootstrap(r.Context())
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
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if len(req.Policies) == 0 || len(req.Policies) > 32 {
		return Errorf(http.StatusBadRequest, "bad_request", "policies: 1 to 32 of read, write, manage, run, run:PATTERN")
	}
	for _, p := range req.Policies {
		if !ValidPolicy(p) {
			return Errorf(http.StatusBadRequest, "bad_request", "policies: unknown policy %q (read, write, manage, run, run:PATTERN)", p)
		}
	}
	if len(req.Description) > 256 {
		return Errorf(http.StatusBadRequest, "bad_request", "description: longer than 256 bytes")
	}
	t, secret, err := a.acl.CreateToken(r.Context(), Token{Description: req.Description, Policies: req.Policies})
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"accessor_id": t.AccessorID, "secret_id": secret, "policies": t.Policies, "description": t.Description})
}

func (a *API) aclList(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.acl.ListTokens(r.Context())
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
	id := r.PathValue("id")
	if len(id) == 0 || len(id) > 64 {
		return Errorf(http.StatusBadRequest, "bad_request", "accessor id: 1 to 64 characters")
	}
	if err := a.acl.RevokeToken(r.Context(), id); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"accessor_id": id, "revoked": true})
}

func (a *API) aclWhoami(w http.ResponseWriter, r *http.Request) error {
	t, ok := TokenFrom(r.Context())
	if !ok {
		return Errorf(http.StatusBadRequest, "acl_disabled", "ACLs are not enabled on this node")
	}
	out := *t
	out.SecretHash = ""
	return WriteJSON(w, http.StatusOK, out)
}
