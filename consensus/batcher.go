package consensus

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// Group commit: concurrent proposals to one shard share Raft entries. The
// workers take whatever proposals are waiting (up to maxBatch) and propose
// them as one batch entry; a lone proposer goes straight through, so its
// latency is that of a single proposal, while under load every Raft round
// trip carries many commands. Each worker waits for its entry to apply, so
// the worker count bounds the entries in flight per shard on this node:
// with 4, 32 clients over 3 nodes queued behind busy workers (2.4k writes/s
// here); with 32, dragonboat's step cycle puts more entries in each fsync
// and message batch (2.7k, same run).
const (
	batchWorkers = 32
	maxBatch     = 128
)

type proposal struct {
	ctx  context.Context
	cmd  fsm.Command
	done chan proposalResult
}

type proposalResult struct {
	res fsm.Result
	err error
}

type batcher struct {
	m     *Manager
	shard uint64
	queue chan *proposal
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func newBatcher(m *Manager, shard uint64) *batcher {
	b := &batcher{m: m, shard: shard, queue: make(chan *proposal, 4096), stop: make(chan struct{})}
	for i := 0; i < batchWorkers; i++ {
		b.wg.Add(1)
		go b.work()
	}
	return b
}

func (b *batcher) close() {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
}

// propose queues cmd and waits for its result or ctx.
func (b *batcher) propose(ctx context.Context, cmd fsm.Command) (fsm.Result, error) {
	p := &proposal{ctx: ctx, cmd: cmd, done: make(chan proposalResult, 1)}
	select {
	case b.queue <- p:
	case <-ctx.Done():
		return fsm.Result{}, b.m.mapErr(b.shard, ctx.Err())
	case <-b.stop:
		return fsm.Result{}, b.stopping()
	}
	select {
	case r := <-p.done:
		return r.res, r.err
	case <-ctx.Done():
		// The command may still commit: the caller learns it timed out,
		// exactly as with a lost reply (or that there is no quorum, when
		// the group has no leader: the batch's proposal outlives the
		// caller's deadline, so its own error would come too late).
		return fsm.Result{}, b.m.mapErr(b.shard, ctx.Err())
	}
}

func (b *batcher) work() {
	defer b.wg.Done()
	for {
		var first *proposal
		select {
		case first = <-b.queue:
		case <-b.stop:
			b.drain()
			return
		}
		batch := []*proposal{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case p := <-b.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		b.run(batch)
	}
}

func (b *batcher) run(batch []*proposal) {
	live := batch[:0]
	cmds := make([]fsm.Command, 0, len(batch))
	for _, p := range batch {
		if p.ctx.Err() != nil {
			p.done <- proposalResult{err: b.m.mapErr(b.shard, p.ctx.Err())}
			continue
		}
		live = append(live, p)
		cmds = append(cmds, p.cmd)
	}
	if len(live) == 0 {
		return
	}
	entry, err := fsm.EncodeBatch(cmds)
	if err != nil {
		for _, p := range live {
			p.done <- proposalResult{err: err}
		}
		return
	}
	// The batch outlives any one caller that gives up: it is bounded by
	// the latest deadline among its proposals (at least OpTimeout).
	dl := time.Now().Add(b.m.cfg.OpTimeout)
	for _, p := range live {
		if d, ok := p.ctx.Deadline(); ok && d.After(dl) {
			dl = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	data, err := b.m.proposeEntry(ctx, b.shard, entry, retrySafe(cmds))
	var results []fsm.Result
	if err == nil {
		results, err = fsm.DecodeResults(data)
		if err == nil && len(results) != len(live) {
			err = fmt.Errorf("consensus: %d results for %d commands", len(results), len(live))
		}
	}
	for i, p := range live {
		if err != nil {
			p.done <- proposalResult{err: err}
			continue
		}
		p.done <- proposalResult{res: results[i]}
	}
}

// retrySafe reports whether an entry of cmds may be re-proposed: the state
// machine can tell a second copy of every command from a new one (each
// has a proposal ID) and none is a compare-and-set (proposeEntry).
func retrySafe(cmds []fsm.Command) bool {
	for _, c := range cmds {
		if hasCAS(c) || c.ID.IsZero() {
			return false
		}
	}
	return true
}

func (b *batcher) stopping() error {
	return newOpError(ErrNoQuorum, nil, "%s is stopping its replica of the group; retry, another node can serve it", b.m.cfg.NodeName)
}

func (b *batcher) drain() {
	for {
		select {
		case p := <-b.queue:
			p.done <- proposalResult{err: b.stopping()}
		default:
			return
		}
	}
}
