package node

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/roles"
)

// fsmKV is a group's store in memory: the state machine behind a mutex.
type fsmKV struct {
	kvStore
	mu sync.Mutex
	st *fsm.Store
}

func (k *fsmKV) Apply(_ context.Context, _ string, cmd fsm.Command) (fsm.Result, error) {
	if err := cmd.Validate(); err != nil {
		return fsm.Result{}, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st.Apply(cmd), nil
}

func (k *fsmKV) Get(_ context.Context, _, key string) (fsm.Item, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	it, ok := k.st.Get(key)
	return it, ok, nil
}

func (k *fsmKV) List(_ context.Context, _ string, q fsm.ListQuery) ([]fsm.Item, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st.List(q), nil
}

func (k *fsmKV) Snapshot(context.Context, string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st.Export(), nil
}

func (k *fsmKV) Restore(_ context.Context, _ string, blob []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.st.Load(bytes.NewReader(blob))
}

type leaderAlways struct{ term uint64 }

func (l leaderAlways) Leadership(string) roles.State {
	return roles.State{Leader: true, Term: l.term}
}
func (leaderAlways) LeaderChanged(string) <-chan struct{} { return nil }

// The retention role's writes through dispatchStore carry the fence: they
// apply while the activation holds the fence key, and once a later term
// claimed it they fail with roles.ErrFenced and write nothing.
func TestDispatchStoreGuardsARolesWrites(t *testing.T) {
	kv := &fsmKV{st: fsm.NewStore()}
	ds := dispatchStore{kv: kv}
	fences := make(chan *roles.Fence, 1)
	m, err := roles.New(roles.Config{Node: "a", Clusters: []string{"c"}, Lease: time.Millisecond},
		leaderAlways{term: 4}, roleStore{kv: kv}, zerolog.Nop(),
		roles.Role{Name: roles.Retention, Run: func(ctx context.Context, f *roles.Fence) error {
			fences <- f
			<-ctx.Done()
			return ctx.Err()
		}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	var f *roles.Fence
	select {
	case f = <-fences:
	case <-time.After(10 * time.Second):
		t.Fatal("role did not start")
	}
	bg := context.Background()
	ctx := roles.WithFence(bg, f)
	for _, k := range []string{"exec/1", "exec/2", "exec/3"} {
		if _, err := ds.Put(bg, "c", k, []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ds.DeleteMulti(ctx, "c", []dispatch.KV{{Key: "exec/1"}}); err != nil {
		t.Fatalf("fenced delete while active: %v", err)
	}
	vs, err := ds.PutMulti(ctx, "c", []dispatch.KV{{Key: "exec/4", Value: []byte("y")}})
	if err != nil || len(vs) != 1 {
		t.Fatalf("fenced put: %v %v (want one version: the fence's is not the caller's)", vs, err)
	}
	stale := uint64(1)
	if err := ds.DeleteMulti(ctx, "c", []dispatch.KV{{Key: "exec/2", CAS: &stale}}); !errors.Is(err, dispatch.ErrConflict) {
		t.Fatalf("stale record CAS: %v, want ErrConflict", err)
	}
	if err := ds.DeleteMulti(ctx, "c", []dispatch.KV{{Key: "exec/2"}}); err != nil {
		t.Fatalf("fence lost over another key's conflict: %v", err)
	}

	// A later leader (term 5) claims the role.
	it, _, _ := kv.Get(bg, "c", roles.FenceKey(roles.Retention))
	rec, err := roles.DecodeRecord(it.Value)
	if err != nil || rec.Term != 4 || rec.Node != "a" {
		t.Fatalf("fence record %+v %v", rec, err)
	}
	if _, conflict, err := (roleStore{kv: kv}).Put(bg, "c", roles.FenceKey(roles.Retention),
		[]byte(`{"role":"retention","node":"b","term":5}`), it.Version); err != nil || conflict {
		t.Fatalf("claim by b: %v %v", conflict, err)
	}
	err = ds.DeleteMulti(ctx, "c", []dispatch.KV{{Key: "exec/3"}})
	if !errors.Is(err, roles.ErrFenced) {
		t.Fatalf("delete after b's claim: %v, want ErrFenced", err)
	}
	if _, _, found, _ := ds.Get(bg, "c", "exec/3"); !found {
		t.Fatal("a fenced-out activation deleted a record")
	}
	waitActive := time.Now().Add(10 * time.Second)
	for len(m.Active()) != 0 {
		if time.Now().After(waitActive) {
			t.Fatal("the fenced-out role is still active")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRoleView(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := &roles.Record{Role: "retention", Node: "n1", Term: 4, Since: since, Standbys: []string{"n2", "n3"}}
	group := func(leader string, term uint64) *consensus.GroupStatus {
		return &consensus.GroupStatus{Cluster: "c", Leader: leader, Term: term, Local: true,
			Replicas: []consensus.Replica{{Node: "n1"}, {Node: "n2"}, {Node: "n3"}}}
	}
	cases := []struct {
		name     string
		rec      *roles.Record
		group    *consensus.GroupStatus
		alive    map[string]bool
		state    string
		active   string
		fence    uint64
		standbys string
	}{
		{"active on the leader", rec, group("n1", 4), nil, "active", "n1", 4, "n2,n3"},
		{"new leader in its lease", rec, group("n2", 5), nil, "starting", "", 0, "n1,n3"},
		{"no record yet", nil, group("n2", 5), nil, "starting", "", 0, "n1,n3"},
		{"no leader", rec, group("", 5), nil, "none", "", 0, "n1,n2,n3"},
		{"no replica here, active alive", rec, nil, map[string]bool{"n1": true}, "active", "n1", 4, "n2,n3"},
		{"no replica here, active dead", rec, nil, map[string]bool{"n1": false}, "none", "", 0, ""},
	}
	for _, c := range cases {
		rs := roleView("c", "retention", c.rec, c.group, c.alive)
		if rs.State != c.state || rs.Active != c.active || rs.Fence != c.fence ||
			strings.Join(rs.Standbys, ",") != c.standbys || (c.active != "") != (rs.Since != nil) {
			t.Errorf("%s: %+v, want state %s active %q fence %d standbys %s", c.name, rs, c.state, c.active, c.fence, c.standbys)
		}
	}
}

// A restored snapshot's role records, from the mesh it was taken on, are
// dropped: a term above this group's would keep every leader from
// claiming the role. The rest of the snapshot stays.
func TestRestoreDropsRoleRecords(t *testing.T) {
	src := &fsmKV{st: fsm.NewStore()}
	bg := context.Background()
	for k, v := range map[string]string{roles.FenceKey(roles.Retention): `{"role":"retention","node":"x","term":57}`,
		"svc/web": `{"name":"web"}`} {
		if _, err := src.Apply(bg, "c", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: k, Value: []byte(v)}}}); err != nil {
			t.Fatal(err)
		}
	}
	blob, _ := src.Snapshot(bg, "c")
	dst := &fsmKV{st: fsm.NewStore()}
	sb := &stateBackend{kv: dst}
	if err := sb.Restore(bg, "c", blob); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, found, _ := dst.Get(bg, "c", roles.FenceKey(roles.Retention)); found {
		t.Fatal("the restored mesh kept the source mesh's role record")
	}
	if _, found, _ := dst.Get(bg, "c", "svc/web"); !found {
		t.Fatal("restore lost a service")
	}
}
