package consensus

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// noPeers is a gossip view with nobody in it.
type noPeers struct{}

func (noPeers) Peers() []Peer { return nil }

// startSingle runs a Manager hosting a one-voter group of cluster "c" on
// loopback, without the reconcile loop (nothing here depends on gossip),
// and waits until the group has a leader.
func startSingle(t testing.TB) *Manager {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := DefaultConfig()
	cfg.NodeName, cfg.DataDir, cfg.LocalCluster = "n1", t.TempDir(), "c"
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = addr, addr
	cfg.BootstrapExpect, cfg.RTTMillisecond = 0, 5
	m, err := New(cfg, noPeers{}, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if m.nh, err = dragonboat.NewNodeHost(m.nodeHostConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	h := hosted{Cluster: "c", Shard: ShardID("c"), Replica: replicaID("n1", 0)}
	if err := m.startReplica(h, map[uint64]string{h.Replica: addr}, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !m.IsLeader("c") {
		if time.Now().After(deadline) {
			t.Fatal("the one-voter group elected no leader within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m
}

// BenchmarkApply: unconditional single-key writes through Manager.Apply
// and the batcher to a one-voter group (in-memory log DB, loopback), from
// 32 concurrent callers: the write path's CPU without the network.
func BenchmarkApply(b *testing.B) {
	m := startSingle(b)
	ctx := context.Background()
	b.SetParallelism(16) // 32 callers on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			k := fmt.Sprintf("k/%d", i%1000)
			if _, err := m.Apply(ctx, "c", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: k, Value: []byte("value")}}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
