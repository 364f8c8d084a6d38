package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// Stale reads serve a node's last known state when its group cannot answer
// a linearizable read (the minority side of a partition). They never decide
// a write: callers use them for what may lag (the data plane's service
// definitions and ACLs), within a bound of their own, measured from asOf.
//
// A replica knows it held every acknowledged write at the start of each
// linearizable read that went through it (the leader confirmed its read
// index with a quorum, and the replica applied up to it): that start is the
// replica's synced time. keepSynced reads every SyncInterval on a replica
// nobody else read through, so an idle node's synced time does not age just
// because no client asked.

// syncTimes holds, per hosted shard, the synced time in Unix nanoseconds.
type syncTimes struct{ m sync.Map } // shard → *atomic.Int64

func (s *syncTimes) mark(shard uint64, at time.Time) {
	v, _ := s.m.LoadOrStore(shard, new(atomic.Int64))
	p := v.(*atomic.Int64)
	n := at.UnixNano()
	for {
		old := p.Load()
		if old >= n || p.CompareAndSwap(old, n) {
			return
		}
	}
}

// at returns shard's synced time, zero when no linearizable read went
// through the replica since this process started it.
func (s *syncTimes) at(shard uint64) time.Time {
	v, ok := s.m.Load(shard)
	if !ok {
		return time.Time{}
	}
	n := v.(*atomic.Int64).Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (s *syncTimes) forget(shard uint64) { s.m.Delete(shard) }

// staleReadResp is a forwarded stale read's answer: the query's result and
// how long before answering the serving replica was last synced (nil from
// a node that read linearizably instead, which is fresh; -1: never synced).
type staleReadResp struct {
	fsm.QueryResult
	AgeMs *int64 `json:"stale_age_ms,omitempty"`
}

// StaleGet reads key from this node's replica of cluster's group without
// asking its leader, or, on a node that hosts none, from a replica on a
// reachable node. asOf is the last moment the answering replica was known
// to hold every write acknowledged before it (zero: never since it
// started, so the answer says nothing current). A caller must bound how old
// an asOf it accepts; the answer may lack writes acknowledged since asOf.
func (m *Manager) StaleGet(ctx context.Context, cluster, key string) (it fsm.Item, found bool, asOf time.Time, err error) {
	r, asOf, err := m.staleRead(ctx, cluster, fsm.Query{Get: key})
	if err != nil || r.Item == nil {
		return fsm.Item{}, false, asOf, err
	}
	return *r.Item, true, asOf, nil
}

func (m *Manager) staleRead(ctx context.Context, cluster string, q fsm.Query) (fsm.QueryResult, time.Time, error) {
	if h, ok := m.hostedShard(cluster); ok {
		return m.staleLocal(h, q)
	}
	var resp staleReadResp
	start := time.Now()
	err := m.forward(ctx, cluster, methodRead, readReq{Cluster: cluster, Query: q, Stale: true}, &resp, true,
		2*m.cfg.ProposalTimeout)
	if err != nil {
		return fsm.QueryResult{}, time.Time{}, err
	}
	switch {
	case resp.AgeMs == nil:
		return resp.QueryResult, start, nil // read linearizably by an older peer
	case *resp.AgeMs < 0:
		return resp.QueryResult, time.Time{}, nil
	}
	// Ages travel, not times: the peers' clocks need not agree. Counted
	// from before the call, so the answer is never taken as newer than it is.
	return resp.QueryResult, start.Add(-time.Duration(*resp.AgeMs) * time.Millisecond), nil
}

// staleLocal reads the local replica as it is.
func (m *Manager) staleLocal(h hosted, q fsm.Query) (fsm.QueryResult, time.Time, error) {
	asOf := m.synced.at(h.Shard)
	v, err := m.nh.StaleRead(h.Shard, q)
	if err != nil {
		return fsm.QueryResult{}, time.Time{}, m.mapErr(h.Shard, err)
	}
	r, ok := v.(fsm.QueryResult)
	if !ok {
		return fsm.QueryResult{}, time.Time{}, fmt.Errorf("%w: stale read of cluster %s answered %T", errInternal, h.Cluster, v)
	}
	return r, asOf, nil
}

// serveStaleRead answers a forwarded stale read from the local replica.
func (m *Manager) serveStaleRead(h hosted, q fsm.Query) (staleReadResp, error) {
	r, asOf, err := m.staleLocal(h, q)
	if err != nil {
		return staleReadResp{}, err
	}
	age := int64(-1)
	if !asOf.IsZero() {
		age = max(time.Since(asOf).Milliseconds(), 0)
	}
	return staleReadResp{QueryResult: r, AgeMs: &age}, nil
}

// ProposalTimeout is how long one proposal or read index is given before
// it is tried again (Config.ProposalTimeout): a caller with a stale answer
// to fall back on need not wait out more than a couple of them.
func (m *Manager) ProposalTimeout() time.Duration { return m.cfg.ProposalTimeout }

// SyncedAt returns when this node's replica of cluster's group was last
// known to be up to date (see StaleGet), and false when it hosts none.
func (m *Manager) SyncedAt(cluster string) (time.Time, bool) {
	h, ok := m.hostedShard(cluster)
	if !ok {
		return time.Time{}, false
	}
	return m.synced.at(h.Shard), true
}

// keepSynced reads through every hosted replica that no read went through
// in the last SyncInterval, one at a time, so its synced time stays within
// about SyncInterval of now while its group has a quorum.
func (m *Manager) keepSynced() {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.SyncInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // ends a read under way at Stop; exits when keepSynced does

		select {
		case <-m.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		hs := make([]hosted, 0, len(m.shards))
		for _, h := range m.shards {
			hs = append(hs, h)
		}
		m.mu.Unlock()
		for _, h := range hs {
			if time.Since(m.synced.at(h.Shard)) < m.cfg.SyncInterval {
				continue
			}
			m.syncOnce(ctx, h)
		}
	}
}

// syncOnce reads the replica's applied index linearizably; a success marks
// the replica synced (in readLocal's way). Failures are what stale serving
// is about, and say nothing new: they are not logged.
func (m *Manager) syncOnce(ctx context.Context, h hosted) {
	rctx, cancel := context.WithTimeout(ctx, m.cfg.ProposalTimeout)
	defer cancel()
	start := time.Now()
	if _, err := m.nh.SyncRead(rctx, h.Shard, fsm.AppliedQuery{}); err == nil {
		m.synced.mark(h.Shard, start)
	} else if !dragonboat.IsTempError(err) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, dragonboat.ErrShardNotFound) {
		m.log.Debug().Err(err).Str("cluster", h.Cluster).Msg("sync read failed")
	}
}
