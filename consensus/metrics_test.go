package consensus

import (
	"errors"
	"fmt"
	"testing"
)

// Counters name groups by cluster, count failed proposals apart, and leave
// out a group this node no longer hosts.
func TestCountersByCluster(t *testing.T) {
	m := &Manager{shards: map[string]hosted{"c1": {Cluster: "c1", Shard: 5}}}
	m.countProposal(5, nil)
	m.countProposal(5, errors.New("timeout"))
	m.countProposal(5, nil)
	m.countProposal(9, nil) // not hosted (any more)
	m.countAutopilot("c1", apRemove, nil)
	m.countAutopilot("c1", apRemove, errors.New("no quorum"))
	m.countAutopilot("c1", apRemove, nil)
	c := m.Counters()
	if c.Proposals["c1"] != 3 || c.ProposalFailures["c1"] != 1 || len(c.Proposals) != 1 {
		t.Fatalf("proposals %v failures %v", c.Proposals, c.ProposalFailures)
	}
	got := fmt.Sprint(c.Autopilot)
	want := fmt.Sprint([]AutopilotCount{{"c1", apRemove.String(), false, 1}, {"c1", apRemove.String(), true, 2}})
	if got != want {
		t.Fatalf("autopilot %s, want %s", got, want)
	}
}
