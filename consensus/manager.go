package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	"github.com/lni/dragonboat/v4/config"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
)

// Errors callers classify. All three are temporary: retry later (the API
// answers 503 with Retry-After).
var (
	// ErrNoQuorum: the group has no leader reachable from here.
	ErrNoQuorum = errors.New("consensus: no quorum")
	// ErrNotBootstrapped: the cluster's group does not exist yet (fewer live
	// nodes than bootstrap-expect have been seen).
	ErrNotBootstrapped = errors.New("consensus: group not bootstrapped")
	// ErrTimeout: the operation did not complete in time.
	ErrTimeout = errors.New("consensus: timeout")
)

// Peer is one mesh member as consensus needs to see it.
type Peer struct {
	Name, Cluster, RaftAddr, RPCAddr string
	Status                           string // alive, suspect, failed, left, refused
	// Hosting: the member says (in gossip) that it hosts its cluster's
	// group. A hint for whom to ask first, never proof either way.
	Hosting bool
}

// StatusRefused is the Status of a member gossip sees alive whose TLS this
// node refuses (a foreign CA, a certificate for another name).
const StatusRefused = "refused"

// Membership is the gossip view (node adapts gossip to it). Peers returns
// every member gossip knows, any status; it must not block.
type Membership interface {
	Peers() []Peer
}

// Config configures the Manager.
type Config struct {
	// NodeName is this node's gossip name.
	NodeName string
	// DataDir holds Raft data under DataDir/raft.
	DataDir string
	// RaftBindAddr is the TCP address Raft listens on; RaftAdvertiseAddr the
	// one peers dial (and that gossip advertises).
	RaftBindAddr, RaftAdvertiseAddr string
	// LocalCluster is the cluster this node serves and may be a voter of.
	LocalCluster string
	// BootstrapExpect: live nodes of LocalCluster to see before creating its
	// group (0: never bootstrap; wait to be added).
	BootstrapExpect int
	// Voters is the target number of voters per group.
	Voters int
	// DeadVoterTimeout: how long a voter must be failed before autopilot
	// replaces it. A voter that left gracefully is removed at once.
	DeadVoterTimeout time.Duration
	// JoinTimeout: how long a node added as a non-voter may take to catch
	// up before autopilot removes it again (0: two minutes).
	JoinTimeout time.Duration
	// ReconcileInterval is the period of the bootstrap/autopilot loop.
	ReconcileInterval time.Duration
	// BootstrapStable: how long the set of bootstrap candidates must stay the
	// same before the group is created (guards against racing joins).
	BootstrapStable time.Duration
	// RTTMillisecond, ElectionRTT and HeartbeatRTT are Raft's timings.
	RTTMillisecond, ElectionRTT, HeartbeatRTT uint64
	// SnapshotEntries and CompactionOverhead drive snapshots and log compaction.
	SnapshotEntries, CompactionOverhead uint64
	// MutualTLS with CAFile/CertFile/KeyFile secures the Raft transport. The
	// certificate must carry the advertised Raft IP (dragonboat verifies it).
	MutualTLS                 bool
	CAFile, CertFile, KeyFile string
	// OpTimeout bounds one forwarded or background operation.
	OpTimeout time.Duration
	// OnHosting, when set, is told whether this node hosts LocalCluster's
	// group, each time that changes (node sets a gossip tag with it). It
	// is called from consensus goroutines and must not block for long.
	OnHosting func(hosting bool)
	// LocalOnlyPrefixes: keys under these prefixes are written over RPC
	// only by nodes of the group's own cluster (node: the ACL keys), so a
	// node of another cluster can forward a client's service writes and
	// runs but never mint or revoke a token of this cluster.
	LocalOnlyPrefixes []string
	// ProposalTimeout bounds one proposal: when the leader dies, a client
	// learns within this time that the outcome is unknown (ErrTimeout) and
	// may retry while a new leader is elected.
	ProposalTimeout time.Duration
	// SyncInterval: a hosted replica no linearizable read went through for
	// this long gets one (stale.go), so StaleGet can tell how current it is.
	SyncInterval time.Duration
}

// DefaultConfig returns a complete config except names, dirs and addresses.
func DefaultConfig() Config {
	return Config{
		LocalCluster:       "default",
		BootstrapExpect:    3,
		Voters:             3,
		DeadVoterTimeout:   30 * time.Second,
		ReconcileInterval:  time.Second,
		BootstrapStable:    2 * time.Second,
		RTTMillisecond:     20,
		ElectionRTT:        10,
		HeartbeatRTT:       1,
		SnapshotEntries:    10000,
		CompactionOverhead: 2000,
		OpTimeout:          5 * time.Second,
		ProposalTimeout:    time.Second,
		SyncInterval:       time.Second,
	}
}

// SetRTT sets Raft's time unit and scales what depends on it: a proposal
// or an operation must be allowed to outlast an election (ElectionRTT to
// 2×ElectionRTT RTTs), so ProposalTimeout is at least 3 election timeouts
// and OpTimeout at least 5, never below the defaults (1 s, 5 s).
// A zero rtt leaves the config as it is.
func (c *Config) SetRTT(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	ms := max(uint64(rtt/time.Millisecond), 1)
	c.RTTMillisecond = ms
	election := time.Duration(c.ElectionRTT*ms) * time.Millisecond
	c.ProposalTimeout = max(c.ProposalTimeout, 3*election)
	c.OpTimeout = max(c.OpTimeout, 5*election)
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	switch {
	case c.NodeName == "":
		return errors.New("consensus: NodeName is required")
	case c.DataDir == "":
		return errors.New("consensus: DataDir is required")
	case c.RaftBindAddr == "" || c.RaftAdvertiseAddr == "":
		return errors.New("consensus: RaftBindAddr and RaftAdvertiseAddr are required")
	case c.LocalCluster == "":
		return errors.New("consensus: LocalCluster is required")
	case c.BootstrapExpect < 0:
		return errors.New("consensus: BootstrapExpect must be >= 0")
	case c.Voters < 1:
		return errors.New("consensus: Voters must be >= 1")
	case c.ElectionRTT <= 2*c.HeartbeatRTT || c.HeartbeatRTT == 0 || c.RTTMillisecond == 0:
		return errors.New("consensus: need RTTMillisecond >= 1, HeartbeatRTT >= 1 and ElectionRTT > 2*HeartbeatRTT")
	case c.ReconcileInterval <= 0 || c.OpTimeout <= 0 || c.ProposalTimeout <= 0:
		return errors.New("consensus: ReconcileInterval and OpTimeout must be positive")
	case c.SyncInterval <= 0:
		return errors.New("consensus: SyncInterval must be positive")
	case c.MutualTLS && (c.CAFile == "" || c.CertFile == "" || c.KeyFile == ""):
		return errors.New("consensus: MutualTLS needs CAFile, CertFile and KeyFile")
	}
	return nil
}

// ShardID derives a group's shard ID from its cluster ID (never 0).
func ShardID(cluster string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("meshgw/cluster/" + cluster))
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// replicaID derives a replica ID for a placement of node (never 0).
func replicaID(node string, placement uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node + "/" + strconv.FormatUint(placement, 10)))
	if v := h.Sum64() >> 1; v != 0 { // keep it positive in JSON-minded tools
		return v
	}
	return 1
}

// hosted is one group this node holds a replica of.
type hosted struct {
	Cluster string `json:"cluster"`
	Shard   uint64 `json:"shard"`
	Replica uint64 `json:"replica"`
	// BootstrappedAt is when this node created the group by bootstrap
	// (zero for a replica that joined).
	BootstrappedAt time.Time `json:"bootstrapped_at,omitzero"`
	// Initial is the member map the group was bootstrapped with.
	Initial map[uint64]string `json:"initial,omitempty"`
	// NonVoting: the replica joined as a non-voter and has not heard of
	// its promotion yet (dragonboat must restart it as one). A true left
	// over after a promotion is harmless: the membership the replica
	// replays on restart makes it a voter again.
	NonVoting bool `json:"non_voting,omitempty"`
}

// Manager owns the NodeHost and every group this node takes part in.
type Manager struct {
	cfg     Config
	members Membership
	rpc     *transport.Transport
	log     zerolog.Logger

	nh *dragonboat.NodeHost

	mu           sync.Mutex
	shards       map[string]hosted // by cluster
	batchers     map[uint64]*batcher
	candidates   string
	stableSince  time.Time
	waitReason   string
	waitLogged   time.Time
	failedSince  map[string]time.Time
	unknownSince unknownVoters
	rr           uint64
	// slow holds nodes a forward recently got no answer from, until when:
	// the next forwards try them last.
	slow map[string]time.Time

	// shardNames maps a hosted shard to its cluster, for error messages
	// (read without m.mu).
	shardNames sync.Map
	// bootMu orders bootstrap decisions against info answers (doc.go);
	// boot is the persisted bootstrap state. bootMu comes before mu.
	bootMu sync.Mutex
	boot   bootState

	// epochs holds, per hosted shard, a context canceled when the shard's
	// leader changes (leaderEpoch).
	// leaderless holds, per hosted shard, since when it has known no
	// leader (checkRemoved).
	leaderless map[uint64]time.Time
	// started is set once Start has opened the NodeHost and loaded the
	// persisted state; RPC handlers that need either refuse before.
	started atomic.Bool

	epochMu sync.Mutex
	epochs  map[uint64]epoch

	stats stats // for Counters

	// synced: per hosted shard, when it was last known up to date (stale.go).
	synced syncTimes

	stop chan struct{}
	wg   sync.WaitGroup
}

// New wires a Manager and registers its RPC handlers (call before the
// transport starts). It starts nothing.
func New(cfg Config, members Membership, rpc *transport.Transport, log zerolog.Logger) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg, members: members, rpc: rpc,
		log:          log.With().Str("component", "consensus").Logger(),
		shards:       map[string]hosted{},
		batchers:     map[uint64]*batcher{},
		failedSince:  map[string]time.Time{},
		unknownSince: unknownVoters{},
		epochs:       map[uint64]epoch{},
		leaderless:   map[uint64]time.Time{},
		stop:         make(chan struct{}),
	}
	if rpc != nil {
		rpc.Handle(methodApply, m.serveApply)
		rpc.Handle(methodRead, m.serveRead)
		rpc.Handle(methodInfo, m.serveInfo)
		rpc.Handle(methodJoin, m.serveJoin)
		rpc.Handle(methodJoinNonVoting, m.serveJoin)
		rpc.Handle(methodMembership, m.serveMembership)
	}
	return m, nil
}

func (m *Manager) raftDir() string { return filepath.Join(m.cfg.DataDir, "raft") }

func (m *Manager) shardsFile() string { return filepath.Join(m.raftDir(), "shards.json") }

// Start opens the NodeHost, restarts the groups this node hosted before and
// starts the reconcile loop.
func (m *Manager) Start(ctx context.Context) error {
	if err := os.MkdirAll(m.raftDir(), 0o700); err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	nhc := m.nodeHostConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return m.startError(err)
	}
	m.nh = nh
	prev, err := m.loadShards()
	if err == nil {
		m.bootMu.Lock()
		err = m.loadBoot(time.Now())
		m.bootMu.Unlock()
	}
	if err != nil {
		nh.Close()
		return err
	}
	for _, h := range prev {
		if h.Cluster == m.cfg.LocalCluster {
			m.bootMu.Lock()
			err := m.markSeen("hosted a replica before the restart")
			m.bootMu.Unlock()
			if err != nil {
				nh.Close()
				return err
			}
		}
		if err := m.startReplica(h, nil, false); err != nil {
			nh.Close()
			return fmt.Errorf("consensus: restart group of cluster %s: %w", h.Cluster, err)
		}
		m.log.Info().Str("cluster", h.Cluster).Uint64("replica", h.Replica).Msg("rejoined group from the data dir")
	}
	m.started.Store(true)
	m.wg.Add(2)
	go m.loop()
	go m.keepSynced()
	return nil
}

// Stop stops the loop, the batchers and the NodeHost.
func (m *Manager) Stop() error {
	select {
	case <-m.stop:
		return nil
	default:
	}
	close(m.stop)
	m.wg.Wait()
	m.mu.Lock()
	for _, b := range m.batchers {
		b.close()
	}
	m.mu.Unlock()
	if m.nh != nil {
		m.nh.Close()
	}
	return nil
}

func (m *Manager) loadShards() ([]hosted, error) {
	data, err := os.ReadFile(m.shardsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	var hs []hosted
	if err := json.Unmarshal(data, &hs); err != nil {
		return nil, fmt.Errorf("consensus: %s: %w", m.shardsFile(), err)
	}
	return hs, nil
}

// saveShards persists the hosted groups (caller holds m.mu).
func (m *Manager) saveShards() error {
	hs := make([]hosted, 0, len(m.shards))
	for _, h := range m.shards {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].Cluster < hs[j].Cluster })
	data, _ := json.MarshalIndent(hs, "", "  ")
	tmp := m.shardsFile() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.shardsFile())
}

func (m *Manager) shardConfig(h hosted) config.Config {
	return config.Config{
		ReplicaID:          h.Replica,
		ShardID:            h.Shard,
		IsNonVoting:        h.NonVoting,
		ElectionRTT:        m.cfg.ElectionRTT,
		HeartbeatRTT:       m.cfg.HeartbeatRTT,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    m.cfg.SnapshotEntries,
		CompactionOverhead: m.cfg.CompactionOverhead,
	}
}

// startReplica starts h (members for a new group, join for an added
// replica, neither for a restart) and records it.
func (m *Manager) startReplica(h hosted, members map[uint64]string, join bool) error {
	if err := m.startReplicaLocked(h, members, join); err != nil {
		return err
	}
	if h.Cluster == m.cfg.LocalCluster && m.cfg.OnHosting != nil {
		m.cfg.OnHosting(true)
	}
	return nil
}

func (m *Manager) startReplicaLocked(h hosted, members map[uint64]string, join bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for c, other := range m.shards {
		if other.Shard == h.Shard && c != h.Cluster {
			return fmt.Errorf("cluster IDs %q and %q map to the same shard %d: rename one", c, h.Cluster, h.Shard)
		}
	}
	if err := m.nh.StartReplica(members, join, fsm.NewStateMachine, m.shardConfig(h)); err != nil {
		return err
	}
	m.shards[h.Cluster] = h
	m.shardNames.Store(h.Shard, h.Cluster)
	m.batchers[h.Shard] = newBatcher(m, h.Shard)
	return m.saveShards()
}

// markPromoted records that cluster's replica rid is a voter now.
func (m *Manager) markPromoted(cluster string, rid uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.shards[cluster]
	if !ok || h.Replica != rid || !h.NonVoting {
		return nil
	}
	h.NonVoting = false
	m.shards[cluster] = h
	return m.saveShards()
}

func (m *Manager) hostedShard(cluster string) (hosted, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.shards[cluster]
	return h, ok
}

// IsLeader reports whether this node leads cluster's group.
func (m *Manager) IsLeader(cluster string) bool {
	h, ok := m.hostedShard(cluster)
	if !ok || m.nh == nil {
		return false
	}
	lid, _, valid, err := m.nh.GetLeaderID(h.Shard)
	return err == nil && valid && lid == h.Replica
}

// session is the no-op session proposals use.
func (m *Manager) session(shard uint64) *client.Session { return m.nh.GetNoOPSession(shard) }
