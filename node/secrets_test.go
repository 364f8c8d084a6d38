package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/secretbox"
)

// versionedKV is a one-group kvStore with versions, CAS and prefix lists,
// like the state machine.
type versionedKV struct {
	kvStore
	mu   sync.Mutex
	rev  uint64
	data map[string]fsm.Item
}

func newVersionedKV() *versionedKV { return &versionedKV{data: map[string]fsm.Item{}} }

func (k *versionedKV) Get(_ context.Context, _, key string) (fsm.Item, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	it, ok := k.data[key]
	return it, ok, nil
}

func (k *versionedKV) List(_ context.Context, _ string, q fsm.ListQuery) ([]fsm.Item, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []fsm.Item
	for key, it := range k.data {
		if strings.HasPrefix(key, q.Prefix) {
			out = append(out, it)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (k *versionedKV) Apply(_ context.Context, _ string, cmd fsm.Command) (fsm.Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, op := range cmd.Ops {
		if op.CAS != nil && k.data[op.Key].Version != *op.CAS {
			return fsm.Result{Conflict: true, ConflictKey: op.Key}, nil
		}
	}
	k.rev++
	res := fsm.Result{Revision: k.rev}
	for _, op := range cmd.Ops {
		if op.Type == fsm.OpDelete {
			delete(k.data, op.Key)
		} else {
			k.data[op.Key] = fsm.Item{Key: op.Key, Value: bytes.Clone(op.Value), Version: k.rev}
		}
		res.Versions = append(res.Versions, k.rev)
	}
	return res, nil
}

func writeKeys(t *testing.T, path string, keys ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(keys, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsSealedAtRestAndKeyRotation(t *testing.T) {
	ctx := context.Background()
	kv := newVersionedKV()
	keyFile := filepath.Join(t.TempDir(), "keys")
	oldKey, _ := secretbox.GenerateKey()
	newKey, _ := secretbox.GenerateKey()
	writeKeys(t, keyFile, oldKey)
	s := &secretsBackend{kv: kv, keyring: secretKeyring(keyFile, "", false, nil), now: time.Now}
	const value = "very-secret-value"

	m, err := s.PutSecret(ctx, "default", "db-pass", []byte(value), nil)
	if err != nil || m.Version == 0 || m.KeyID == "" {
		t.Fatalf("%+v %v", m, err)
	}
	svc, _ := json.Marshal(dispatch.Service{Name: "app", Type: dispatch.TypeExec, Command: []string{"true"},
		Secrets: []dispatch.SecretRef{{Name: "db-pass", Env: "P"}}})
	kv.data[dispatch.ServiceKey("app")] = fsm.Item{Key: dispatch.ServiceKey("app"), Value: svc, Version: 99}
	for key, it := range kv.data {
		if bytes.Contains(it.Value, []byte(value)) {
			t.Fatalf("the value is in clear under %s", key)
		}
	}
	got, err := s.GetSecret(ctx, "default", "db-pass")
	if err != nil || len(got.UsedBy) != 1 || got.UsedBy[0] != "app" || !got.CreatedAt.Equal(m.CreatedAt) {
		t.Fatalf("%+v %v", got, err)
	}
	if b, _ := json.Marshal(got); bytes.Contains(b, []byte(value)) {
		t.Fatal("metadata shows the value")
	}
	vals, err := s.SecretValues(ctx, "default", []string{"db-pass", "absent"})
	if err != nil || string(vals["db-pass"]) != value || len(vals) != 1 {
		t.Fatalf("%q %v", vals, err)
	}
	// Stored under another cluster's name it does not open.
	if _, err := s.SecretValues(ctx, "other", []string{"db-pass"}); !errors.Is(err, dispatch.ErrSecretUnavailable) {
		t.Fatalf("opened for another cluster: %v", err)
	}

	// Rotation: the new key first, the old one kept: old values open, new
	// writes are sealed with the new key.
	writeKeys(t, keyFile, newKey, oldKey)
	if vals, err := s.SecretValues(ctx, "default", []string{"db-pass"}); err != nil || string(vals["db-pass"]) != value {
		t.Fatalf("after adding a key: %v", err)
	}
	m2, err := s.PutSecret(ctx, "default", "api-key", []byte("another-value"), nil)
	if err != nil || m2.KeyID == m.KeyID {
		t.Fatalf("not sealed with the new key: %+v %v", m2, err)
	}
	// Rewrap seals db-pass again with the new key; then the old key can go.
	kv.data[dispatch.SecretKey("lost")] = fsm.Item{Key: dispatch.SecretKey("lost"), Version: 98,
		Value: []byte(`{"name":"lost","sealed":"bXNiMQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`)}
	rep, err := s.RewrapSecrets(ctx, "default")
	if err != nil || strings.Join(rep.Rewrapped, ",") != "db-pass" || rep.Current != 1 ||
		strings.Join(rep.Failed, ",") != "lost" || rep.KeyID != m2.KeyID {
		t.Fatalf("rewrap: %+v %v", rep, err)
	}
	delete(kv.data, dispatch.SecretKey("lost"))
	writeKeys(t, keyFile, newKey)
	if vals, err := s.SecretValues(ctx, "default", []string{"db-pass"}); err != nil || string(vals["db-pass"]) != value {
		t.Fatalf("rewrapped value with the new key alone: %v", err)
	}
	// An old key dropped too soon: a clear error naming the secret.
	writeKeys(t, keyFile, oldKey)
	_, err = s.SecretValues(ctx, "default", []string{"db-pass"})
	if !errors.Is(err, dispatch.ErrSecretUnavailable) || !strings.Contains(err.Error(), `secret "db-pass"`) ||
		strings.Contains(err.Error(), value) {
		t.Fatalf("old value after its key went: %v", err)
	}
	writeKeys(t, keyFile, newKey)
	if vals, err := s.SecretValues(ctx, "default", []string{"api-key"}); err != nil || string(vals["api-key"]) != "another-value" {
		t.Fatalf("new value: %v", err)
	}

	// CAS and deletes.
	if _, err := s.PutSecret(ctx, "default", "api-key", []byte("third-value"), new(uint64)); !isStatus(err, http.StatusConflict) {
		t.Fatalf("cas 0 over an existing secret: %v", err)
	}
	if err := s.DeleteSecret(ctx, "default", "api-key", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSecret(ctx, "default", "api-key", nil); !isStatus(err, http.StatusNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	list, err := s.ListSecrets(ctx, "default")
	if err != nil || len(list) != 1 || list[0].Name != "db-pass" {
		t.Fatalf("%+v %v", list, err)
	}
}

func isStatus(err error, status int) bool {
	var he *httpapi.Error
	return errors.As(err, &he) && he.Status == status
}

func TestSecretsNeedAKey(t *testing.T) {
	s := &secretsBackend{kv: newVersionedKV(), keyring: secretKeyring("", t.TempDir(), false, nil), now: time.Now}
	_, err := s.PutSecret(context.Background(), "default", "db-pass", []byte("value-1"), nil)
	if !isStatus(err, http.StatusServiceUnavailable) || !strings.Contains(err.Error(), "-secrets-key-file") {
		t.Fatalf("no key: %v", err)
	}
	// -dev makes its own key once, in its data dir.
	dir := t.TempDir()
	dev := &secretsBackend{kv: newVersionedKV(), keyring: secretKeyring("", dir, true, nil), now: time.Now}
	m, err := dev.PutSecret(context.Background(), "default", "db-pass", []byte("value-1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := devSecretsKey(dir)
	if again.PrimaryID() != m.KeyID {
		t.Fatal("dev key not kept")
	}
	// A key file that does not parse says which line, not what it holds.
	bad := filepath.Join(t.TempDir(), "keys")
	writeKeys(t, bad, "not-a-key-but-secret-looking")
	if _, err := secretKeyring(bad, "", false, nil)(); err == nil || strings.Contains(err.Error(), "secret-looking") {
		t.Fatalf("bad key file: %v", err)
	}
}

func TestDecoratorsInUseAndUnknownReference(t *testing.T) {
	ctx := context.Background()
	kv := newVersionedKV()
	d := &decoratorsBackend{kv: kv}
	svc := dispatch.Service{Name: "app", Type: dispatch.TypeExec, Command: []string{"cat"}, Decorator: json.RawMessage(`"order"`)}
	if err := checkDecoratorRef(ctx, kv, "default", svc); !isStatus(err, http.StatusBadRequest) ||
		err.(*httpapi.Error).Path != "decorator" {
		t.Fatalf("unknown decorator: %v", err)
	}
	if _, err := d.PutDecorator(ctx, "default", "order", []byte(` {"type":"object"} `), nil); err != nil {
		t.Fatal(err)
	}
	if err := checkDecoratorRef(ctx, kv, "default", svc); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(svc)
	kv.data[dispatch.ServiceKey("app")] = fsm.Item{Key: dispatch.ServiceKey("app"), Value: b, Version: 50}
	got, err := d.GetDecorator(ctx, "default", "order")
	if err != nil || string(got.Schema) != `{"type":"object"}` || len(got.UsedBy) != 1 {
		t.Fatalf("%+v %v", got, err)
	}
	if err := d.DeleteDecorator(ctx, "default", "order", nil); !isStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), `"app"`) {
		t.Fatalf("delete in use: %v", err)
	}
	delete(kv.data, dispatch.ServiceKey("app"))
	if err := d.DeleteDecorator(ctx, "default", "order", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetDecorator(ctx, "default", "order"); !isStatus(err, http.StatusNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}
