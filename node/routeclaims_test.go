package node

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// memKV is a kvStore over the real state machine, one cluster.
type memKV struct {
	mu sync.Mutex
	s  *fsm.Store
}

func (m *memKV) Apply(_ context.Context, _ string, cmd fsm.Command) (fsm.Result, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Apply(cmd), nil
}

func (m *memKV) Get(_ context.Context, _, key string) (fsm.Item, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.s.Get(key)
	return it, ok, nil
}

func (m *memKV) List(_ context.Context, _ string, q fsm.ListQuery) ([]fsm.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.List(q), nil
}

func (m *memKV) IsLeader(string) bool                             { return true }
func (m *memKV) Snapshot(context.Context, string) ([]byte, error) { return nil, nil }
func (m *memKV) Restore(context.Context, string, []byte) error    { return nil }

func httpSvc(name string, mod func(*dispatch.Service)) dispatch.Service {
	s := dispatch.Service{Name: name, Type: dispatch.TypeHTTP, Upstream: "http://127.0.0.1:1"}
	mod(&s)
	return s
}

func TestRouteClaims(t *testing.T) {
	kv := &memKV{s: fsm.NewStore()}
	st := &stateBackend{kv: kv}
	ctx := context.Background()
	put := func(s dispatch.Service) error { _, err := st.PutService(ctx, "c", s, nil); return err }
	claimOf := func(key string) string {
		it, ok, _ := kv.Get(ctx, "c", key)
		if !ok {
			return ""
		}
		return string(it.Value)
	}
	if err := put(httpSvc("a", func(s *dispatch.Service) { s.Paths = []dispatch.PathRoute{{Prefix: "/v2/"}} })); err != nil {
		t.Fatal(err)
	}
	err := put(httpSvc("b", func(s *dispatch.Service) { s.Paths = []dispatch.PathRoute{{Prefix: "/v2/"}} }))
	var he *httpapi.Error
	if !errors.As(err, &he) || he.Status != 409 || !strings.Contains(he.Error(), `service "a"`) {
		t.Fatalf("conflict: %v", err)
	}
	if _, ok, _ := kv.Get(ctx, "c", dispatch.ServiceKey("b")); ok {
		t.Fatal("the refused service was written")
	}
	// a moves to /v3/: /v2/ is released in the same write.
	if err := put(httpSvc("a", func(s *dispatch.Service) { s.Paths = []dispatch.PathRoute{{Prefix: "/v3/"}} })); err != nil {
		t.Fatal(err)
	}
	if claimOf("route/*/v2/") != "" || !strings.Contains(claimOf("route/*/v3/"), `"a"`) {
		t.Fatalf("claims after the move: v2 %q v3 %q", claimOf("route/*/v2/"), claimOf("route/*/v3/"))
	}
	if err := put(httpSvc("b", func(s *dispatch.Service) { s.Paths = []dispatch.PathRoute{{Prefix: "/v2/"}} })); err != nil {
		t.Fatal(err)
	}
	// A claim its holder no longer makes (left behind) can be taken.
	_ = kv.s.Apply(fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: "route/*/old/", Value: []byte(`{"service":"a"}`)}}})
	if err := put(httpSvc("c", func(s *dispatch.Service) { s.Paths = []dispatch.PathRoute{{Prefix: "/old/"}} })); err != nil {
		t.Fatalf("stale claim: %v", err)
	}
	// Delete releases the claims; a stale CAS is refused.
	v := uint64(12345)
	if err := st.DeleteService(ctx, "c", "b", &v); err == nil {
		t.Fatal("delete with a wrong cas")
	}
	if err := st.DeleteService(ctx, "c", "b", nil); err != nil {
		t.Fatal(err)
	}
	if claimOf("route/*/v2/") != "" {
		t.Fatal("delete left the claim")
	}
	// Concurrent writers of the same route: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = put(httpSvc(string(rune('p'+i)), func(s *dispatch.Service) { s.Hosts = []string{"x.test"} }))
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		}
	}
	if ok != 1 {
		t.Fatalf("%d writers claimed x.test: %v", ok, errs)
	}
}
