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
func startSingle(t testing.TB) *Manager { return startGroup(t, 1)[0] }

// startGroup runs n Managers (n1..nn) hosting one group of cluster "c"
// with n voters, as startSingle does, and waits until it has a leader.
func startGroup(t testing.TB, n int) []*Manager {
	t.Helper()
	var ms []*Manager
	members := map[uint64]string{}
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cfg := DefaultConfig()
		cfg.NodeName, cfg.DataDir, cfg.LocalCluster = fmt.Sprintf("n%d", i), t.TempDir(), "c"
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
		members[replicaID(cfg.NodeName, 0)] = addr
		ms = append(ms, m)
	}
	for _, m := range ms {
		h := hosted{Cluster: "c", Shard: ShardID("c"), Replica: replicaID(m.cfg.NodeName, 0)}
		if err := m.startReplica(h, members, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, m := range ms {
			if m.IsLeader("c") {
				return ms
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d-voter group elected no leader within 20 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
