package consensus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// A voter down (or cut off) long enough is replaced by autopilot and
// removed from the group, and never hears of it. Restarted from its data
// dir, it came back with the old membership, no leader and no way to get
// one, and timed out every call it served, for good. Now it learns from
// the peers that host the group that it was removed, drops its replica and
// forwards.
func TestRemovedVoterDropsItsReplica(t *testing.T) {
	mesh, nodes := startMeshWith(t, 4, func(c *Config) { c.DeadVoterTimeout = time.Second })
	var victim, leader *testNode
	waitFor(t, 10*time.Second, func() error {
		for _, n := range nodes[:3] {
			if n.m.IsLeader("default") {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	for _, n := range nodes[:3] {
		if n != leader {
			victim = n
			break
		}
	}
	old, _ := victim.m.hostedShard("default")
	vcfg := victim.cfg
	victim.stop()
	mesh.setStatus(victim.name, "failed")
	mesh.setHosting(victim.name, false)

	// Autopilot replaces it with n4 and removes it.
	shard := ShardID("default")
	waitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		mem, err := leader.m.nh.SyncGetShardMembership(ctx, shard)
		if err != nil {
			return err
		}
		if _, gone := mem.Removed[old.Replica]; !gone || len(mem.Nodes) != 3 {
			return fmt.Errorf("voters %v, removed %v", mem.Nodes, mem.Removed)
		}
		return nil
	})

	back := startNode(t, mesh, mesh.caDir, victim.name, vcfg.DataDir, func(c *Config) {
		c.RaftBindAddr, c.RaftAdvertiseAddr = vcfg.RaftBindAddr, vcfg.RaftAdvertiseAddr
		c.DeadVoterTimeout = time.Second
	})
	if _, ok := back.m.hostedShard("default"); !ok {
		t.Fatal("the restarted node did not restart its replica from its data dir")
	}
	waitFor(t, 20*time.Second, func() error {
		if _, ok := back.m.hostedShard("default"); ok {
			return fmt.Errorf("%s still hosts its removed replica", back.name)
		}
		return nil
	})
	// It serves again, by forwarding.
	waitFor(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := back.m.Apply(ctx, "default", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: "after", Value: []byte("x")}}})
		return err
	})
}
