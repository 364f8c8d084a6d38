package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Token keys in the local cluster's replicated state. The secret itself is
// never stored: acl/secret/<sha256(secret)> holds the token a secret
// resolves to, acl/token/<accessor> the same token for listing and revoking.
const (
	aclBootstrapKey = "acl/bootstrapped"
	aclTokenPrefix  = "acl/token/"
	aclSecretPrefix = "acl/secret/"
)

// tokenStore keeps API tokens in Raft, so a revocation is seen by every
// node on its next request: lookups are linearizable reads, not a cache.
type tokenStore struct {
	kv      kvStore
	cluster string
	now     func() time.Time
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

func (s *tokenStore) LookupSecret(ctx context.Context, hash string) (httpapi.Token, error) {
	var t httpapi.Token
	it, ok, err := s.kv.Get(ctx, s.cluster, aclSecretPrefix+hash)
	if err != nil {
		return t, apiError("token lookup", err)
	}
	if !ok {
		return t, httpapi.Errorf(http.StatusUnauthorized, "unauthorized", "token not found (revoked or never issued)")
	}
	if err := json.Unmarshal(it.Value, &t); err != nil {
		return t, fmt.Errorf("decode token: %w", err)
	}
	return t, nil
}

func (s *tokenStore) create(ctx context.Context, t httpapi.Token, extra ...fsm.Op) (httpapi.Token, string, error) {
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
	res, err := s.kv.Apply(ctx, s.cluster, fsm.Command{Ops: ops})
	if err != nil {
		return t, "", apiError("create token", err)
	}
	if res.Conflict {
		if res.ConflictKey == aclBootstrapKey {
			return t, "", httpapi.Errorf(http.StatusConflict, "conflict", "ACLs are already bootstrapped in cluster %s", s.cluster)
		}
		return t, "", httpapi.Errorf(http.StatusConflict, "conflict", "token id collision, retry")
	}
	return t, secret, nil
}

func (s *tokenStore) Bootstrap(ctx context.Context) (httpapi.Token, string, error) {
	zero := uint64(0)
	marker := fsm.Op{Type: fsm.OpPut, Key: aclBootstrapKey, Value: []byte(`{"bootstrapped":true}`), CAS: &zero}
	return s.create(ctx, httpapi.Token{Description: "bootstrap management token", Policies: []string{httpapi.PermManage}}, marker)
}

func (s *tokenStore) CreateToken(ctx context.Context, t httpapi.Token) (httpapi.Token, string, error) {
	return s.create(ctx, t)
}

func (s *tokenStore) ListTokens(ctx context.Context) ([]httpapi.Token, error) {
	items, err := s.kv.List(ctx, s.cluster, fsm.ListQuery{Prefix: aclTokenPrefix, Limit: 10000})
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

func (s *tokenStore) RevokeToken(ctx context.Context, accessor string) error {
	it, ok, err := s.kv.Get(ctx, s.cluster, aclTokenPrefix+accessor)
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
	_, err = s.kv.Apply(ctx, s.cluster, fsm.Command{Ops: []fsm.Op{
		{Type: fsm.OpDelete, Key: aclTokenPrefix + accessor},
		{Type: fsm.OpDelete, Key: aclSecretPrefix + t.SecretHash},
	}})
	return apiError("revoke token", err)
}
