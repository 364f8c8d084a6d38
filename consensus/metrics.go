package consensus

import (
	"sort"
	"sync"
)

// Counters are cumulative counts of this node's Raft work, for metrics.
type Counters struct {
	// Proposals counts the entries this node proposed to each group it
	// hosts (by cluster), every re-proposal included; ProposalFailures
	// those that dragonboat did not commit (timeouts, no leader, busy).
	Proposals, ProposalFailures map[string]uint64
	// Autopilot counts the membership changes autopilot tried, by cluster,
	// action and outcome.
	Autopilot []AutopilotCount
}

// AutopilotCount is how often autopilot tried one action on one cluster.
type AutopilotCount struct {
	Cluster, Action string
	OK              bool
	N               uint64
}

type apCountKey struct {
	cluster, action string
	ok              bool
}

// stats backs Counters; its zero value is ready.
type stats struct {
	mu        sync.Mutex
	proposals map[uint64][2]uint64 // shard → {proposed, failed}
	autopilot map[apCountKey]uint64
}

func (m *Manager) countProposal(shard uint64, err error) {
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	if m.stats.proposals == nil {
		m.stats.proposals = map[uint64][2]uint64{}
	}
	c := m.stats.proposals[shard]
	c[0]++
	if err != nil {
		c[1]++
	}
	m.stats.proposals[shard] = c
}

func (m *Manager) countAutopilot(cluster string, k apKind, err error) {
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	if m.stats.autopilot == nil {
		m.stats.autopilot = map[apCountKey]uint64{}
	}
	m.stats.autopilot[apCountKey{cluster, k.String(), err == nil}]++
}

// Counters returns a snapshot of the counters; groups this node no longer
// hosts are left out.
func (m *Manager) Counters() Counters {
	m.mu.Lock()
	byShard := map[uint64]string{}
	for c, h := range m.shards {
		byShard[h.Shard] = c
	}
	m.mu.Unlock()
	out := Counters{Proposals: map[string]uint64{}, ProposalFailures: map[string]uint64{}}
	m.stats.mu.Lock()
	defer m.stats.mu.Unlock()
	for shard, c := range m.stats.proposals {
		if cl, ok := byShard[shard]; ok {
			out.Proposals[cl] += c[0]
			out.ProposalFailures[cl] += c[1]
		}
	}
	for k, n := range m.stats.autopilot {
		out.Autopilot = append(out.Autopilot, AutopilotCount{Cluster: k.cluster, Action: k.action, OK: k.ok, N: n})
	}
	sort.Slice(out.Autopilot, func(i, j int) bool {
		a, b := out.Autopilot[i], out.Autopilot[j]
		if a.Cluster != b.Cluster {
			return a.Cluster < b.Cluster
		}
		if a.Action != b.Action {
			return a.Action < b.Action
		}
		return !a.OK && b.OK
	})
	return out
}
