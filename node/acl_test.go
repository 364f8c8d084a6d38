package node

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/node/httpapi"
)

// groupsKV is a kvStore over one map per cluster: Apply honours CAS 0 on
// puts, Get fails like a group without quorum for a cluster in down.
type groupsKV struct {
	kvStore
	mu   sync.Mutex
	data map[string]map[string][]byte
	down map[string]bool
	gets int
}

func (k *groupsKV) Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gets++
	if k.down[cluster] {
		return fsm.Item{}, false, consensus.ErrNoQuorum
	}
	v, ok := k.data[cluster][key]
	return fsm.Item{Key: key, Value: v}, ok, nil
}

func (k *groupsKV) Apply(ctx context.Context, cluster string, cmd fsm.Command) (fsm.Result, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.down[cluster] {
		return fsm.Result{}, consensus.ErrNoQuorum
	}
	g := k.data[cluster]
	if g == nil {
		g = map[string][]byte{}
		k.data[cluster] = g
	}
	for _, op := range cmd.Ops {
		if _, ok := g[op.Key]; ok && op.CAS != nil && *op.CAS == 0 {
			return fsm.Result{Conflict: true, ConflictKey: op.Key}, nil
		}
	}
	for _, op := range cmd.Ops {
		if op.Type == fsm.OpDelete {
			delete(g, op.Key)
		} else {
			g[op.Key] = op.Value
		}
	}
	return fsm.Result{}, nil
}

// TestACLEnabledIsTheClusterState: a cluster's ACLs are on once its state
// has acl/enabled (or, from before that key, acl/bootstrapped); "off" is
// reused for at most aclOffTTL, "on" for good; an unreadable state is an
// error, never "off".
func TestACLEnabledIsTheClusterState(t *testing.T) {
	kv := &groupsKV{data: map[string]map[string][]byte{}, down: map[string]bool{}}
	now := time.Unix(1000, 0)
	s := newTokenStore(kv)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	on := func(c string) bool {
		t.Helper()
		v, err := s.ACLEnabled(ctx, c)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		return v
	}
	if on("blue") {
		t.Fatal("an empty cluster has ACLs on")
	}
	if err := s.enable(ctx, "blue"); err != nil {
		t.Fatal(err)
	}
	if err := s.enable(ctx, "blue"); err != nil {
		t.Fatalf("enabling twice: %v", err)
	}
	if on("blue") {
		t.Fatal(`"off" was not reused within aclOffTTL`)
	}
	now = now.Add(aclOffTTL)
	if !on("blue") {
		t.Fatal("blue's state says on, answer is off after aclOffTTL")
	}
	kv.down["blue"], kv.gets = true, 0
	if !on("blue") || kv.gets != 0 {
		t.Fatalf(`"on" read again (%d reads) or lost`, kv.gets)
	}
	kv.data["red"] = map[string][]byte{aclBootstrapKey: []byte(`{}`)}
	if !on("red") {
		t.Fatal("a cluster bootstrapped before acl/enabled existed is off")
	}
	kv.down["grey"] = true
	var he *httpapi.Error
	if _, err := s.ACLEnabled(ctx, "grey"); !errors.As(err, &he) || he.Status != 503 {
		t.Fatalf("unreadable state: %v, want a 503", err)
	}
	if s.on["grey"] {
		t.Fatal("an unreadable state was remembered")
	}
}
