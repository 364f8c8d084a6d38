package consensus

import (
	"context"
	"fmt"
	"net"
	"os"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// fakeMesh is a gossip view shared by in-process managers: every manager
// sees the same members, and the test sets their status.
type fakeMesh struct {
	mu      sync.Mutex
	peers   map[string]Peer
	hosting map[string]bool // the gossip hosting tag, as OnHosting sets it
	// visible, when it has an entry for a node, restricts that node's view.
	visible map[string]map[string]bool
	caDir   string // the CA startMeshWith's nodes share
}

func (f *fakeMesh) Peers() []Peer { return f.peersOf("") }

// peersOf is the view of observer: every member, or the ones in
// visible[observer] when the test restricts it.
func (f *fakeMesh) peersOf(observer string) []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Peer, 0, len(f.peers))
	for _, p := range f.peers {
		if v, ok := f.visible[observer]; ok && !v[p.Name] {
			continue
		}
		p.Hosting = f.hosting[p.Name]
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// viewOf is observer's Membership.
func (f *fakeMesh) viewOf(observer string) Membership { return observerView{f, observer} }

type observerView struct {
	f    *fakeMesh
	name string
}

func (v observerView) Peers() []Peer { return v.f.peersOf(v.name) }

func (f *fakeMesh) set(p Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[p.Name] = p
}

func (f *fakeMesh) setHosting(name string, hosting bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hosting == nil {
		f.hosting = map[string]bool{}
	}
	f.hosting[name] = hosting
}

func (f *fakeMesh) setStatus(name, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peers[name]
	p.Status = status
	f.peers[name] = p
}

// testNode is one in-process manager with its own transport.
type testNode struct {
	name string
	m    *Manager
	rpc  *transport.Transport
	dir  string
	cfg  Config
}

func (n *testNode) stop() {
	_ = n.m.Stop()
	_ = n.rpc.Close()
}

// freeTCP returns a loopback address free at the time of the call.
func freeTCP(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testLogger(name string) zerolog.Logger {
	if os.Getenv("MESHGW_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.InfoLevel).
		With().Timestamp().Str("node", name).Logger()
}

// fastConfig is a Config with short timers for in-process tests.
func fastConfig(name, dir, raft string, expect int) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = dir
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = raft, raft
	cfg.BootstrapExpect = expect
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.BootstrapStable = 300 * time.Millisecond
	cfg.DeadVoterTimeout = time.Hour // no replacement: the test looks at bootstrap alone
	cfg.RTTMillisecond = 10
	cfg.OpTimeout = 2 * time.Second
	return cfg
}

// startNode starts a manager named name on dir (a fresh one when empty),
// registers it alive in mesh and returns it.
func startNode(t testing.TB, mesh *fakeMesh, caDir, name, dir string, cfg func(*Config)) *testNode {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ca, cert, key, err := tlsutil.EnsureDevFiles(caDir, name)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.BindAddr = "127.0.0.1:0"
	tcfg.TLS = tc
	rpc, err := transport.New(tcfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	c := fastConfig(name, dir, freeTCP(t), 3)
	c.OnHosting = func(h bool) { mesh.setHosting(name, h) }
	if cfg != nil {
		cfg(&c)
	}
	m, err := New(c, mesh.viewOf(name), rpc, testLogger(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		rpc.Close()
		t.Fatal(err)
	}
	n := &testNode{name: name, m: m, rpc: rpc, dir: dir, cfg: c}
	t.Cleanup(n.stop)
	mesh.set(Peer{Name: name, Cluster: c.LocalCluster, RaftAddr: c.RaftAdvertiseAddr,
		RPCAddr: rpc.Addr().String(), Status: "alive"})
	return n
}

func waitFor(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

// startMesh starts n managers n1..nN (all with bootstrap-expect 3) and
// waits until n1..n3 host the group and it has a leader.
func startMesh(t testing.TB, n int) (*fakeMesh, []*testNode) {
	t.Helper()
	return startMeshWith(t, n, nil)
}

func startMeshWith(t testing.TB, n int, cfg func(*Config)) (*fakeMesh, []*testNode) {
	t.Helper()
	caDir := t.TempDir()
	mesh := &fakeMesh{peers: map[string]Peer{}, caDir: caDir}
	var nodes []*testNode
	format := "n%d"
	if n >= 10 {
		format = "n%02d" // n01, n02, n03 are the three smallest names
	}
	for i := 1; i <= n; i++ {
		nodes = append(nodes, startNode(t, mesh, caDir, fmt.Sprintf(format, i), "", cfg))
	}
	started := time.Now()
	waitFor(t, 20*time.Second, func() error {
		for _, x := range nodes[:3] {
			if _, ok := x.m.hostedShard("default"); !ok {
				return fmt.Errorf("%s hosts no replica", x.name)
			}
		}
		for _, x := range nodes[:3] {
			if x.m.IsLeader("default") {
				return nil
			}
		}
		return fmt.Errorf("no leader")
	})
	t.Logf("%d managers started; group of n1..n3 led %s after the last start", n,
		time.Since(started).Round(time.Millisecond))
	return mesh, nodes
}

// TestNoSecondGroupAfterVoterFails is defect 0 of issue 12: with 3 voters
// n1..n3 and bootstrap-expect 3 everywhere, n1 failing made n4 see n2, n3,
// n4 as the first three alive names, take n2's and n3's replicas for its
// own bootstrap round and create a second group.
func TestNoSecondGroupAfterVoterFails(t *testing.T) {
	mesh, nodes := startMesh(t, 5)
	h1, _ := nodes[0].m.hostedShard("default")
	want := h1.Initial
	nodes[0].stop()
	mesh.setStatus("n1", "failed")

	// 2×BootstrapStable plus a dozen reconcile passes: the unfixed code
	// created the rogue group after one stable period.
	deadline := time.Now().Add(2*nodes[1].cfg.BootstrapStable + 12*nodes[1].cfg.ReconcileInterval)
	for time.Now().Before(deadline) {
		for _, x := range nodes[1:] {
			h, ok := x.m.hostedShard("default")
			if !ok {
				continue
			}
			if x.name == "n4" || x.name == "n5" {
				t.Fatalf("%s hosts a group it was never added to (initial %v)", x.name, h.Initial)
			}
			if !reflect.DeepEqual(h.Initial, want) {
				t.Fatalf("%s hosts a group with initial members %v; the group's are %v", x.name, h.Initial, want)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSeenSurvivesRestart: a node that has seen the group never creates
// one after a restart, even as a single node (bootstrap-expect 1) that
// would create at once; its proposal registry survives too.
func TestSeenSurvivesRestart(t *testing.T) {
	mesh := &fakeMesh{peers: map[string]Peer{}}
	caDir, dir, raft := t.TempDir(), t.TempDir(), freeTCP(t)
	sameRaft := func(expect int) func(*Config) {
		return func(c *Config) {
			c.RaftBindAddr, c.RaftAdvertiseAddr, c.BootstrapExpect = raft, raft, expect
		}
	}
	n := startNode(t, mesh, caDir, "n1", dir, sameRaft(0))
	n.m.bootMu.Lock()
	n.m.boot.Proposals["n7"] = bootProposal{Initiator: "n7", Members: []string{"n7", "n8", "n9"}, At: time.Now()}
	if err := n.m.markSeen("test: a peer hosts the group"); err != nil {
		t.Fatal(err)
	}
	n.m.bootMu.Unlock()
	n.stop()

	restarted := time.Now()
	n = startNode(t, mesh, caDir, "n1", dir, sameRaft(1))
	if !n.m.isSeen() {
		t.Fatal("seen was lost across the restart")
	}
	n.m.bootMu.Lock()
	p, ok := n.m.boot.Proposals["n7"]
	n.m.bootMu.Unlock()
	if !ok || p.At.Before(restarted) {
		t.Fatalf("proposal registry after restart: %+v (ok %v); want n7's, recorded at load time", p, ok)
	}
	deadline := time.Now().Add(10 * n.cfg.ReconcileInterval)
	for time.Now().Before(deadline) {
		if _, ok := n.m.hostedShard("default"); ok {
			t.Fatal("a node that had seen the group created one after a restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFreshSingleNodeBootstrapsAtOnce: -dev (bootstrap-expect 1) still
// creates its group within moments.
func TestFreshSingleNodeBootstrapsAtOnce(t *testing.T) {
	mesh := &fakeMesh{peers: map[string]Peer{}}
	start := time.Now()
	n := startNode(t, mesh, t.TempDir(), "n1", "", func(c *Config) { c.BootstrapExpect = 1 })
	waitFor(t, 5*time.Second, func() error {
		if !n.m.IsLeader("default") {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	t.Logf("single node leads its group %s after start", time.Since(start).Round(time.Millisecond))
}

// TestInitiatorsWithDifferentViews is the conflict rule of doc.go at work:
// a1 sees {a1, a2, x} and b1 sees {b1, b2, x} (x sees all five), so each
// is the initiator of its own three voters. Only x is common to both
// views; through it at most one of them may create a group.
func TestInitiatorsWithDifferentViews(t *testing.T) {
	set := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	a, b := set("a1", "a2", "x"), set("b1", "b2", "x")
	mesh := &fakeMesh{peers: map[string]Peer{}, visible: map[string]map[string]bool{
		"a1": a, "a2": a, "b1": b, "b2": b,
	}}
	caDir := t.TempDir()
	var nodes []*testNode
	for _, n := range []string{"a1", "a2", "b1", "b2", "x"} {
		nodes = append(nodes, startNode(t, mesh, caDir, n, "", nil))
	}
	// One group, however many of its first voters started it (the old
	// code had each start it with the same map), has one initial map.
	rounds := map[string][]string{}
	deadline := time.Now().Add(2*nodes[0].cfg.BootstrapStable + 30*nodes[0].cfg.ReconcileInterval)
	for time.Now().Before(deadline) {
		for _, x := range nodes {
			h, ok := x.m.hostedShard("default")
			if !ok || h.BootstrappedAt.IsZero() {
				continue
			}
			r := fmt.Sprint(h.Initial) // fmt sorts map keys
			if !slicesContains(rounds[r], x.name) {
				rounds[r] = append(rounds[r], x.name)
			}
		}
		if len(rounds) > 1 {
			t.Fatalf("two groups were bootstrapped: %v", rounds)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("rounds (hosts): %v", rounds)
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
