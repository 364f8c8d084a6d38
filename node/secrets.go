package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/secretbox"
)

// Secrets at rest. A secret is stored under dispatch.SecretKey(name) as a
// storedSecret: its value sealed (package secretbox) with additional data
// "cluster/name", and its metadata. The key is never in the state; the
// keyring comes, in order, from -secrets-key-file (read at each use, so a
// rotated file applies without a restart), from the gossip keyring
// (-encrypt: each installed gossip key derives one secrets key, the
// primary seals), or for -dev from a key the node makes in its data dir.
// Without any of them (CA files or the built-in CA, no key file) secrets
// are refused: the cluster has no secret to derive a key from.
type storedSecret struct {
	Name      string    `json:"name"`
	Sealed    []byte    `json:"sealed"`
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created"`
	UpdatedAt time.Time `json:"updated"`
}

// secretsBackend implements httpapi.SecretsBackend and dispatch.SecretSource.
type secretsBackend struct {
	kv      kvStore
	keyring func() (*secretbox.Keyring, error)
	now     func() time.Time
}

var (
	_ httpapi.SecretsBackend = (*secretsBackend)(nil)
	_ dispatch.SecretSource  = (*secretsBackend)(nil)
)

// errNoSecretsKey says how to give the node a key.
var errNoSecretsKey = errors.New("this node has no secrets key: start every agent of the cluster with " +
	"-secrets-key-file FILE (the same file on each; make one with `meshgw secrets keygen`) or with " +
	"-encrypt KEY (the secrets key is then derived from the gossip key)")

// secretKeyring returns the agent's keyring source (see storedSecret).
func secretKeyring(keyFile, dataDir string, dev bool, g *gossip.Gossip) func() (*secretbox.Keyring, error) {
	return func() (*secretbox.Keyring, error) {
		switch {
		case keyFile != "":
			f, err := os.Open(keyFile)
			if err != nil {
				return nil, fmt.Errorf("-secrets-key-file: %w", err)
			}
			defer f.Close()
			data, err := io.ReadAll(io.LimitReader(f, secretbox.MaxKeyFileSize+1))
			if err != nil {
				return nil, fmt.Errorf("-secrets-key-file: %w", err)
			}
			keys, err := secretbox.ParseKeyFile(data)
			if err != nil {
				return nil, fmt.Errorf("-secrets-key-file %s: %w", keyFile, err)
			}
			return secretbox.NewKeyring(keys...)
		case g != nil && g.Encrypted():
			var keys [][]byte
			for _, gk := range g.LocalKeys() {
				k, err := secretbox.DeriveKey(gk)
				if err != nil {
					return nil, fmt.Errorf("derive the secrets key from the gossip keyring: %w", err)
				}
				keys = append(keys, k)
				if len(keys) == secretbox.MaxKeys {
					break
				}
			}
			if len(keys) == 0 {
				return nil, errNoSecretsKey
			}
			return secretbox.NewKeyring(keys...)
		case dev:
			return devSecretsKey(dataDir)
		}
		return nil, errNoSecretsKey
	}
}

// devSecretsKey is a -dev node's own key, made once in its data dir.
func devSecretsKey(dataDir string) (*secretbox.Keyring, error) {
	p := filepath.Join(dataDir, "secrets.key")
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		k, gerr := secretbox.GenerateKey()
		if gerr != nil {
			return nil, gerr
		}
		if err := writeAtomic(p, []byte(k+"\n")); err != nil {
			return nil, err
		}
		data, err = []byte(k), nil
	}
	if err != nil {
		return nil, fmt.Errorf("dev secrets key: %w", err)
	}
	keys, err := secretbox.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("dev secrets key %s: %w", p, err)
	}
	return secretbox.NewKeyring(keys...)
}

func secretAD(cluster, name string) []byte { return []byte(cluster + "/" + name) }

func (s *secretsBackend) keys() (*secretbox.Keyring, error) {
	kr, err := s.keyring()
	if err != nil {
		return nil, httpapi.Errorf(http.StatusServiceUnavailable, "no_secrets_key", "%v", err)
	}
	return kr, nil
}

func (s *secretsBackend) PutSecret(ctx context.Context, cluster, name string, value []byte, cas *uint64) (httpapi.SecretMeta, error) {
	kr, err := s.keys()
	if err != nil {
		return httpapi.SecretMeta{}, err
	}
	sealed, err := kr.Seal(value, secretAD(cluster, name))
	if err != nil {
		return httpapi.SecretMeta{}, fmt.Errorf("put secret %s: %w", name, err)
	}
	now := s.now().UTC()
	rec := storedSecret{Name: name, Sealed: sealed, KeyID: kr.PrimaryID(), CreatedAt: now, UpdatedAt: now}
	key := dispatch.SecretKey(name)
	// Keep the creation time of a secret that is replaced; the write is
	// conditional on the version read (or on the client's ?cas=).
	cur, found, err := s.kv.Get(ctx, cluster, key)
	if err != nil {
		return httpapi.SecretMeta{}, apiError("put secret", err)
	}
	expect := uint64(0)
	if found {
		expect = cur.Version
		var old storedSecret
		if json.Unmarshal(cur.Value, &old) == nil && !old.CreatedAt.IsZero() {
			rec.CreatedAt = old.CreatedAt
		}
	}
	if cas != nil {
		expect = *cas
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return httpapi.SecretMeta{}, err
	}
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: val, CAS: &expect}}})
	if err != nil {
		return httpapi.SecretMeta{}, apiError("put secret", err)
	}
	if res.Conflict {
		if cas != nil {
			return httpapi.SecretMeta{}, httpapi.Errorf(http.StatusConflict, "conflict", "secret %q is not at version %d", name, *cas)
		}
		return httpapi.SecretMeta{}, httpapi.Errorf(http.StatusConflict, "conflict", "secret %q changed while it was written; retry", name)
	}
	m := meta(cluster, rec, res.Versions[0])
	m.UsedBy, err = s.usedBy(ctx, cluster, name)
	return m, err
}

func meta(cluster string, rec storedSecret, version uint64) httpapi.SecretMeta {
	return httpapi.SecretMeta{Name: rec.Name, Cluster: cluster, Version: version,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, KeyID: rec.KeyID, UsedBy: []string{}}
}

func decodeSecret(it fsm.Item) (storedSecret, error) {
	var rec storedSecret
	if err := json.Unmarshal(it.Value, &rec); err != nil {
		return rec, fmt.Errorf("decode %s: %w", it.Key, err)
	}
	return rec, nil
}

func (s *secretsBackend) GetSecret(ctx context.Context, cluster, name string) (httpapi.SecretMeta, error) {
	it, ok, err := s.kv.Get(ctx, cluster, dispatch.SecretKey(name))
	if err != nil {
		return httpapi.SecretMeta{}, apiError("get secret", err)
	}
	if !ok {
		return httpapi.SecretMeta{}, notFound("secret", name)
	}
	rec, err := decodeSecret(it)
	if err != nil {
		return httpapi.SecretMeta{}, err
	}
	m := meta(cluster, rec, it.Version)
	m.UsedBy, err = s.usedBy(ctx, cluster, name)
	return m, err
}

func (s *secretsBackend) ListSecrets(ctx context.Context, cluster string) ([]httpapi.SecretMeta, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.SecretKey("")})
	if err != nil {
		return nil, apiError("list secrets", err)
	}
	users, err := s.users(ctx, cluster)
	if err != nil {
		return nil, err
	}
	out := make([]httpapi.SecretMeta, 0, len(items))
	for _, it := range items {
		rec, err := decodeSecret(it)
		if err != nil {
			return nil, err
		}
		m := meta(cluster, rec, it.Version)
		if u := users[rec.Name]; u != nil {
			m.UsedBy = u
		}
		out = append(out, m)
	}
	return out, nil
}

func (s *secretsBackend) DeleteSecret(ctx context.Context, cluster, name string, cas *uint64) error {
	key := dispatch.SecretKey(name)
	if cas == nil {
		if _, ok, err := s.kv.Get(ctx, cluster, key); err != nil {
			return apiError("delete secret", err)
		} else if !ok {
			return notFound("secret", name)
		}
	}
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: cas}}})
	if err != nil {
		return apiError("delete secret", err)
	}
	if res.Conflict {
		return httpapi.Errorf(http.StatusConflict, "conflict", "secret %q is not at version %d", name, *cas)
	}
	return nil
}

// users maps each secret name to the services that reference it.
func (s *secretsBackend) users(ctx context.Context, cluster string) (map[string][]string, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.ServiceKey("")})
	if err != nil {
		return nil, apiError("list services", err)
	}
	out := map[string][]string{}
	for _, it := range items {
		svc, err := decodeService(it)
		if err != nil {
			continue // an undecodable definition references nothing usable
		}
		seen := map[string]bool{}
		for _, r := range svc.Secrets {
			if !seen[r.Name] {
				seen[r.Name] = true
				out[r.Name] = append(out[r.Name], svc.Name)
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out, nil
}

func (s *secretsBackend) usedBy(ctx context.Context, cluster, name string) ([]string, error) {
	users, err := s.users(ctx, cluster)
	if err != nil {
		return nil, err
	}
	if u := users[name]; u != nil {
		return u, nil
	}
	return []string{}, nil
}

// SecretValues implements dispatch.SecretSource: linearizable reads, opened
// with this node's keyring. Errors name the secret, never a value.
func (s *secretsBackend) SecretValues(ctx context.Context, cluster string, names []string) (map[string][]byte, error) {
	kr, kerr := s.keyring()
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		if _, done := out[name]; done {
			continue
		}
		it, ok, err := s.kv.Get(ctx, cluster, dispatch.SecretKey(name))
		if err != nil {
			return nil, fmt.Errorf("read secret %q: %w", name, err)
		}
		if !ok {
			continue // the caller names the missing one
		}
		if kerr != nil {
			return nil, fmt.Errorf("%w: secret %q: %v", dispatch.ErrSecretUnavailable, name, kerr)
		}
		rec, err := decodeSecret(it)
		if err != nil {
			return nil, fmt.Errorf("%w: secret %q: %v", dispatch.ErrSecretUnavailable, name, err)
		}
		v, err := kr.Open(rec.Sealed, secretAD(cluster, name))
		if err != nil {
			return nil, fmt.Errorf("%w: secret %q cannot be decrypted on this node (%v): "+
				"every node needs the key it was sealed with; put the secret again after a key rotation",
				dispatch.ErrSecretUnavailable, name, err)
		}
		out[name] = v
	}
	return out, nil
}

// wireSecrets builds the secrets backend and gives the dispatcher its
// values. A -secrets-key-file that does not parse stops the start: better
// now than at the first run.
func (a *Agent) wireSecrets() error {
	a.secrets = &secretsBackend{kv: a.cons,
		keyring: secretKeyring(a.cfg.SecretsKeyFile, a.cfg.DataDir, a.cfg.Dev, a.gossip), now: time.Now}
	if a.cfg.SecretsKeyFile != "" {
		if _, err := a.secrets.keyring(); err != nil {
			return err
		}
	}
	a.disp.SetSecrets(a.secrets)
	return nil
}

// RewrapSecrets seals every secret that is not sealed with the current key
// again with it, each by CAS on the version read (a concurrent put wins).
func (s *secretsBackend) RewrapSecrets(ctx context.Context, cluster string) (httpapi.RewrapReport, error) {
	kr, err := s.keys()
	if err != nil {
		return httpapi.RewrapReport{}, err
	}
	rep := httpapi.RewrapReport{Cluster: cluster, KeyID: kr.PrimaryID(), Rewrapped: []string{}, Failed: []string{}}
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.SecretKey("")})
	if err != nil {
		return rep, apiError("list secrets", err)
	}
	for _, it := range items {
		rec, err := decodeSecret(it)
		if err != nil {
			return rep, err
		}
		if secretbox.KeyIDOf(rec.Sealed) == rep.KeyID {
			rep.Current++
			continue
		}
		v, err := kr.Open(rec.Sealed, secretAD(cluster, rec.Name))
		if err != nil {
			rep.Failed = append(rep.Failed, rec.Name)
			continue
		}
		if rec.Sealed, err = kr.Seal(v, secretAD(cluster, rec.Name)); err != nil {
			return rep, fmt.Errorf("rewrap secret %s: %w", rec.Name, err)
		}
		rec.KeyID, rec.UpdatedAt = rep.KeyID, s.now().UTC()
		val, err := json.Marshal(rec)
		if err != nil {
			return rep, err
		}
		ver := it.Version
		res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: it.Key, Value: val, CAS: &ver}}})
		if err != nil {
			return rep, apiError("rewrap secret "+rec.Name, err)
		}
		if !res.Conflict { // else it was put meanwhile: sealed with the current key
			rep.Rewrapped = append(rep.Rewrapped, rec.Name)
		}
	}
	return rep, nil
}
