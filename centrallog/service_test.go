package centrallog

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
)

// A node whose replica belongs to a shard created under the legacy ID
// keeps it; a record of another shard is refused with what to do.
func TestReplicaRecordOfTheLegacyShardIsKept(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Cluster, cfg.Dir = "n1", "dc1", t.TempDir()
	cfg.StateShard = LegacyShardID("dc1") + 32 // in the same partition, as in every cluster
	s, err := New(cfg, nil, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if s.shardID() == LegacyShardID("dc1") {
		t.Fatal("a new shard would still get the legacy ID")
	}
	write := func(shard uint64) {
		b, _ := json.Marshal(replicaFile{Shard: shard, Replica: 7})
		if err := os.WriteFile(filepath.Join(cfg.Dir, "replica.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, shard := range []uint64{LegacyShardID("dc1"), ShardID("dc1", cfg.StateShard)} {
		write(shard)
		if got, rid, err := s.loadReplica(); err != nil || got != shard || rid != 7 {
			t.Fatalf("replica.json of shard %d: got shard %d replica %d, %v", shard, got, rid, err)
		}
	}
	write(ShardID("dc2", 0))
	if _, _, err := s.loadReplica(); err == nil {
		t.Fatal("a replica record of another cluster's shard was accepted")
	}
}
