package centrallog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport"
)

// RPC methods (who may call: see node/doc.go's table).
const (
	MethodShip    = "centrallog.ship"    // a batch of spooled entries → the active logger
	MethodReplica = "centrallog.replica" // start (or move) this node's log shard replica
	MethodMember  = "centrallog.member"  // add a replica to the log shard (from the active logger)
	MethodQuery   = "centrallog.query"   // a query, for nodes without a log replica
)

// codeNotActive: the node asked to store entries is not the active logger
// (yet, or any more): ship to the one the fence record names, later.
const codeNotActive = "not_active"

// metaKey is the state-group key holding the log shard's creation record.
const metaKey = "centrallog/shard"

// Config configures the central log of one node.
type Config struct {
	NodeName, Cluster string
	// Dir holds the spool and the log shard's state machine.
	Dir string
	// SpoolBytes bounds the entries waiting on this node for the store's
	// acknowledgement; past it new entries are dropped and counted.
	SpoolBytes int64
	// SpoolSync is how often the spool is fsynced (kill -9 loses nothing
	// without it; a power cut loses at most this much).
	SpoolSync time.Duration
	// BatchEntries and BatchBytes bound one shipped batch.
	BatchEntries, BatchBytes int
	// ShipDelay is the shortest time between two batches that are not
	// full: entries gather for it, so that a proposal (a Raft round, an
	// fsync and an apply on every replica: far more than an entry costs)
	// carries many, for at most this much more delay before an entry is
	// stored. The first entry after a quiet spell of ShipDelay ships at
	// once.
	ShipDelay time.Duration
	// Retention bounds the store (enforced by the active logger).
	Retention Retention
	// RetentionEvery is the period of the retention pass.
	RetentionEvery time.Duration
	// ElectionRTT, HeartbeatRTT: the log shard's Raft timings, in the
	// NodeHost's RTT units (node passes the state group's).
	ElectionRTT, HeartbeatRTT uint64
	// Syslog, when set, is tcp://host:port: the active logger forwards
	// every stored entry there (RFC 5424, octet counting).
	Syslog string
	// OpTimeout bounds one RPC or proposal.
	OpTimeout time.Duration
	// StateShard is the shard ID of the cluster's state group (0:
	// unknown): a new log shard gets an ID that dragonboat's workers and
	// log DB place apart from it (see ShardID).
	StateShard uint64
}

// Retention bounds the central store; zero fields are no bound.
type Retention struct {
	MaxAge   time.Duration
	MaxCount uint64
	MaxBytes uint64
}

// DefaultConfig returns defaults for everything but names and Dir.
func DefaultConfig() Config {
	return Config{
		SpoolBytes:     256 << 20,
		SpoolSync:      time.Second,
		BatchEntries:   8192,
		BatchBytes:     1 << 20,
		ShipDelay:      250 * time.Millisecond,
		Retention:      Retention{MaxAge: 7 * 24 * time.Hour, MaxCount: 1_000_000, MaxBytes: 1 << 30},
		RetentionEvery: 10 * time.Second,
		ElectionRTT:    10,
		HeartbeatRTT:   1,
		OpTimeout:      5 * time.Second,
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.NodeName == "" || c.Cluster == "" || c.Dir == "":
		return errors.New("central log: NodeName, Cluster and Dir are required")
	case c.SpoolBytes < 1<<20:
		return fmt.Errorf("central log: the spool bound must be at least 1 MiB, got %d bytes", c.SpoolBytes)
	case c.SpoolSync <= 0 || c.RetentionEvery <= 0 || c.OpTimeout <= 0 || c.ShipDelay < 0:
		return errors.New("central log: SpoolSync, RetentionEvery and OpTimeout must be positive, ShipDelay not negative")
	case c.BatchEntries < 1 || c.BatchEntries > maxBatchRecords || c.BatchBytes < MaxEntryBytes || c.BatchBytes > maxBatchBytes:
		return fmt.Errorf("central log: a batch must allow 1 to %d entries and %d to %d bytes", maxBatchRecords, MaxEntryBytes, maxBatchBytes)
	case c.Retention.MaxAge < 0:
		return errors.New("central log: the retention age must not be negative")
	case c.ElectionRTT <= 2*c.HeartbeatRTT || c.HeartbeatRTT == 0:
		return errors.New("central log: need HeartbeatRTT >= 1 and ElectionRTT > 2*HeartbeatRTT")
	}
	if c.Syslog != "" {
		if _, err := parseSyslogURL(c.Syslog); err != nil {
			return err
		}
	}
	return nil
}

// Member is a node of the local cluster as the central log needs it.
type Member struct {
	Name, RaftAddr, RPCAddr string
}

// Mesh is what the central log needs of the rest of the node (node adapts
// consensus and gossip to it).
type Mesh interface {
	// NodeHost is the Raft host the log shard runs on (nil before the
	// consensus manager started).
	NodeHost() *dragonboat.NodeHost
	// Voters are the voters of the local cluster's state group.
	Voters(ctx context.Context) ([]Member, error)
	// Member finds a live member of the local cluster by name.
	Member(name string) (Member, bool)
	// Logger is the node the active central logger runs on.
	Logger(ctx context.Context) (Member, error)
	// GetMeta reads a key of the local cluster's state group.
	GetMeta(ctx context.Context, key string) ([]byte, bool, error)
}

// Caller makes node-to-node calls (*transport.Transport).
type Caller interface {
	Call(ctx context.Context, addr, method string, body []byte) ([]byte, error)
}

// Service is one node's part of the central log: the spool and its
// shipper, the log shard replica, and (while active) the logger.
type Service struct {
	cfg  Config
	mesh Mesh
	rpc  Caller
	log  zerolog.Logger

	spool *spool

	mu      sync.Mutex
	replica uint64 // this node's replica of the log shard (0: none)
	// shard is the log shard's ID: the one replica belongs to, or the
	// one a new shard gets (a cluster created before ShardID moved it
	// keeps its legacy ID, learnt from replica.json or the creation
	// record).
	shard uint64

	active  atomic.Bool
	started atomic.Bool // Start has run: handlers may use the NodeHost
	dropped atomic.Uint64
	shipped atomic.Uint64
	lastErr atomic.Int64 // unix seconds of the last logged record error

	stop chan struct{}
	wg   sync.WaitGroup
}

// ShardID derives the ID a new log shard gets from the cluster ID and the
// state group's shard ID. dragonboat runs every shard on a step, commit
// and apply worker and in a log DB partition chosen by the shard ID
// modulo their count (16 each by default): a log shard there with the
// state group would make every state write wait for the log's batches
// and share their fsyncs. LegacyShardID's FNV-1a hash always lands there
// (the low bits of the two hashes agree for every cluster name), so the
// low bit is flipped, which differs modulo any even count.
func ShardID(cluster string, stateShard uint64) uint64 {
	id := LegacyShardID(cluster)
	if stateShard != 0 && id%16 == stateShard%16 {
		id ^= 1
	}
	if id == 0 {
		return 2
	}
	return id
}

// LegacyShardID is the log shard's ID in clusters created before ShardID
// moved it: they keep it (their creation record and replica.json name
// it).
func LegacyShardID(cluster string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("meshgw/log/" + cluster))
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 2
}

// knownShard reports whether id is a log shard ID of this cluster (the
// current or the legacy derivation).
func (s *Service) knownShard(id uint64) bool {
	return id != 0 && (id == ShardID(s.cfg.Cluster, s.cfg.StateShard) || id == LegacyShardID(s.cfg.Cluster))
}

// shardID is the log shard this node's replica belongs to or, without a
// replica yet, the one a new shard would get.
func (s *Service) shardID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shard
}

func replicaID(node string, n uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node + "/log/" + strconv.FormatUint(n, 10)))
	if v := h.Sum64() >> 1; v != 0 {
		return v
	}
	return 1
}

// New wires the service; it starts nothing.
func New(cfg Config, mesh Mesh, rpc Caller, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, mesh: mesh, rpc: rpc, shard: ShardID(cfg.Cluster, cfg.StateShard),
		log: log.With().Str("component", "centrallog").Logger(), stop: make(chan struct{})}, nil
}

// Register adds the service's RPC handlers (before the transport starts).
func (s *Service) Register(t *transport.Transport) {
	t.Handle(MethodShip, s.serveShip)
	t.Handle(MethodReplica, s.serveReplica)
	t.Handle(MethodMember, s.serveMember)
	t.Handle(MethodQuery, s.serveQuery)
}

// Start opens the spool, restarts this node's log replica if it had one,
// and starts the shipper. The NodeHost must be running.
func (s *Service) Start() error {
	sp, err := openSpool(filepath.Join(s.cfg.Dir, "spool"), s.cfg.SpoolBytes)
	if err != nil {
		return err
	}
	s.spool = sp
	if shard, rid, err := s.loadReplica(); err != nil {
		sp.Close()
		return err
	} else if rid != 0 {
		if err := s.startReplica(shard, rid, nil, false); err != nil {
			sp.Close()
			return fmt.Errorf("central log: restart log shard replica: %w", err)
		}
	}
	s.wg.Add(2)
	go s.shipLoop()
	go s.syncLoop()
	s.started.Store(true)
	return nil
}

// Stop stops the shipper and closes the spool (the log replica stops
// with the NodeHost).
func (s *Service) Stop() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	s.wg.Wait()
	if s.spool != nil {
		return s.spool.Close()
	}
	return nil
}

// Record spools one entry (filling in ID, time, node and cluster when
// unset). It never blocks on the network; an entry that cannot be
// spooled (full, disk error) is counted and logged at most once a minute.
//
// It allocates nothing: the entry is encoded into a pooled buffer, which
// the spool copies.
func (s *Service) Record(e Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Node == "" {
		e.Node = s.cfg.NodeName
	}
	if e.Cluster == "" {
		e.Cluster = s.cfg.Cluster
	}
	bp := recordBufs.Get().(*[]byte)
	b, err := appendEntry((*bp)[:0], &e) // an empty ID is given the next one
	if err == nil {
		if s.spool == nil {
			err = errors.New("central log: not started")
		} else {
			err = s.spool.Append(b)
		}
	}
	if cap(b) <= 4*recordBuf { // a rare long entry's buffer is not kept
		*bp = b[:0]
		recordBufs.Put(bp)
	}
	if err != nil {
		s.dropped.Add(1)
		now := time.Now().Unix()
		if last := s.lastErr.Load(); now-last >= 60 && s.lastErr.CompareAndSwap(last, now) {
			s.log.Error().Err(err).Uint64("dropped", s.dropped.Load()).Msg("central log entry not spooled")
		}
	}
}

// recordBufs are Record's encoding buffers (*[]byte of recordBuf bytes,
// a typical /svc/ entry being 300–400): a buffer is Record's from Get
// until it Puts it back after the spool's Append, which copies it.
const recordBuf = 1024

var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, recordBuf); return &b }}

// Stats are this node's counters.
type Stats struct {
	Dropped, Shipped uint64
	SpoolPending     int64
	Active           bool
	Replica          bool // this node holds a replica of the log shard
	// Voters is the log shard's voter count as this replica knows it (0
	// without a replica).
	Voters int
}

func (s *Service) Stats() Stats {
	st := Stats{Dropped: s.dropped.Load(), Shipped: s.shipped.Load(), Active: s.active.Load(), Replica: s.localReplica() != 0}
	if s.spool != nil {
		st.SpoolPending = s.spool.Pending()
	}
	if nh := s.mesh.NodeHost(); st.Replica && nh != nil && s.started.Load() {
		for _, si := range nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true}).ShardInfoList {
			if si.ShardID == s.shardID() {
				st.Voters = len(si.Replicas)
			}
		}
	}
	return st
}

func (s *Service) syncLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.SpoolSync)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.spool.Sync(); err != nil {
				s.log.Warn().Err(err).Msg("central log spool sync failed")
			}
		}
	}
}

// shipLoop sends the spool's entries, oldest first, to the active logger
// and advances the spool past a batch only once the logger answered that
// the log shard committed it.
func (s *Service) shipLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	backoff := 50 * time.Millisecond
	var target Member
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	var last time.Time // when the last batch was sent
	more := false      // the last batch was full: the next one goes at once
	for ctx.Err() == nil {
		// Wait for entries without reading them: the spool's byte count
		// tells whether there are any and whether a batch is full, so a
		// batch costs one read, whatever the rate of appends.
		wake := func() {
			more = false
			idle.Reset(time.Second)
			select {
			case <-ctx.Done():
			case <-s.spool.Notify():
			case <-idle.C:
			}
		}
		pending := s.spool.Pending()
		if pending == 0 {
			wake()
			continue
		}
		if wait := shipWait(s.cfg, pending, more, last, time.Now()); wait > 0 {
			s.sleep(ctx, wait)
			last = time.Time{}
			continue
		}
		// Appends from here on signal anew (the token left by the ones
		// this read takes would only wake the loop for nothing).
		select {
		case <-s.spool.Notify():
		default:
		}
		recs, next, err := s.spool.Read(s.cfg.BatchEntries, s.cfg.BatchBytes)
		if err != nil {
			s.log.Error().Err(err).Msg("central log spool unreadable")
			s.sleep(ctx, time.Second)
			continue
		}
		if len(recs) == 0 { // pending counts bytes no record could be read from
			wake()
			continue
		}
		more = len(recs) >= s.cfg.BatchEntries || batchBytes(recs) >= s.cfg.BatchBytes
		if target.RPCAddr == "" {
			tctx, tcancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
			target, err = s.mesh.Logger(tctx)
			tcancel()
			if err != nil || target.RPCAddr == "" {
				target = Member{}
				s.sleep(ctx, backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
		}
		last = time.Now()
		body := encodeBatch(s.cfg.Cluster, s.cfg.NodeName+"/"+s.spool.id, recs)
		if target.Name == s.cfg.NodeName {
			_, err = s.ingest(ctx, body)
		} else {
			cctx, ccancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
			_, err = s.rpc.Call(cctx, target.RPCAddr, MethodShip, body)
			ccancel()
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug().Err(err).Str("logger", target.Name).Msg("central log batch not stored; retrying")
			}
			target = Member{}
			s.sleep(ctx, backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if err := s.spool.Ack(next); err != nil {
			s.log.Error().Err(err).Msg("central log spool: acknowledgement not saved")
		}
		s.shipped.Add(uint64(len(recs)))
	}
}

// shipWait is how long the shipper waits before reading a batch, with
// pending bytes in the spool, the last batch sent at last (zero: not
// since a wait) and full or not (more): a batch that is not full waits
// until ShipDelay has passed since the last one, gathering more entries;
// the first after a quiet spell, and one behind a full batch, go at once.
// Entries are counted only by the read, so a batch full by BatchEntries
// alone waits too (once: the ones behind it go at once).
func shipWait(cfg Config, pending int64, more bool, last, now time.Time) time.Duration {
	if more || pending >= int64(cfg.BatchBytes) {
		return 0
	}
	return max(cfg.ShipDelay-now.Sub(last), 0)
}

func (s *Service) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// serveShip stores a batch: only on the active logger, answered once the
// log shard committed it.
func (s *Service) serveShip(ctx context.Context, r *transport.Request) ([]byte, error) {
	if !s.started.Load() {
		return nil, transport.Errorf(codeNotActive, "%s: the central log of %s is starting", r.Method, s.cfg.NodeName)
	}
	if _, ok := s.mesh.Member(r.Peer); !ok {
		return nil, transport.Errorf(transport.CodeForbidden, "%s: %s is not a live node of cluster %s", r.Method, r.Peer, s.cfg.Cluster)
	}
	return s.ingest(ctx, r.Body)
}

func (s *Service) ingest(ctx context.Context, body []byte) ([]byte, error) {
	if !s.active.Load() {
		return nil, transport.Errorf(codeNotActive, "%s is not the active central logger of cluster %s", s.cfg.NodeName, s.cfg.Cluster)
	}
	cluster, _, recs, err := decodeBatch(body)
	if err != nil || cluster != s.cfg.Cluster {
		return nil, transport.Errorf("bad_request", "central log batch: not a batch for cluster %s", s.cfg.Cluster)
	}
	if len(recs) == 0 {
		return []byte("0"), nil
	}
	// The batch is proposed as it is: the state machine reads it.
	n, err := s.propose(ctx, body)
	if err != nil {
		return nil, err
	}
	return strconv.AppendUint(nil, n, 10), nil
}

// propose commits cmd to the log shard, retrying temporary errors until
// OpTimeout. An append is idempotent (entry IDs), so a retry is safe.
func (s *Service) propose(ctx context.Context, cmd []byte) (uint64, error) {
	nh := s.mesh.NodeHost()
	if nh == nil || s.localReplica() == 0 {
		return 0, transport.Errorf(codeNotActive, "%s holds no replica of cluster %s's log shard yet", s.cfg.NodeName, s.cfg.Cluster)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, s.cfg.OpTimeout/2)
		res, err := nh.SyncPropose(pctx, nh.GetNoOPSession(s.shardID()), cmd)
		pcancel()
		if err == nil {
			return res.Value, nil
		}
		if !dragonboat.IsTempError(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return 0, fmt.Errorf("central log: store batch in the log shard: %w", err)
		}
		s.sleep(ctx, 20*time.Millisecond)
	}
}

// read runs a linearizable lookup on the local replica.
func (s *Service) read(ctx context.Context, q interface{}) (interface{}, error) {
	nh := s.mesh.NodeHost()
	if nh == nil || s.localReplica() == 0 {
		return nil, errNoReplica
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, s.cfg.OpTimeout/2)
		v, err := nh.SyncRead(rctx, s.shardID(), q)
		rcancel()
		if err == nil {
			return v, nil
		}
		if !dragonboat.IsTempError(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return nil, fmt.Errorf("central log: read the log shard: %w", err)
		}
		s.sleep(ctx, 20*time.Millisecond)
	}
}

var errNoReplica = errors.New("central log: no local replica of the log shard")

// ---- the log shard replica ----

type replicaFile struct {
	Shard   uint64 `json:"shard"`
	Replica uint64 `json:"replica"`
}

func (s *Service) replicaPath() string { return filepath.Join(s.cfg.Dir, "replica.json") }

// loadReplica reads the replica this node had (0: none) and its shard.
func (s *Service) loadReplica() (shard, replica uint64, err error) {
	b, err := os.ReadFile(s.replicaPath())
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("central log: %w", err)
	}
	var rf replicaFile
	if err := json.Unmarshal(b, &rf); err != nil || !s.knownShard(rf.Shard) {
		return 0, 0, fmt.Errorf("central log: %s is not this cluster's replica record; remove it to start over", s.replicaPath())
	}
	return rf.Shard, rf.Replica, nil
}

func (s *Service) localReplica() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replica
}

func (s *Service) storeDir(rid uint64) string {
	return filepath.Join(s.cfg.Dir, "store-"+strconv.FormatUint(rid, 16))
}

// startReplica starts replica rid of shard (initial: the members of a new
// shard; join: an added replica; neither: a restart) and records it.
func (s *Service) startReplica(shard, rid uint64, initial map[uint64]string, join bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.replica == rid && s.shard == shard {
		return nil
	}
	if !s.knownShard(shard) {
		return fmt.Errorf("central log: shard %d is not cluster %s's log shard", shard, s.cfg.Cluster)
	}
	nh := s.mesh.NodeHost()
	if nh == nil {
		return errors.New("central log: the Raft host is not running")
	}
	if s.replica != 0 { // moved: the old replica was removed from the shard
		_ = nh.StopReplica(s.shard, s.replica)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.OpTimeout)
		_ = nh.SyncRemoveData(ctx, s.shard, s.replica)
		cancel()
		_ = os.RemoveAll(s.storeDir(s.replica))
		s.replica = 0
	}
	s.shard = shard
	b, _ := json.Marshal(replicaFile{Shard: shard, Replica: rid})
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("central log: %w", err)
	}
	tmp := s.replicaPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("central log: %w", err)
	}
	if err := os.Rename(tmp, s.replicaPath()); err != nil {
		return fmt.Errorf("central log: %w", err)
	}
	members := map[uint64]dragonboat.Target{}
	for id, addr := range initial {
		members[id] = addr
	}
	dir := s.storeDir(rid)
	create := func(uint64, uint64) sm.IOnDiskStateMachine { return newLogSM(dir) }
	cfg := config.Config{
		ReplicaID: rid, ShardID: shard,
		ElectionRTT: s.cfg.ElectionRTT, HeartbeatRTT: s.cfg.HeartbeatRTT,
		CheckQuorum: true, PreVote: true,
		EntryCompressionType: config.Snappy, // entries are JSON: several times smaller
		SnapshotEntries:      5000, CompactionOverhead: 500,
	}
	if err := nh.StartOnDiskReplica(members, join, create, cfg); err != nil {
		if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
			s.replica = rid
			return nil
		}
		return fmt.Errorf("central log: start log shard replica %d: %w", rid, err)
	}
	s.replica = rid
	s.log.Info().Uint64("replica", rid).Bool("join", join).Int("initial", len(initial)).Msg("log shard replica started")
	return nil
}

type replicaReq struct {
	Shard   uint64            `json:"shard"`
	Replica uint64            `json:"replica"`
	Initial map[uint64]string `json:"initial,omitempty"`
	Join    bool              `json:"join,omitempty"`
}

func (s *Service) serveReplica(_ context.Context, r *transport.Request) ([]byte, error) {
	if !s.started.Load() {
		return nil, transport.Errorf(codeNotActive, "%s: the central log of %s is starting", r.Method, s.cfg.NodeName)
	}
	if _, ok := s.mesh.Member(r.Peer); !ok {
		return nil, transport.Errorf(transport.CodeForbidden, "%s: %s is not a live node of cluster %s", r.Method, r.Peer, s.cfg.Cluster)
	}
	var req replicaReq
	if err := json.Unmarshal(r.Body, &req); err != nil || !s.knownShard(req.Shard) || req.Replica == 0 {
		return nil, transport.Errorf("bad_request", "%s: not a replica of cluster %s's log shard", r.Method, s.cfg.Cluster)
	}
	if err := s.startReplica(req.Shard, req.Replica, req.Initial, req.Join); err != nil {
		return nil, err
	}
	return []byte("{}"), nil
}

type memberReq struct {
	Shard   uint64 `json:"shard"`
	Replica uint64 `json:"replica"`
	Addr    string `json:"addr"`
}

// serveMember adds a replica to the log shard on behalf of an active
// logger that holds none yet.
func (s *Service) serveMember(ctx context.Context, r *transport.Request) ([]byte, error) {
	if !s.started.Load() {
		return nil, transport.Errorf(codeNotActive, "%s: the central log of %s is starting", r.Method, s.cfg.NodeName)
	}
	if _, ok := s.mesh.Member(r.Peer); !ok {
		return nil, transport.Errorf(transport.CodeForbidden, "%s: %s is not a live node of cluster %s", r.Method, r.Peer, s.cfg.Cluster)
	}
	var req memberReq
	if err := json.Unmarshal(r.Body, &req); err != nil || req.Shard != s.shardID() || req.Replica == 0 || req.Addr == "" {
		return nil, transport.Errorf("bad_request", "%s: not a member of cluster %s's log shard", r.Method, s.cfg.Cluster)
	}
	nh := s.mesh.NodeHost()
	if nh == nil || s.localReplica() == 0 {
		return nil, transport.Errorf(codeNotActive, "%s holds no log shard replica", s.cfg.NodeName)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	shard := s.shardID()
	m, err := nh.SyncGetShardMembership(ctx, shard)
	if err != nil {
		return nil, fmt.Errorf("central log: log shard membership: %w", err)
	}
	if m.Nodes[req.Replica] == req.Addr {
		return []byte("{}"), nil
	}
	// One replica per node: an earlier one at this address (a join that
	// never started) goes first, so it never counts towards quorum.
	for rid, addr := range m.Nodes {
		if addr == req.Addr {
			if err := nh.SyncRequestDeleteReplica(ctx, shard, rid, m.ConfigChangeID); err != nil {
				return nil, fmt.Errorf("central log: remove the earlier log shard replica at %s: %w", addr, err)
			}
			return nil, transport.Errorf(codeNotActive, "removed an earlier log shard replica at %s; ask again", addr)
		}
	}
	if err := nh.SyncRequestAddReplica(ctx, shard, req.Replica, req.Addr, m.ConfigChangeID); err != nil {
		return nil, fmt.Errorf("central log: add log shard replica: %w", err)
	}
	return []byte("{}"), nil
}

var _ = sm.Result{}
