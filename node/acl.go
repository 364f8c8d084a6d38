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
// open mesh pays one Raft read per cluster and second, not one per request
// (while the group has no quorum: one read of the last known state).
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
// cacheFresh (at once by the node that made it). While a group has no
// quorum, with the extend-cache down policy, a token is checked against
// this node's last known state (stale.go) known current less than
// -stale-serve-for ago, or a token seen valid that recently still is; with
// deny, it is refused.
type tokenStore struct {
	kv      kvStore
	now     func() time.Time
	secrets *freshCache[httpapi.Token]
	// flags caches each cluster's "ACLs are on" as read (key aclFlagKey).
	flags *freshCache[bool]
	// stale reads the last known state; nil: never (wireStale sets it).
	stale staleStore
	// staleTokens: tokens may be checked against the last known state
	// (-acl-down-policy extend-cache); the ACL flag always may.
	staleTokens bool

	mu sync.Mutex
	on map[string]bool // clusters whose state said ACLs are on: for good
}

// aclFlagKey is the flag cache's key (not a key of the state).
const aclFlagKey = "acl"

func newTokenStore(kv kvStore) *tokenStore {
	s := &tokenStore{kv: kv, now: time.Now, on: map[string]bool{}, staleTokens: true,
		secrets: newFreshCache[httpapi.Token](tokenCacheEntries, tokenCacheBytes, tokenCacheNegative),
		flags:   newFreshCache[bool](maxClusters, maxClusters*64, maxClusters)}
	s.flags.fresh = aclOffTTL
	s.flags.down = s.secrets.down
	s.flags.now = func() time.Time { return s.now() }
	return s
}

func (s *tokenStore) ACLEnabled(ctx context.Context, cluster string) (bool, error) {
	s.mu.Lock()
	on := s.on[cluster]
	s.mu.Unlock()
	if on {
		return true, nil
	}
	if on, _, ok := s.flags.cached(cluster, aclFlagKey, s.flags.now()); ok && !on {
		return false, nil // before the loaders' closures are made: they escape
	}
	read := func(get func(key string) (bool, error)) (bool, error) {
		for _, k := range []string{aclEnabledKey, aclBootstrapKey} {
			found, err := get(k)
			if err != nil || found {
				return found, err
			}
		}
		return false, nil
	}
	load := func(ctx context.Context) (bool, int, bool, error) {
		on, err := read(func(k string) (bool, error) {
			_, found, err := s.kv.Get(ctx, cluster, k)
			return found, err
		})
		return on, 64, true, err
	}
	var stale staleFunc[bool]
	if s.stale != nil {
		stale = func(ctx context.Context) (bool, int, bool, time.Time, error) {
			var asOf time.Time
			on, err := read(func(k string) (bool, error) {
				_, found, at, err := s.stale.StaleGet(ctx, cluster, k)
				asOf = at
				return found, err
			})
			return on, 64, true, asOf, err
		}
	}
	on, _, err := s.flags.get(ctx, cluster, aclFlagKey, load, stale)
	if errors.Is(err, consensus.ErrNotBootstrapped) {
		// No group of the cluster exists as far as this node can
		// tell (a node that has seen its group says no quorum
		// instead): no state can say its ACLs are on. A node run with
		// -acl checks every request whatever this says.
		return false, nil
	}
	if err != nil {
		return false, apiError("read the ACL state of cluster "+cluster, err)
	}
	if on {
		s.mu.Lock()
		if len(s.on) >= maxClusters { // ?cluster= is the caller's; keep the map bounded
			clear(s.on)
		}
		s.on[cluster] = true
		s.mu.Unlock()
	}
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
	var stale staleFunc[httpapi.Token]
	if s.stale != nil && s.staleTokens {
		stale = func(ctx context.Context) (httpapi.Token, int, bool, time.Time, error) {
			var t httpapi.Token
			it, ok, asOf, err := s.stale.StaleGet(ctx, cluster, aclSecretPrefix+hash)
			if err != nil || !ok {
				return t, 0, false, asOf, err
			}
			t, size, err := decodeToken(it)
			return t, size, err == nil, asOf, err
		}
	}
	t, ok, err := s.secrets.get(ctx, cluster, hash, func(ctx context.Context) (httpapi.Token, int, bool, error) {
		return s.readSecret(ctx, cluster, hash)
	}, stale)
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
	t, size, err := decodeToken(it)
	return t, size, err == nil, err
}

// decodeToken decodes a token record and estimates the memory it holds.
func decodeToken(it fsm.Item) (httpapi.Token, int, error) {
	var t httpapi.Token
	if err := json.Unmarshal(it.Value, &t); err != nil {
		return t, 0, fmt.Errorf("decode token: %w: %v", errUndecodable, err)
	}
	return t, 2*len(it.Value) + 128, nil
}

// close stops the token caches' background reads.
func (s *tokenStore) close() {
	s.secrets.close()
	s.flags.close()
}

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
