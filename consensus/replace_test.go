package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

func init() { InstallLogger(zerolog.Nop()) }

// fakeMembers is a gossip view the test edits: every manager sees the
// same members, as gossip converges to.
type fakeMembers struct {
	mu    sync.Mutex
	peers map[string]Peer
}

func (f *fakeMembers) Peers() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Peer, 0, len(f.peers))
	for _, p := range f.peers {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (f *fakeMembers) set(p Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers[p.Name] = p
}

func (f *fakeMembers) get(name string) Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[name]
}

type apNode struct {
	name          string
	dataDir, raft string
	m             *Manager
	rpc           *transport.Transport
	once          sync.Once
}

func (n *apNode) stop() {
	n.once.Do(func() {
		n.m.Stop()
		n.rpc.Close()
	})
}

// startTestNode starts a manager with a real transport and NodeHost on
// loopback; it bootstraps nothing (BootstrapExpect 0). With prev it
// restarts that node: same data dir and Raft address.
func startTestNode(t *testing.T, tlsDir, name string, view *fakeMembers, prev *apNode) *apNode {
	t.Helper()
	ca, cert, key, err := tlsutil.EnsureDevFiles(tlsDir, name)
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
	tcfg.HandshakeTimeout = time.Second
	log := zerolog.Nop()
	if os.Getenv("MESHGW_TEST_LOG") != "" {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).
			With().Timestamp().Str("node", name).Logger()
	}
	rpc, err := transport.New(tcfg, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = t.TempDir()
	raft := freeTCP(t)
	if prev != nil {
		cfg.DataDir, raft = prev.dataDir, prev.raft
	}
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = raft, raft
	cfg.BootstrapExpect = 0
	cfg.DeadVoterTimeout = time.Second
	cfg.ReconcileInterval = 200 * time.Millisecond
	m, err := New(cfg, view, rpc, log)
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
	n := &apNode{name: name, dataDir: cfg.DataDir, raft: raft, m: m, rpc: rpc}
	t.Cleanup(n.stop)
	view.set(Peer{Name: name, Cluster: cfg.LocalCluster, RaftAddr: raft, RPCAddr: rpc.Addr().String(),
		Status: "alive"})
	return n
}

// leaderOf returns the node that leads the group as the live nodes see it.
func leaderOf(nodes map[string]*apNode) string {
	for _, n := range nodes {
		if n.m.IsLeader("default") {
			return n.name
		}
	}
	return ""
}

func apWaitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A voter dies and the only spare refuses joins for a while (its RPC
// address is a socket that never answers): the group must keep a leader
// all along and end with 3 voters, all on live nodes.
func TestReplaceDeadVoterWhileJoinFails(t *testing.T) {
	if testing.Short() {
		t.Skip("4 in-process Raft nodes")
	}
	tlsDir := t.TempDir()
	view := &fakeMembers{peers: map[string]Peer{}}
	nodes := map[string]*apNode{}
	for _, name := range []string{"a1", "a2", "a3"} {
		nodes[name] = startTestNode(t, tlsDir, name, view, nil)
	}
	initial := map[uint64]string{}
	for name := range nodes {
		initial[replicaID(name, 0)] = view.get(name).RaftAddr
	}
	for name, n := range nodes {
		h := hosted{Cluster: "default", Shard: ShardID("default"), Replica: replicaID(name, 0), Initial: initial}
		if err := n.m.startReplica(h, initial, false); err != nil {
			t.Fatal(err)
		}
	}
	apWaitFor(t, 20*time.Second, "first leader", func() error {
		if leaderOf(nodes) == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	put := func(n *apNode, key string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		cmd := fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte("v")}}}
		_, err := n.m.Apply(ctx, "default", cmd)
		return err
	}
	leader := nodes[leaderOf(nodes)]
	if err := put(leader, "before"); err != nil {
		t.Fatal(err)
	}

	// The spare: its gossip entry points RPC at a black hole first.
	hole, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	spare := startTestNode(t, tlsDir, "a4", view, nil)
	realRPC := view.get("a4").RPCAddr
	p := view.get("a4")
	p.RPCAddr = hole.LocalAddr().String()
	view.set(p)

	var victim string
	for name := range nodes {
		if name != leader.name {
			victim = name
			break
		}
	}
	nodes[victim].stop()
	delete(nodes, victim)
	p = view.get(victim)
	p.Status = "failed"
	view.set(p)
	nodes["a4"] = spare

	// Watch for a leader from here on, every 50 ms.
	var (
		mu          sync.Mutex
		lastLeader  = time.Now()
		longestNone time.Duration
	)
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tk.C:
			}
			now := time.Now()
			mu.Lock()
			if leaderOf(nodes) != "" {
				lastLeader = now
			} else if d := now.Sub(lastLeader); d > longestNone {
				longestNone = d
			}
			mu.Unlock()
		}
	}()
	defer func() { stopWatch(); <-watchDone }()
	leaderGap := func() time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return longestNone
	}
	// An election takes 1-2 election timeouts (200-400 ms here); a group
	// without a leader for 3 s has lost it.
	const maxGap = 3 * time.Second

	shardMembers := func() (*struct{ voters, nonVoters map[uint64]string }, error) {
		l := nodes[leaderOf(nodes)]
		if l == nil {
			return nil, fmt.Errorf("no leader")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		mem, err := l.m.nh.SyncGetShardMembership(ctx, ShardID("default"))
		if err != nil {
			return nil, err
		}
		return &struct{ voters, nonVoters map[uint64]string }{mem.Nodes, mem.NonVotings}, nil
	}
	spareRaft := view.get("a4").RaftAddr
	inGroup := func(mem map[uint64]string) bool {
		for _, a := range mem {
			if a == spareRaft {
				return true
			}
		}
		return false
	}
	// Autopilot adds the spare once the victim has been failed for the
	// dead-voter timeout; its join calls fail meanwhile.
	apWaitFor(t, 20*time.Second, "spare added to the group", func() error {
		if g := leaderGap(); g > maxGap {
			t.Fatalf("the group had no leader for %s", g)
		}
		mem, err := shardMembers()
		if err != nil {
			return err
		}
		if !inGroup(mem.voters) && !inGroup(mem.nonVoters) {
			return fmt.Errorf("spare not in %v / %v", mem.voters, mem.nonVoters)
		}
		return nil
	})
	// Leadership moves to the other live voter meanwhile: the new leader
	// finds the pending join in the group's state and carries on.
	var other *apNode
	for name, n := range nodes {
		if name != leader.name && name != "a4" {
			other = n
		}
	}
	if err := leader.m.nh.RequestLeaderTransfer(ShardID("default"), replicaID(other.name, 0)); err != nil {
		t.Fatal(err)
	}
	apWaitFor(t, 10*time.Second, "leadership moved", func() error {
		if !other.m.IsLeader("default") {
			return fmt.Errorf("leader is %q", leaderOf(nodes))
		}
		return nil
	})
	apWaitFor(t, 5*time.Second, "the new leader sees the pending join", func() error {
		h, _ := other.m.hostedShard("default")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		pending, err := other.m.pendingJoins(ctx, h)
		if err != nil {
			return err
		}
		for _, pj := range pending {
			if pj.Node == "a4" && pj.RaftAddr == spareRaft {
				return nil
			}
		}
		return fmt.Errorf("pending joins %+v", pending)
	})
	// Joins keep failing for a while: the group keeps its leader.
	refuseUntil := time.Now().Add(4 * time.Second)
	for time.Now().Before(refuseUntil) {
		if g := leaderGap(); g > maxGap {
			t.Fatalf("the group had no leader for %s while the spare refused to join", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p = view.get("a4")
	p.RPCAddr = realRPC
	view.set(p)

	apWaitFor(t, 40*time.Second, "3 voters on live nodes", func() error {
		if g := leaderGap(); g > maxGap {
			t.Fatalf("the group had no leader for %s", g)
		}
		mem, err := shardMembers()
		if err != nil {
			return err
		}
		live := map[string]bool{}
		for name := range nodes {
			live[view.get(name).RaftAddr] = true
		}
		for _, a := range mem.voters {
			if !live[a] {
				return fmt.Errorf("voter at %s is not a live node (voters %v)", a, mem.voters)
			}
		}
		if len(mem.voters) != 3 || len(mem.nonVoters) != 0 {
			return fmt.Errorf("voters %v, non-voters %v", mem.voters, mem.nonVoters)
		}
		return nil
	})
	apWaitFor(t, 10*time.Second, "a write through the spare", func() error { return put(spare, "after") })
	if g := leaderGap(); g > maxGap {
		t.Fatalf("the group had no leader for %s", g)
	}
	stopWatch()
	<-watchDone

	// The new voter restarts as if it had missed the promotion notice
	// (shards.json still says non-voting): the membership it replays must
	// make it a voter again, and it must vote: with the other follower
	// stopped, the leader can commit only with it.
	spare.stop()
	path := filepath.Join(spare.dataDir, "raft", "shards.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var hs []hosted
	if err := json.Unmarshal(data, &hs); err != nil || len(hs) != 1 {
		t.Fatalf("shards.json: %v %s", err, data)
	}
	hs[0].NonVoting = true
	data, _ = json.Marshal(hs)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	spare = startTestNode(t, tlsDir, "a4", view, spare)
	nodes["a4"] = spare
	apWaitFor(t, 15*time.Second, "a write through the restarted voter", func() error {
		return put(spare, "restarted")
	})
	l := leaderOf(nodes)
	for name, n := range nodes {
		if name != l && name != "a4" {
			n.stop()
			delete(nodes, name)
		}
	}
	apWaitFor(t, 15*time.Second, "a write with only the leader and the restarted voter", func() error {
		if leaderOf(nodes) == "" {
			return fmt.Errorf("no leader")
		}
		return put(nodes[leaderOf(nodes)], "two-of-three")
	})
}

// A node of an older version, whose join handler starts every replica as
// a voter, must refuse autopilot's join (and so never start a non-voter
// as a voter, which panics dragonboat) rather than act on it.
func TestOlderNodeRefusesNonVotingJoin(t *testing.T) {
	tlsDir := t.TempDir()
	tlsConf := func(name string) transport.Config {
		ca, cert, key, err := tlsutil.EnsureDevFiles(tlsDir, name)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := tlsutil.LoadFiles(ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		c := transport.DefaultConfig()
		c.BindAddr, c.TLS = "127.0.0.1:0", tc
		return c
	}
	old, err := transport.New(tlsConf("old"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var calls []string
	old.Handle(methodJoin, func(ctx context.Context, r *transport.Request) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, string(r.Body))
		return []byte("{}"), nil
	})
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	rpc, err := transport.New(tlsConf("leader"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeName, cfg.DataDir = "leader", t.TempDir()
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = "127.0.0.1:1", "127.0.0.1:1"
	m, err := New(cfg, &fakeMembers{peers: map[string]Peer{}}, rpc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Start(); err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := hosted{Cluster: "default", Shard: ShardID("default"), Replica: 1}
	_, err = m.tellJoin(ctx, h, Peer{Name: "old", RPCAddr: old.Addr().String()}, 2, true)
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != transport.CodeNoHandler {
		t.Fatalf("join of an older node: %v, want a %s error", err, transport.CodeNoHandler)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 0 {
		t.Fatalf("the older node's join handler ran: %v", calls)
	}
}
