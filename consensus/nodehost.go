package consensus

import "github.com/lni/dragonboat/v4"

// NodeHost is the dragonboat host this manager runs, for shards of other
// packages that share it (the central log's shard, package centrallog):
// one Raft transport and log DB per node. Nil before Start; the caller
// must stop using it before Stop. The manager ignores shards it did not
// start (Status, leader tracking).
func (m *Manager) NodeHost() *dragonboat.NodeHost { return m.nh }

// RaftTimings are the election and heartbeat timeouts in RTT units, for
// such shards.
func (m *Manager) RaftTimings() (electionRTT, heartbeatRTT uint64) {
	return m.cfg.ElectionRTT, m.cfg.HeartbeatRTT
}
