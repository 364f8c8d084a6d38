package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/tools"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// RecoverReport says what a quorum-loss recovery did.
type RecoverReport struct {
	Cluster       string
	Replica       uint64
	SnapshotIndex uint64 // the state kept is the group's as of this log index
	Keys          int    // keys in the recovered state
	ExportDir     string // the exported snapshot (kept as a backup)
}

// RecoverWarning is what an operator must read before a recovery.
const RecoverWarning = `Recovering a Raft group from one survivor rewrites the group's history:
- the survivor's state becomes the group's state; writes that the lost majority
  committed but this survivor never received are lost for good;
- the other voters are removed for good: never restart the nodes that held
  them with their old data dirs (wipe those or give them new ones);
- run it only when a majority of the group's voters is permanently gone.
After it, start this agent again: it is the group's only voter and the
autopilot adds live nodes of the cluster as new voters.`

// Recover restores service of cluster's group from this node's replica
// after a permanent loss of quorum, using dragonboat's documented repair
// path: it exports a snapshot of the local replica, then imports it with a
// membership of this replica alone. The agent must be stopped (the data
// dir is locked while it runs).
func Recover(ctx context.Context, cfg Config, cluster string) (RecoverReport, error) {
	if err := cfg.Validate(); err != nil {
		return RecoverReport{}, err
	}
	m := &Manager{cfg: cfg, shards: map[string]hosted{}, batchers: map[uint64]*batcher{}}
	hs, err := m.loadShards()
	if err != nil {
		return RecoverReport{}, err
	}
	var h hosted
	found := false
	for _, x := range hs {
		if x.Cluster == cluster {
			h, found = x, true
		}
	}
	if !found {
		return RecoverReport{}, fmt.Errorf("this data dir (%s) holds no replica of cluster %q", cfg.DataDir, cluster)
	}
	nhc := m.nodeHostConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		return RecoverReport{}, fmt.Errorf("open the data dir (is the agent still running?): %w", err)
	}
	rep := RecoverReport{Cluster: cluster, Replica: h.Replica, ExportDir: filepath.Join(cfg.DataDir, "recover", time.Now().UTC().Format("20060102T150405"))}
	closed := false
	defer func() {
		if !closed {
			nh.Close()
		}
	}()
	if err := nh.StartReplica(nil, false, fsm.NewStateMachine, m.shardConfig(h)); err != nil {
		return rep, fmt.Errorf("load the local replica: %w", err)
	}
	// Wait for the replica to load its state from disk.
	for {
		if v, err := nh.StaleRead(h.Shard, fsm.Query{Export: true}); err == nil {
			st := fsm.NewStore()
			if err := st.Load(bytes.NewReader(v.(fsm.QueryResult).Export)); err == nil {
				rep.Keys = st.Len()
			}
			break
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("load the local replica: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := os.MkdirAll(rep.ExportDir, 0o700); err != nil {
		return rep, err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	idx, err := nh.SyncRequestSnapshot(sctx, h.Shard, dragonboat.SnapshotOption{Exported: true, ExportPath: rep.ExportDir})
	cancel()
	if err != nil {
		return rep, fmt.Errorf("export a snapshot of the local replica: %w", err)
	}
	rep.SnapshotIndex = idx
	nh.Close()
	closed = true
	src, err := snapshotDir(rep.ExportDir)
	if err != nil {
		return rep, err
	}
	members := map[uint64]string{h.Replica: cfg.RaftAdvertiseAddr}
	if err := tools.ImportSnapshot(nhc, src, members, h.Replica); err != nil {
		return rep, fmt.Errorf("import the snapshot as a group of one: %w", err)
	}
	// From now on this replica is an ordinary member (not a fresh bootstrap).
	h.BootstrappedAt, h.Initial = time.Time{}, nil
	m.shards[cluster] = h
	for _, x := range hs {
		if x.Cluster != cluster {
			m.shards[x.Cluster] = x
		}
	}
	if err := m.saveShards(); err != nil {
		return rep, err
	}
	return rep, nil
}

var snapshotDirRe = regexp.MustCompile(`^snapshot-[0-9A-F]+$`)

func snapshotDir(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.IsDir() && snapshotDirRe.MatchString(e.Name()) {
			return filepath.Join(dir, e.Name()), nil
		}
	}
	return "", errors.New("no exported snapshot found in " + dir)
}

// nodeHostConfig is the NodeHost configuration of this node.
func (m *Manager) nodeHostConfig() config.NodeHostConfig {
	nhc := config.NodeHostConfig{
		NodeHostDir:    m.raftDir(),
		RTTMillisecond: m.cfg.RTTMillisecond,
		RaftAddress:    m.cfg.RaftAdvertiseAddr,
		ListenAddress:  m.cfg.RaftBindAddr,
		MutualTLS:      m.cfg.MutualTLS,
		CAFile:         m.cfg.CAFile,
		CertFile:       m.cfg.CertFile,
		KeyFile:        m.cfg.KeyFile,
	}
	nhc.Expert.LogDB = config.GetSmallMemLogDBConfig()
	nhc.RaftEventListener = leaderListener{m}
	return nhc
}
