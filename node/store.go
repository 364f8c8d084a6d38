package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/roles"
)

// dispatchStore adapts consensus to dispatch.Store.
type dispatchStore struct{ kv kvStore }

var _ dispatch.Store = dispatchStore{}

// dispatch sizes its records to dispatch.MaxRecordSize (it cannot import
// consensus); the state machine refuses values over fsm.MaxValueLen. These
// array lengths are negative, and the build fails, unless the two agree.
var (
	_ [dispatch.MaxRecordSize - fsm.MaxValueLen]struct{}
	_ [fsm.MaxValueLen - dispatch.MaxRecordSize]struct{}
)

func (s dispatchStore) Get(ctx context.Context, cluster, key string) ([]byte, uint64, bool, error) {
	it, ok, err := s.kv.Get(ctx, cluster, key)
	if err != nil || !ok {
		return nil, 0, ok, err
	}
	return it.Value, it.Version, true, nil
}

func (s dispatchStore) Put(ctx context.Context, cluster, key string, value []byte, cas *uint64) (uint64, error) {
	vs, err := s.PutMulti(ctx, cluster, []dispatch.KV{{Key: key, Value: value, CAS: cas}})
	if err != nil {
		return 0, err
	}
	return vs[0], nil
}

func (s dispatchStore) PutMulti(ctx context.Context, cluster string, kvs []dispatch.KV) ([]uint64, error) {
	ops := make([]fsm.Op, len(kvs))
	for i, kv := range kvs {
		ops[i] = fsm.Op{Type: fsm.OpPut, Key: kv.Key, Value: kv.Value, CAS: kv.CAS}
	}
	return s.apply(ctx, cluster, ops)
}

func (s dispatchStore) apply(ctx context.Context, cluster string, ops []fsm.Op) ([]uint64, error) {
	var res fsm.Result
	var err error
	if f := roles.FenceFrom(ctx); f != nil {
		// A role's write (retention's deletions): guarded by its fence.
		res, err = applyFenced(ctx, s.kv, f, cluster, ops)
	} else {
		res, err = s.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
	}
	if err != nil {
		if errors.Is(err, fsm.ErrBadCommand) && oversize(ops) {
			// Permanent: dispatch must not retry it as an unknown outcome.
			return nil, fmt.Errorf("%w: %w", dispatch.ErrTooLarge, err)
		}
		return nil, err
	}
	if res.Conflict {
		return nil, &dispatch.ConflictError{Key: res.ConflictKey}
	}
	if len(res.Versions) != len(ops) {
		return nil, fmt.Errorf("store: %d versions for %d ops", len(res.Versions), len(ops))
	}
	return res.Versions, nil
}

// oversize reports whether an op's value is over what the state machine
// accepts (the reason for its refusal, then).
func oversize(ops []fsm.Op) bool {
	for _, op := range ops {
		if len(op.Value) > fsm.MaxValueLen {
			return true
		}
	}
	return false
}

func (s dispatchStore) Delete(ctx context.Context, cluster, key string, cas *uint64) error {
	_, err := s.apply(ctx, cluster, []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: cas}})
	return err
}

func (s dispatchStore) DeleteMulti(ctx context.Context, cluster string, kvs []dispatch.KV) error {
	ops := make([]fsm.Op, len(kvs))
	for i, kv := range kvs {
		ops[i] = fsm.Op{Type: fsm.OpDelete, Key: kv.Key, CAS: kv.CAS}
	}
	_, err := s.apply(ctx, cluster, ops)
	return err
}

func (s dispatchStore) List(ctx context.Context, cluster, prefix string, o dispatch.ListOptions) ([]dispatch.Entry, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: prefix, After: o.After, Limit: o.Limit,
		Reverse: o.Reverse, Match: o.Match, MaxBytes: o.MaxBytes})
	if err != nil {
		return nil, err
	}
	out := make([]dispatch.Entry, len(items))
	for i, it := range items {
		out[i] = dispatch.Entry{Key: it.Key, Value: it.Value, Version: it.Version}
	}
	return out, nil
}

func (s dispatchStore) IsLeader(cluster string) bool { return s.kv.IsLeader(cluster) }

// runnerView adapts gossip to dispatch.Runners. Runner lists are cached
// per cluster for runnerCacheTTL: the proxy hot path asks on every request,
// and decoding the whole member list each time costs more than the
// request. A runner whose connection breaks is skipped at once anyway (the
// dispatcher's penalty box), so the cache only delays noticing a gossip
// status change by at most runnerCacheTTL.
type runnerView struct {
	g     *gossip.Gossip
	trust *peerTrust // a refused peer is no runner
	cache sync.Map   // cluster → *runnerList
}

type runnerList struct {
	at      time.Time
	runners []dispatch.Runner
}

const runnerCacheTTL = 50 * time.Millisecond

var _ dispatch.Runners = (*runnerView)(nil)

func newRunnerView(g *gossip.Gossip, trust *peerTrust) *runnerView {
	return &runnerView{g: g, trust: trust}
}

// Runners returns the members of cluster; callers must not modify the slice.
func (v *runnerView) Runners(cluster string) []dispatch.Runner {
	now := time.Now()
	if c, ok := v.cache.Load(cluster); ok && now.Sub(c.(*runnerList).at) < runnerCacheTTL {
		return c.(*runnerList).runners
	}
	ms := v.g.Members(gossip.Filter{Cluster: cluster})
	out := make([]dispatch.Runner, 0, len(ms))
	for _, m := range ms {
		out = append(out, v.toRunner(m))
	}
	v.cache.Store(cluster, &runnerList{at: now, runners: out})
	return out
}

func (v *runnerView) Lookup(name string) (dispatch.Runner, bool) {
	for _, m := range v.g.Members(gossip.Filter{}) {
		if m.Name == name {
			return v.toRunner(m), true
		}
	}
	return dispatch.Runner{}, false
}

func (v *runnerView) toRunner(m gossip.Member) dispatch.Runner {
	return dispatch.Runner{Name: m.Name, RPCAddr: m.RPCAddr, Status: v.trust.status(m), Tags: m.Tags, Roles: m.Roles}
}
