package node

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/roles"
)

// roleLease is how many election timeouts a new leader waits before it
// starts its roles: the old leader steps down within two (see roles' doc);
// the third is the margin for its notification and its roles' return.
const roleLease = 3

// leadershipView adapts consensus to roles.Leadership.
type leadershipView struct{ c *consensus.Manager }

func (v leadershipView) Leadership(cluster string) roles.State {
	l, ok := v.c.Leadership(cluster)
	if !ok {
		return roles.State{}
	}
	return roles.State{Leader: l.Leader, Term: l.Term}
}

func (v leadershipView) LeaderChanged(cluster string) <-chan struct{} {
	return v.c.LeaderChanged(cluster)
}

// roleStore adapts consensus to roles.Store.
type roleStore struct{ kv kvStore }

func (s roleStore) Get(ctx context.Context, cluster, key string) ([]byte, uint64, bool, error) {
	it, ok, err := s.kv.Get(ctx, cluster, key)
	if err != nil || !ok {
		return nil, 0, ok, err
	}
	return it.Value, it.Version, true, nil
}

func (s roleStore) Put(ctx context.Context, cluster, key string, value []byte, cas uint64) (uint64, bool, error) {
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value, CAS: &cas}}})
	if err != nil {
		return 0, false, err
	}
	if res.Conflict {
		return 0, true, nil
	}
	if len(res.Versions) != 1 {
		return 0, false, fmt.Errorf("roles store: %d versions for 1 op", len(res.Versions))
	}
	return res.Versions[0], false, nil
}

// applyFenced applies ops with the fence's compare-and-set in the same
// command: the writes of a role's active instance.
func applyFenced(ctx context.Context, kv kvStore, f *roles.Fence, cluster string, ops []fsm.Op) (fsm.Result, error) {
	var res fsm.Result
	err := f.Guard(ctx, func(key string, value []byte, version uint64) (uint64, bool, error) {
		ver := version
		all := append(append(make([]fsm.Op, 0, len(ops)+1), ops...),
			fsm.Op{Type: fsm.OpPut, Key: key, Value: value, CAS: &ver})
		r, err := kv.Apply(ctx, cluster, fsm.Command{Ops: all})
		if err != nil {
			return 0, false, err
		}
		if r.Conflict && r.ConflictKey == key {
			return 0, true, nil
		}
		res = r
		if r.Conflict {
			return version, false, nil // another key's compare failed: nothing was written
		}
		if len(r.Versions) != len(all) {
			return 0, false, fmt.Errorf("store: %d versions for %d ops", len(r.Versions), len(all))
		}
		res.Versions = r.Versions[:len(ops)]
		return r.Versions[len(ops)], false, nil
	})
	return res, err
}

// newRoles wires the role manager of the local cluster: retention (the
// dispatcher's recovery and retention passes) is the one role with an
// implementation so far.
func (a *Agent) newRoles() (*roles.Manager, error) {
	et := a.cons.ElectionTimeout()
	cfg := roles.Config{
		Node:     a.cfg.NodeName,
		Clusters: []string{a.cfg.Cluster},
		Lease:    roleLease * et,
		Poll:     max(et/2, 10*time.Millisecond),
		Voters: func(cluster string) []string {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var out []string
			for _, g := range a.cons.Status(ctx) {
				if g.Cluster == cluster {
					for _, r := range g.Replicas {
						if r.Node != "" {
							out = append(out, r.Node)
						}
					}
				}
			}
			return out
		},
	}
	retention := roles.Role{Name: roles.Retention, Run: func(ctx context.Context, f *roles.Fence) error {
		return a.disp.Maintain(roles.WithFence(ctx, f), f.Cluster)
	}}
	a.thr = a.newThrottler()
	all := append([]roles.Role{retention, a.schedulerRole(), a.cacheCleanupRole(), a.thr.role()},
		a.centralLoggerRole()...) // centrallog.go
	return roles.New(cfg, leadershipView{a.cons}, roleStore{kv: a.cons}, a.log, all...)
}

// Roles reports cluster's roles ("" for the local one) from the fence keys
// in its group, read linearizably (from any node), and this node's view of
// the group's leader and term when it holds a replica: a fence key of an
// older term than the leader's means the hand-over is under way.
func (b *backend) Roles(ctx context.Context, cluster string) ([]httpapi.RoleStatus, error) {
	if cluster == "" {
		cluster = b.cfg.Cluster
	}
	var group *consensus.GroupStatus
	for _, g := range b.cons.Status(ctx) {
		if g.Cluster == cluster && g.Local {
			group = &g
			break
		}
	}
	alive := map[string]bool{}
	for _, m := range b.gossip.Members(gossip.Filter{Cluster: cluster}) {
		alive[m.Name] = m.Status == gossip.StatusAlive
	}
	var out []httpapi.RoleStatus
	for _, name := range b.roles.Names() {
		it, found, err := b.cons.Get(ctx, cluster, roles.FenceKey(name))
		if err != nil {
			return nil, apiError("read role "+name, err)
		}
		var rec *roles.Record
		if found {
			if r, err := roles.DecodeRecord(it.Value); err == nil {
				rec = &r
			}
		}
		out = append(out, roleView(cluster, name, rec, group, alive))
	}
	return out, nil
}

// roleView is what /v1/roles shows of one role: rec is its fence record
// (nil: none), group this node's view of the cluster's group (nil: no
// replica here), alive the cluster's members gossip sees alive.
func roleView(cluster, name string, rec *roles.Record, group *consensus.GroupStatus, alive map[string]bool) httpapi.RoleStatus {
	rs := httpapi.RoleStatus{Cluster: cluster, Role: name, State: "none"}
	if group != nil {
		rs.Leader, rs.Term = group.Leader, group.Term
	}
	switch {
	case rec != nil && group != nil && group.Leader != "" && rec.Term == group.Term && rec.Node == group.Leader,
		rec != nil && group == nil && alive[rec.Node]:
		since := rec.Since
		rs.Active, rs.Since, rs.Fence, rs.State = rec.Node, &since, rec.Term, "active"
		if group == nil {
			rs.Standbys = append(rs.Standbys, rec.Standbys...)
		}
	case group != nil && group.Leader != "":
		rs.State = "starting" // the leader waits out its lease, or its fence write
	}
	if group != nil {
		for _, r := range group.Replicas {
			if r.Node != "" && r.Node != rs.Active && r.Node != group.Leader {
				rs.Standbys = append(rs.Standbys, r.Node)
			}
		}
		sort.Strings(rs.Standbys)
	}
	return rs
}

// dropRoleRecords deletes cluster's role fence records. A restored
// snapshot brings those of the mesh it was taken on, whose terms mean
// nothing here: one above this group's term would keep every leader from
// claiming the role. The active instance is fenced out by the restore and
// claims the role again once they are gone.
func dropRoleRecords(ctx context.Context, kv kvStore, cluster string) error {
	items, err := kv.List(ctx, cluster, fsm.ListQuery{Prefix: roles.FenceKey(""), Limit: fsm.MaxOps})
	if err != nil || len(items) == 0 {
		return err
	}
	ops := make([]fsm.Op, len(items))
	for i, it := range items {
		ops[i] = fsm.Op{Type: fsm.OpDelete, Key: it.Key}
	}
	_, err = kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
	return err
}
