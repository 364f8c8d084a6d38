package consensus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// TestStaleGetAfterQuorumLoss: a replica that read linearizably knows it
// was up to date then; once the other voters are gone, linearizable reads
// fail with ErrNoQuorum while a stale read answers from the replica, dated
// no later than that read, and that date no longer moves.
func TestStaleGetAfterQuorumLoss(t *testing.T) {
	ms := startGroup(t, 3)
	var follower *Manager
	var others []*Manager
	for _, m := range ms {
		if follower == nil && !m.IsLeader("c") {
			follower = m
		} else {
			others = append(others, m)
		}
	}
	ctx := context.Background()
	if _, err := follower.Apply(ctx, "c", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: "k", Value: []byte("v1")}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, asOf, err := follower.StaleGet(ctx, "c", "none"); err != nil || !asOf.IsZero() {
		t.Fatalf("before any linearizable read: asOf %v, err %v; want zero (never known current)", asOf, err)
	}
	before := time.Now()
	if _, ok, err := follower.Get(ctx, "c", "k"); err != nil || !ok {
		t.Fatalf("linearizable get: %v %v", ok, err)
	}
	after := time.Now()
	it, ok, asOf, err := follower.StaleGet(ctx, "c", "k")
	if err != nil || !ok || string(it.Value) != "v1" {
		t.Fatalf("stale get: %q %v %v", it.Value, ok, err)
	}
	if asOf.Before(before) || asOf.After(after) {
		t.Fatalf("asOf %v not within the linearizable read [%v, %v]", asOf, before, after)
	}
	if got, hosted := follower.SyncedAt("c"); !hosted || !got.Equal(asOf) {
		t.Fatalf("SyncedAt: %v %v, want %v", got, hosted, asOf)
	}
	for _, m := range others {
		_ = m.Stop()
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, _, err := follower.Get(rctx, "c", "k"); !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("linearizable get without quorum: %v, want ErrNoQuorum", err)
	}
	follower.syncOnce(ctx, follower.shards["c"])
	it, ok, asOf2, err := follower.StaleGet(ctx, "c", "k")
	if err != nil || !ok || string(it.Value) != "v1" {
		t.Fatalf("stale get without quorum: %q %v %v", it.Value, ok, err)
	}
	if !asOf2.Equal(asOf) {
		t.Fatalf("asOf moved to %v without quorum (was %v)", asOf2, asOf)
	}
	if _, ok, _, err := follower.StaleGet(ctx, "c", "missing"); err != nil || ok {
		t.Fatalf("stale get of a missing key: %v %v", ok, err)
	}
}

// TestSyncOnceMarksReplica: keepSynced's read dates a replica nobody read
// through.
func TestSyncOnceMarksReplica(t *testing.T) {
	m := startSingle(t)
	if at, _ := m.SyncedAt("c"); !at.IsZero() {
		t.Fatalf("synced at %v before any read", at)
	}
	before := time.Now()
	m.syncOnce(context.Background(), m.shards["c"])
	if at, _ := m.SyncedAt("c"); at.Before(before) {
		t.Fatalf("synced at %v after a sync read started at %v", at, before)
	}
}

// TestForwardedStaleGet: a node that hosts no replica reads a stale copy
// through one that does, dated by that replica's own synced time.
func TestForwardedStaleGet(t *testing.T) {
	_, nodes := startMesh(t, 4)
	ctx := context.Background()
	n4 := nodes[3].m
	if _, err := n4.Apply(ctx, "default", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: "k", Value: []byte("v")}}}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, func() error {
		it, ok, asOf, err := n4.StaleGet(ctx, "default", "k")
		switch {
		case err != nil:
			return err
		case !ok || string(it.Value) != "v":
			return errors.New("value not there yet")
		case asOf.Before(start.Add(-2 * time.Second)):
			return errors.New("answering replica not synced yet")
		case asOf.After(time.Now()):
			return errors.New("asOf in the future")
		}
		return nil
	})
}
