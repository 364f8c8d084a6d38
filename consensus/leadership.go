package consensus

import "time"

// Leadership is this node's view of the leadership of one group it hosts.
type Leadership struct {
	// Leader: this node's replica leads the group.
	Leader bool
	// Term is the Raft term of the leader this node knows (0: none known).
	Term uint64
}

// Leadership reports this node's view of cluster's group; false when this
// node hosts no replica of it (or the NodeHost is not running).
//
// dragonboat updates the leader and term it answers here before it tells
// the leader listener, so a reader woken by LeaderChanged sees the change.
func (m *Manager) Leadership(cluster string) (Leadership, bool) {
	h, ok := m.hostedShard(cluster)
	if !ok || m.nh == nil {
		return Leadership{}, false
	}
	lid, term, valid, err := m.nh.GetLeaderID(h.Shard)
	if err != nil {
		return Leadership{}, false
	}
	return Leadership{Leader: valid && lid == h.Replica, Term: term}, true
}

// LeaderChanged returns a channel closed when the leader of cluster's group
// next changes as this node sees it (a new leader, or none while an
// election runs). Take it before reading Leadership: a change in between
// then closes it at once rather than being missed.
func (m *Manager) LeaderChanged(cluster string) <-chan struct{} {
	return m.leaderEpoch(ShardID(cluster)).Done()
}

// ElectionTimeout is the Raft election timeout (ElectionRTT round trips):
// a leader cut off from its quorum steps down within two of them
// (CheckQuorum runs every election timeout).
func (m *Manager) ElectionTimeout() time.Duration {
	return time.Duration(m.cfg.ElectionRTT*m.cfg.RTTMillisecond) * time.Millisecond
}
