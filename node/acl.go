package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Token keys in each cluster's replicated state. The secret itself is
// never stored: acl/secret/<sha256(secret)> holds the token a secret
// resolves to, acl/token/<accessor> the same token for listing and
// revoking. acl/enabled says the cluster's ACLs are on: a node started with
// -acl writes it, and every node, of any cluster, then checks the requests
// it serves for that cluster against that cluster's tokens.
const (
	aclBootstrapKey = "acl/bootstrapped"
	aclEnabledKey   = "acl/enabled"
	aclTokenPrefix  = "acl/token/"
	aclSecretPrefix = "acl/secret/"
)

// aclOffTTL is how long a cluster's "ACLs are off" answer is reused, so an
// open mesh pays one Raft read per cluster and second, not one per request.
// It bounds how long after a cluster turns ACLs on a node of another cluster
// may still let an unchecked request in. "On" is never forgotten: ACLs
// cannot be turned off but by restoring a snapshot without the key.
const aclOffTTL = time.Second

// Bounds of a node's token cache: positive answers (valid tokens, at most
// a few KiB each) by count and bytes, negative ones (a hash each) by count.
const (
	tokenCacheEntries  = 4096
	tokenCacheBytes    = 4 << 20
	tokenCacheNegative = 4096
)

// tokenStore keeps API tokens in Raft, each cluster's in its own group.
// Lookups go through a freshCache: a secret costs one linearizable read
// per node and cacheFresh, so a revocation is seen by every node within
// cacheFresh (at once by the node that made it), and while a group has no
// quorum a token seen valid in the last cacheMaxStale still is.
type tokenStore struct {
	kv      kvStore
	now     func() time.Time
	secrets *freshCache[httpapi.Token]

	mu  sync.Mutex
	acl map[string]aclState // cluster → what its state last said
}

type aclState struct {
	on      bool
	checked time.Time
}

func newTokenStore(kv kvStore) *tokenStore {
	return &tokenStore{kv: kv, now: time.Now, acl: map[string]aclState{},
		secrets: newFreshCache[httpapi.Token](tokenCacheEntries, tokenCacheBytes, tokenCacheNegative)}
}

func (s *tokenStore) ACLEnabled(ctx context.Context, cluster string) (bool, error) {
	s.mu.Lock()
	st, ok := s.acl[cluster]
	s.mu.Unlock()
	if ok && (st.on || s.now().Sub(st.checked) < aclOffTTL) {
		return st.on, nil
	}
	on := false
	for _, k := range []string{aclEnabledKey, aclBootstrapKey} {
		_, found, err := s.kv.Get(ctx, cluster, k)
		if errors.Is(err, consensus.ErrNotBootstrapped) {
			// No group of the cluster exists as far as this node can
			// tell (a node that has seen its group says no quorum
			// instead): no state can say its ACLs are on. Not cached:
			// the next request asks again. A node run with -acl checks
			// every request whatever this says.
			return false, nil
		}
		if err != nil {
			return false, apiError("read the ACL state of cluster "+cluster, err)
		}
		if on = found; on {
			break
		}
	}
	s.mu.Lock()
	if len(s.acl) > 4096 { // ?cluster= is the caller's; keep the map bounded
		clear(s.acl)
	}
	s.acl[cluster] = aclState{on: on, checked: s.now()}
	s.mu.Unlock()
	return on, nil
}

// enable records in cluster's state that its ACLs are on; writing it again
// is a no-op.
func (s *tokenStore) enable(ctx context.Context, cluster string) error {
	zero := uint64(0)
	_, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{
		{Type: fsm.OpPut, Key: aclEnabledKey, Value: []byte(`{"enabled":true}`), CAS: &zero}}})
	return err
}

var _ httpapi.TokenStore = (*tokenStore)(nil)

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

func (s *tokenStore) LookupSecret(ctx context.Context, cluster, hash string) (httpapi.Token, error) {
	t, ok, err := s.secrets.get(ctx, cluster, hash, func(ctx context.Context) (httpapi.Token, int, bool, error) {
		return s.readSecret(ctx, cluster, hash)
	})
	if err != nil {
		return t, readError("token lookup", err)
	}
	if !ok {
		return t, httpapi.Errorf(http.StatusUnauthorized, "unauthorized", "token not found (revoked or never issued)")
	}
	return t, nil
}

// readSecret reads the token a secret's hash resolves to, linearizably.
func (s *tokenStore) readSecret(ctx context.Context, cluster, hash string) (httpapi.Token, int, bool, error) {
	var t httpapi.Token
	it, ok, err := s.kv.Get(ctx, cluster, aclSecretPrefix+hash)
	if err != nil || !ok {
		return t, 0, false, err
	}
	if err := json.Unmarshal(it.Value, &t); err != nil {
		return t, 0, false, fmt.Errorf("decode token: %w: %v", errUndecodable, err)
	}
	return t, 2*len(it.Value) + 128, true, nil
}

// close stops the token cache's background reads.
func (s *tokenStore) close() { s.secrets.close() }

func (s *tokenStore) create(ctx context.Context, cluster string, t httpapi.Token, extra ...fsm.Op) (httpapi.Token, string, error) {
	acc, err := randomID()
	if err != nil {
		return t, "", err
	}
	secret, err := randomID()
	if err != nil {
		return t, "", err
	}
	t.AccessorID, t.SecretHash, t.CreatedAt = acc, httpapi.HashSecret(secret), s.now().UTC()
	val, _ := json.Marshal(t)
	zero := uint64(0)
	ops := append(extra,
		fsm.Op{Type: fsm.OpPut, Key: aclTokenPrefix + acc, Value: val, CAS: &zero},
		fsm.Op{Type: fsm.OpPut, Key: aclSecretPrefix + t.SecretHash, Value: val, CAS: &zero})
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
	if err != nil {
		return t, "", apiError("create token", err)
	}
	s.secrets.invalidate(cluster, t.SecretHash) // a random secret: only a guess was cached
	if res.Conflict {
		if res.ConflictKey == aclBootstrapKey {
			return t, "", httpapi.Errorf(http.StatusConflict, "conflict", "ACLs are already bootstrapped in cluster %s", cluster)
		}
		return t, "", httpapi.Errorf(http.StatusConflict, "conflict", "token id collision, retry")
	}
	return t, secret, nil
}

func (s *tokenStore) Bootstrap(ctx context.Context, cluster string) (httpapi.Token, string, error) {
	zero := uint64(0)
	marker := fsm.Op{Type: fsm.OpPut, Key: aclBootstrapKey, Value: []byte(`{"bootstrapped":true}`), CAS: &zero}
	return s.create(ctx, cluster, httpapi.Token{Description: "bootstrap management token", Policies: []string{httpapi.PermManage}}, marker)
}

func (s *tokenStore) CreateToken(ctx context.Context, cluster string, t httpapi.Token) (httpapi.Token, string, error) {
	return s.create(ctx, cluster, t)
}

func (s *tokenStore) ListTokens(ctx context.Context, cluster string) ([]httpapi.Token, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: aclTokenPrefix, Limit: 10000})
	if err != nil {
		return nil, apiError("list tokens", err)
	}
	out := make([]httpapi.Token, 0, len(items))
	for _, it := range items {
		var t httpapi.Token
		if err := json.Unmarshal(it.Value, &t); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

func (s *tokenStore) RevokeToken(ctx context.Context, cluster, accessor string) error {
	it, ok, err := s.kv.Get(ctx, cluster, aclTokenPrefix+accessor)
	if err != nil {
		return apiError("revoke token", err)
	}
	if !ok {
		return httpapi.Errorf(http.StatusNotFound, "not_found", "token %q not found", accessor)
	}
	var t httpapi.Token
	if err := json.Unmarshal(it.Value, &t); err != nil {
		return fmt.Errorf("decode token: %w", err)
	}
	_, err = s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{
		{Type: fsm.OpDelete, Key: aclTokenPrefix + accessor},
		{Type: fsm.OpDelete, Key: aclSecretPrefix + t.SecretHash},
	}})
	// This node refuses the token from now on, even if the apply's outcome
	// is unknown (a timeout may still commit); others within cacheFresh.
	s.secrets.invalidate(cluster, t.SecretHash)
	return apiError("revoke token", err)
}
