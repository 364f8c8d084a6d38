package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/gossip"
)

// readyProbeKey is read (linearizably) to learn whether the group serves:
// a read needs a leader that a quorum still follows, as a write does.
const readyProbeKey = "meshgw/ready-probe"

// readyTimeout bounds one readiness probe.
const readyTimeout = 2 * time.Second

// readiness backs /v1/ready and the leave guard.
type readiness Agent

// Readiness reports nil when this node can serve writes for its cluster;
// otherwise an error that says, for an operator, what it waits for.
func (r *readiness) Readiness(ctx context.Context) error {
	a := (*Agent)(r)
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	cluster := a.cfg.Cluster
	// A replica that knows of no leader answers at once: it is in an
	// election or cut off from the quorum.
	for _, g := range a.cons.Status(ctx) {
		if g.Cluster == cluster && g.Local && g.LeaderReplicaID == 0 {
			alive, total, _ := r.voters(ctx)
			if alive > total/2 {
				return fmt.Errorf("electing a leader: %d of %d voters of cluster %s alive", alive, total, cluster)
			}
			return fmt.Errorf("no quorum: %d of %d voters of cluster %s reachable", alive, total, cluster)
		}
	}
	_, _, err := a.cons.Get(ctx, cluster, readyProbeKey)
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, consensus.ErrNotBootstrapped):
		n := a.cfg.BootstrapExpect
		if n == 0 {
			return fmt.Errorf("waiting to be added to the group of cluster %s (this node does not bootstrap: -bootstrap-expect 0)", cluster)
		}
		seen := len(a.gossip.Members(gossip.Filter{Cluster: cluster, Status: gossip.StatusAlive}))
		if seen < n {
			return fmt.Errorf("waiting for %d more node(s) of cluster %s (bootstrap-expect %d, %d alive)", n-seen, cluster, n, seen)
		}
		return fmt.Errorf("the group of cluster %s is not created yet: %d nodes alive, bootstrap in progress", cluster, seen)
	case errors.Is(err, consensus.ErrNoQuorum), errors.Is(err, consensus.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded):
		if alive, total, ok := r.voters(ctx); ok {
			return fmt.Errorf("no quorum: %d of %d voters of cluster %s reachable", alive, total, cluster)
		}
		return fmt.Errorf("no quorum: the group of cluster %s has no leader reachable from this node", cluster)
	}
	return fmt.Errorf("cluster %s cannot serve: %v", cluster, err)
}

// voters counts the local group's voters whose nodes gossip sees alive
// (ok is false when this node holds no replica of its cluster's group).
func (r *readiness) voters(ctx context.Context) (alive, total int, ok bool) {
	a := (*Agent)(r)
	status := map[string]gossip.Status{}
	for _, m := range a.gossip.Members(gossip.Filter{Cluster: a.cfg.Cluster}) {
		status[m.Name] = m.Status
	}
	for _, g := range a.cons.Status(ctx) {
		if g.Cluster != a.cfg.Cluster || !g.Local {
			continue
		}
		for _, rep := range g.Replicas {
			total++
			if status[rep.Node] == gossip.StatusAlive {
				alive++
			}
		}
		return alive, total, true
	}
	return 0, 0, false
}

// LeaveCheck refuses a leave that would leave this node's group without a
// quorum: autopilot removes a leaving voter with a configuration change,
// which the group's current voters must commit, so the voters that gossip
// sees alive, this one excluded, must still be a majority of them.
func (r *readiness) LeaveCheck(ctx context.Context) error {
	a := (*Agent)(r)
	for _, g := range a.cons.Status(ctx) {
		if g.Cluster != a.cfg.Cluster || !g.Local || !r.isVoter(g.Replicas) {
			continue
		}
		alive, total, _ := r.voters(ctx)
		alive-- // this node, once it has left
		if need := total/2 + 1; alive < need {
			return fmt.Errorf("leaving would take the group of cluster %s below quorum: "+
				"%d of its %d voters would remain alive, %d needed", a.cfg.Cluster, alive, total, need)
		}
	}
	return nil
}

func (r *readiness) isVoter(reps []consensus.Replica) bool {
	for _, rep := range reps {
		if rep.Node == r.cfg.NodeName {
			return true
		}
	}
	return false
}
