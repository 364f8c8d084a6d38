package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

type markKey struct{}

// markStore records whether the retention deletions carried the context
// Maintain was given (a role's fence travels in it).
type markStore struct {
	*memStore
	marked, unmarked atomic.Int32
}

func (s *markStore) DeleteMulti(ctx context.Context, cluster string, kvs []KV) error {
	if ctx.Value(markKey{}) != nil {
		s.marked.Add(1)
	} else {
		s.unmarked.Add(1)
	}
	return s.memStore.DeleteMulti(ctx, cluster, kvs)
}

// TestMaintainIsTheRetentionRolesWork: with no cluster of its own to
// maintain (Clusters empty, as node wires it), the dispatcher runs
// retention only inside Maintain, with Maintain's context, and stops when
// that context ends.
func TestMaintainIsTheRetentionRolesWork(t *testing.T) {
	cfg := testConfig()
	cfg.Clusters = nil
	cfg.RetentionInterval = 20 * time.Millisecond
	cfg.RetentionAge = time.Hour
	st := &markStore{memStore: newMemStore()}
	st.setLeader(testCluster, true) // leadership alone must not start the passes
	rs := newMemRunners()
	rs.set(testCluster, Runner{Name: "n1"})
	d, err := New(cfg, rs, st, nil, nil, "n1", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	put := func() string {
		at := time.Now().Add(-2 * time.Hour)
		ex := Execution{ID: NewID(at), Service: "svc", Cluster: testCluster, Status: StatusSucceeded, CreatedAt: at}
		b, _ := json.Marshal(ex)
		if _, err := st.Put(context.Background(), testCluster, ExecKey(ex.ID), b, nil); err != nil {
			t.Fatal(err)
		}
		return ex.ID
	}
	gone := func(id string) bool {
		_, err := d.Get(context.Background(), testCluster, id)
		return errors.Is(err, ErrNotFound)
	}
	first := put()
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), markKey{}, true))
	done := make(chan error, 1)
	go func() { done <- d.Maintain(ctx, testCluster) }()
	waitFor(t, 5*time.Second, "retention inside Maintain", func() bool { return gone(first) })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Maintain returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Maintain did not return after its context ended")
	}
	if st.marked.Load() == 0 || st.unmarked.Load() != 0 {
		t.Fatalf("deletions with Maintain's context: %d, without: %d", st.marked.Load(), st.unmarked.Load())
	}
	// Maintain on a stopped dispatcher returns at once.
	_ = d.Stop()
	go func() { done <- d.Maintain(context.Background(), testCluster) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Maintain did not return on a stopped dispatcher")
	}
}
