package consensus

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rpcCalls sums the outgoing transport calls of nodes (the
// meshgw_rpc_calls_total counter each agent exports on /metrics).
func rpcCalls(t testing.TB, nodes []*testNode) float64 {
	var sum float64
	for _, n := range nodes {
		reg := prometheus.NewRegistry()
		reg.MustRegister(n.rpc.Collectors()...)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meshgw_rpc_calls_total" {
				sum += mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
	}
	return sum
}

// idleRate starts n managers (3 voters, bootstrap-expect 3, the default
// one-second reconcile interval), waits for the group and for a few passes
// to settle, then returns the outgoing RPC calls per second per node over
// window.
func idleRate(t testing.TB, n int, window time.Duration) float64 {
	mesh, nodes := startMeshWith(t, n, func(c *Config) { c.ReconcileInterval = time.Second })
	_ = mesh
	time.Sleep(3 * time.Second) // settle: joins of n2, n3 and first probes
	before := rpcCalls(t, nodes)
	start := time.Now()
	time.Sleep(window)
	return (rpcCalls(t, nodes) - before) / time.Since(start).Seconds() / float64(n)
}

// TestIdleRPCRateSmallMesh is defect 9 of issue 12 at 5 nodes: once the
// group exists, nodes that host no replica stop probing their peers (the
// old code: 3.2 RPC/s per node, every non-host asking every peer each
// second).
func TestIdleRPCRateSmallMesh(t *testing.T) {
	r := idleRate(t, 5, 3*time.Second)
	t.Logf("idle: 5 nodes, %.2f RPC/s per node", r)
	if r > 0.5 {
		t.Fatalf("an idle 5-node mesh makes %.2f RPC/s per node; want (almost) none", r)
	}
}

// TestIdleRPCRate measures idle RPC/s per node at MESHGW_IDLE_SIZES nodes
// (e.g. "5,20,50"); it is skipped unless that is set (50 NodeHosts take a
// while to start on 2 cores).
func TestIdleRPCRate(t *testing.T) {
	sizes := os.Getenv("MESHGW_IDLE_SIZES")
	if sizes == "" {
		t.Skip("set MESHGW_IDLE_SIZES=5,20,50 to measure idle RPC/s per node")
	}
	for _, s := range splitComma(sizes) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 {
			t.Fatalf("MESHGW_IDLE_SIZES: %q is not a size >= 3", s)
		}
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := idleRate(t, n, 5*time.Second)
			t.Logf("idle: %d nodes, %.2f RPC/s per node, %.1f RPC/s in all", n, r, r*float64(n))
		})
	}
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			if i > start {
				out = append(out, s[start:i])
			}
			start = i + 1
		}
	}
	return out
}
