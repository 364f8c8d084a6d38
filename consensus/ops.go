package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/raftio"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
)

// RPC methods between managers.
const (
	methodApply = "consensus.apply"
	methodRead  = "consensus.read"
	methodInfo  = "consensus.info"
	methodJoin  = "consensus.join"
)

// Remote error codes that carry the sentinels across a forward.
const (
	codeNoQuorum        = "no_quorum"
	codeNotBootstrapped = "not_bootstrapped"
	codeTimeout         = "timeout"
	codeNotHosting      = "not_hosting"
	codeBad             = "bad_request"
)

// Apply proposes cmd to cluster's group and returns its result. A node
// without a replica forwards to one that has it.
//
// cmd gets its proposal ID here (unless the caller gave it one), once:
// every re-proposal and forward of it carries the same ID, and the state
// machine applies an ID once, so a retry never applies a write twice.
func (m *Manager) Apply(ctx context.Context, cluster string, cmd fsm.Command) (fsm.Result, error) {
	if err := cmd.Validate(); err != nil {
		return fsm.Result{}, err
	}
	if err := checkReserved(cmd); err != nil {
		return fsm.Result{}, err
	}
	if cmd.ID.IsZero() {
		cmd.ID = fsm.NewProposalID()
	}
	if h, ok := m.hostedShard(cluster); ok {
		res, err := m.applyLocal(ctx, h, cmd)
		if !droppedUnder(m, cluster, err) {
			return res, err
		}
		// Nothing was proposed here: the group lives on; forward.
	}
	var res fsm.Result
	err := m.forward(ctx, cluster, methodApply, applyReq{Cluster: cluster, Cmd: cmd}, &res, !hasCAS(cmd), 2*m.cfg.ProposalTimeout)
	return res, err
}

// applyLocal proposes cmd through the local replica's batcher. A command
// without a proposal ID (this package's own writes, a forward from a node
// that predates IDs) gets one here, so its re-proposals apply once too.
func (m *Manager) applyLocal(ctx context.Context, h hosted, cmd fsm.Command) (fsm.Result, error) {
	if cmd.ID.IsZero() {
		cmd.ID = fsm.NewProposalID()
	}
	m.mu.Lock()
	b := m.batchers[h.Shard]
	m.mu.Unlock()
	if b == nil {
		return fsm.Result{}, ErrNotBootstrapped
	}
	return b.propose(ctx, cmd)
}

// proposeEntry proposes one encoded entry. It retries only while
// dragonboat says the entry was not accepted (shard not ready, busy); a
// proposal that timed out may still commit, so it is not re-proposed
// unless idempotent: the caller gets ErrTimeout and decides.
//
// idempotent: every command of the entry (or the restore) carries a
// proposal ID and none is a compare-and-set. Such an entry is re-proposed
// after a timeout or a leader change too, so a leader's death costs the
// client only the election: if the first proposal did commit, the state
// machine answers the second with the first's results and applies
// nothing, so a write another client made in between is not overwritten
// (an entry without IDs, from before they existed, must never be re-proposed).
// Compare-and-set entries are not re-proposed yet: their callers handle
// ErrTimeout (the outcome is unknown) by reading back.
func (m *Manager) proposeEntry(ctx context.Context, shard uint64, entry []byte, idempotent bool) ([]byte, error) {
	for {
		pctx, cancel := boundedCtx(ctx, m.cfg.ProposalTimeout)
		stop := func() bool { return false }
		if idempotent {
			// A proposal forwarded to a leader that has since died is
			// lost; resend as soon as the group has another one rather
			// than at ProposalTimeout.
			stop = context.AfterFunc(m.leaderEpoch(shard), cancel)
		}
		res, err := m.nh.SyncPropose(pctx, m.session(shard), entry)
		m.countProposal(shard, err)
		stop()
		cancel()
		if err == nil {
			if res.Value == 0 {
				return nil, fmt.Errorf("%w: the state machine refused the entry", fsm.ErrBadCommand)
			}
			return res.Data, nil
		}
		retryable := errors.Is(err, dragonboat.ErrShardNotReady) || errors.Is(err, dragonboat.ErrSystemBusy) ||
			errors.Is(err, dragonboat.ErrShardNotInitialized) ||
			(idempotent && (errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
				errors.Is(err, dragonboat.ErrCanceled)) && ctx.Err() == nil)
		if !retryable {
			return nil, m.mapErr(shard, err)
		}
		select {
		case <-ctx.Done():
			return nil, m.mapErr(shard, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// epoch is one leadership of a shard as this node saw it.
type epoch struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// leaderEpoch returns a context canceled when shard's leader next changes
// as this node sees it (a new leader, or none while an election runs).
func (m *Manager) leaderEpoch(shard uint64) context.Context {
	m.epochMu.Lock()
	defer m.epochMu.Unlock()
	e, ok := m.epochs[shard]
	if !ok {
		e.ctx, e.cancel = context.WithCancel(context.Background())
		m.epochs[shard] = e
	}
	return e.ctx
}

// leaderListener hears dragonboat's leader changes (on its own goroutine:
// it must not block) and ends the shard's epoch.
type leaderListener struct{ m *Manager }

func (l leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	l.m.epochMu.Lock()
	defer l.m.epochMu.Unlock()
	if e, ok := l.m.epochs[info.ShardID]; ok {
		e.cancel()
		delete(l.m.epochs, info.ShardID)
	}
}

// boundedCtx bounds ctx by d when it has no earlier deadline.
func boundedCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// opError is one of the package's sentinels with a message of the
// package's own. The cause (dragonboat's error, a remote one) stays in the
// chain for errors.Is and logs but not in the message: the message reaches
// clients (an API error, a stream event), and dragonboat's wording
// ("specified timeout value is too small") tells them nothing to act on.
type opError struct {
	kind  error
	msg   string
	cause error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func newOpError(kind, cause error, format string, args ...any) error {
	return &opError{kind: kind, msg: fmt.Sprintf(format, args...), cause: cause}
}

// noQuorumMsg says what a client can do about a group without a leader.
func noQuorumMsg(cluster, node string) string {
	return fmt.Sprintf("no quorum for cluster %s: the group has no leader reachable from %s; "+
		"retry later, and check that a majority of its voters is up and they can reach each other", cluster, node)
}

// mapErr turns dragonboat errors into the package's sentinels, each with
// a message that says what happened to cluster's group and what to do.
func (m *Manager) mapErr(shard uint64, err error) error {
	if err == nil {
		return nil
	}
	leader := false
	if m.nh != nil {
		_, _, leader, _ = m.nh.GetLeaderID(shard)
	}
	// Not m.mu: mapErr runs on batcher workers, which Stop waits for
	// while holding it.
	cluster := fmt.Sprintf("shard %d", shard)
	if c, ok := m.shardNames.Load(shard); ok {
		cluster = c.(string)
	}
	mapped := classifyErr(err, cluster, m.cfg.NodeName, leader)
	var oe *opError
	if errors.As(mapped, &oe) && oe.kind == errInternal {
		m.log.Warn().Err(err).Str("cluster", cluster).Msg("raft operation failed")
	}
	return mapped
}

// errInternal marks a dragonboat error no sentinel fits (a bug here).
var errInternal = errors.New("consensus: internal error")

// classifyErr is mapErr's decision: leader says whether this node knows a
// leader of the group. Running out of time (dragonboat's timeout, a
// context deadline, a remaining deadline too short for dragonboat to
// try, a dropped or aborted request) with no leader is ErrNoQuorum: on the
// minority side of a partition, every attempt ends this way.
func classifyErr(err error, cluster, node string, leader bool) error {
	var oe *opError
	switch {
	case errors.As(err, &oe):
		return err
	case errors.Is(err, context.Canceled):
		return err // the caller gave up: nothing to tell it (the API answers 499)
	case errors.Is(err, dragonboat.ErrShardNotFound), errors.Is(err, dragonboat.ErrShardNotBootstrapped):
		return newOpError(ErrNotBootstrapped, err, "cluster %s has no Raft group on %s yet; retry later", cluster, node)
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return newOpError(ErrNoQuorum, err, "%s is stopping its replica of cluster %s; retry, another node can serve it", node, cluster)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return newOpError(fsm.ErrBadCommand, err, "the write is larger than one Raft entry of cluster %s may be", cluster)
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, dragonboat.ErrCanceled),
		errors.Is(err, dragonboat.ErrTimeoutTooSmall), errors.Is(err, dragonboat.ErrInvalidDeadline),
		errors.Is(err, dragonboat.ErrShardNotReady), errors.Is(err, dragonboat.ErrShardNotInitialized),
		errors.Is(err, dragonboat.ErrSystemBusy), errors.Is(err, dragonboat.ErrAborted):
		if !leader {
			return newOpError(ErrNoQuorum, err, "%s", noQuorumMsg(cluster, node))
		}
		return newOpError(ErrTimeout, err, "timeout on cluster %s: its group did not complete the operation in time "+
			"(leader known to %s); a write's outcome is unknown: read it back before retrying", cluster, node)
	}
	return newOpError(errInternal, err, "cluster %s: the Raft replica on %s failed the operation (see its log)", cluster, node)
}

// read runs a linearizable query on cluster's group.
func (m *Manager) read(ctx context.Context, cluster string, q fsm.Query) (fsm.QueryResult, error) {
	if h, ok := m.hostedShard(cluster); ok {
		res, err := m.readLocal(ctx, h, q)
		if !droppedUnder(m, cluster, err) {
			return res, err
		}
	}
	var res fsm.QueryResult
	try := 2 * m.cfg.ProposalTimeout
	if q.Export {
		try = m.cfg.OpTimeout // a whole-state export may take a while to ship
	}
	err := m.forward(ctx, cluster, methodRead, readReq{Cluster: cluster, Query: q}, &res, true, try)
	return res, err
}

// readLocal reads through the local replica. A read is always safe to
// retry, so each try is bounded by ProposalTimeout like a proposal: a read
// index asked of a leader that just hung (SIGSTOP, partition) is asked
// again of the next one instead of waiting out the whole OpTimeout.
func (m *Manager) readLocal(ctx context.Context, h hosted, q fsm.Query) (fsm.QueryResult, error) {
	ctx, cancelOp := boundedCtx(ctx, m.cfg.OpTimeout)
	defer cancelOp()
	try := m.cfg.ProposalTimeout
	if q.Export {
		try = m.cfg.OpTimeout // serialising the whole state is part of the read
	}
	for {
		rctx, cancel := boundedCtx(ctx, try)
		stop := context.AfterFunc(m.leaderEpoch(h.Shard), cancel) // as in proposeEntry
		start := time.Now()
		v, err := m.nh.SyncRead(rctx, h.Shard, q)
		stop()
		cancel()
		if err == nil {
			m.synced.mark(h.Shard, start) // stale.go
			return v.(fsm.QueryResult), nil
		}
		canceledHere := errors.Is(err, dragonboat.ErrCanceled) && ctx.Err() == nil
		if !dragonboat.IsTempError(err) && !errors.Is(err, context.DeadlineExceeded) && !canceledHere {
			return fsm.QueryResult{}, m.mapErr(h.Shard, err)
		}
		select {
		case <-ctx.Done():
			return fsm.QueryResult{}, m.mapErr(h.Shard, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Get reads key linearizably.
func (m *Manager) Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error) {
	r, err := m.read(ctx, cluster, fsm.Query{Get: key})
	if err != nil || r.Item == nil {
		return fsm.Item{}, false, err
	}
	return *r.Item, true, nil
}

// List reads keys linearizably.
func (m *Manager) List(ctx context.Context, cluster string, q fsm.ListQuery) ([]fsm.Item, error) {
	r, err := m.read(ctx, cluster, fsm.Query{List: &q})
	return dropReserved(r.Items), err
}

// Snapshot returns a consistent point-in-time export of cluster's state.
func (m *Manager) Snapshot(ctx context.Context, cluster string) ([]byte, error) {
	r, err := m.read(ctx, cluster, fsm.Query{Export: true})
	return r.Export, err
}

// Restore replaces cluster's whole state with a snapshot blob. The restore
// gets its proposal ID here, once, like a command in Apply: re-proposed or
// forwarded again, it is applied once, never over the writes that followed.
func (m *Manager) Restore(ctx context.Context, cluster string, blob []byte) error {
	id := fsm.NewProposalID()
	entry, err := fsm.EncodeRestore(id, blob)
	if err != nil {
		return err
	}
	if h, ok := m.hostedShard(cluster); ok {
		_, err := m.proposeEntry(ctx, h.Shard, entry, true)
		return err
	}
	var ok bool
	return m.forward(ctx, cluster, methodApply, applyReq{Cluster: cluster, Restore: blob, RestoreID: id}, &ok, true, m.cfg.OpTimeout)
}

// applyReq is a forwarded write. The command's proposal ID travels in Cmd;
// a restore's in RestoreID. A request from a node that predates IDs has
// none: the serving node draws them, which covers its own re-proposals.
type applyReq struct {
	Cluster   string         `json:"cluster"`
	Cmd       fsm.Command    `json:"cmd"`
	Restore   []byte         `json:"restore,omitempty"`
	RestoreID fsm.ProposalID `json:"restore_id,omitzero"`
}

type readReq struct {
	Cluster string    `json:"cluster"`
	Query   fsm.Query `json:"query"`
	// Stale: answer from the serving replica as it is (StaleGet).
	Stale bool `json:"stale,omitempty"`
}

// forward sends a request to a node of cluster that hosts its group,
// trying the ones gossip says host it first (orderTargets), and tries the
// next on failure.
//
// Each try is bounded by tryTimeout, twice ProposalTimeout for a single
// read or write: a replica answers within that (its own proposals and
// reads give up after ProposalTimeout), so one that has not is hung or cut
// off, and is tried last for slowFor. A read or an idempotent write then
// goes to the next node; a compare-and-set write, whose outcome is
// unknown, is answered ErrTimeout, as it is when proposed locally. The
// same holds when the node went away with the request (a broken
// connection): only a call that never left this node
// (transport.ErrNotSent) is safe to send elsewhere.
func (m *Manager) forward(ctx context.Context, cluster, method string, req, out any, idempotent bool, tryTimeout time.Duration) error {
	if m.rpc == nil {
		return fmt.Errorf("%w: no replica of cluster %s here and no transport", ErrNotBootstrapped, cluster)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var targets []Peer
	for _, p := range m.members.Peers() {
		if p.Cluster == cluster && p.Status == "alive" && p.RPCAddr != "" && p.Name != m.cfg.NodeName {
			targets = append(targets, p)
		}
	}
	// A node that has seen its cluster's group knows it exists: reaching
	// none of its replicas is no quorum, not "not bootstrapped".
	seen := cluster == m.cfg.LocalCluster && m.isSeen()
	if len(targets) == 0 {
		if seen {
			return newOpError(ErrNoQuorum, nil, "%s (no other live node of the cluster)",
				noQuorumMsg(cluster, m.cfg.NodeName))
		}
		return fmt.Errorf("%w: no live node of cluster %q", ErrNotBootstrapped, cluster)
	}
	m.mu.Lock()
	m.rr++
	targets = orderTargets(targets, m.rr, m.slow, time.Now())
	m.mu.Unlock()
	lastErr := fmt.Errorf("%w: no node of cluster %q hosts its group yet", ErrNotBootstrapped, cluster)
	if seen {
		lastErr = newOpError(ErrNoQuorum, nil, "%s (no live node answered as a replica)",
			noQuorumMsg(cluster, m.cfg.NodeName))
	}
	for _, p := range targets {
		cctx, cancel := boundedCtx(ctx, tryTimeout)
		resp, err := m.rpc.Call(cctx, p.RPCAddr, method, body)
		tryExpired := cctx.Err() != nil
		cancel()
		if err == nil {
			if err := json.Unmarshal(resp, out); err != nil {
				return fmt.Errorf("forward to %s: decode: %w", p.Name, err)
			}
			return nil
		}
		var re *transport.RemoteError
		if errors.As(err, &re) {
			switch re.Code {
			case codeNotHosting:
				continue
			case codeNoQuorum:
				return newOpError(ErrNoQuorum, re, "%s (via %s)", re.Message, p.Name)
			case codeNotBootstrapped:
				// A node that has seen the group knows it exists: a peer
				// without a replica of it (one just removed, say) is no
				// replica to ask, and reaching none is no quorum.
				if !seen {
					lastErr = newOpError(ErrNotBootstrapped, re, "%s (via %s)", re.Message, p.Name)
				}
				continue
			case codeTimeout:
				return newOpError(ErrTimeout, re, "%s (via %s)", re.Message, p.Name)
			case codeBad:
				return fmt.Errorf("%w: %s", fsm.ErrBadCommand, re.Message)
			case codeForbidden:
				return forbiddenErr(re, p.Name)
			case transport.CodeForbidden:
				// p does not know this node as a live member (yet): after
				// a heal, until gossip sees this node alive again there.
				lastErr = newOpError(ErrNoQuorum, re, "%s (%s does not see %s alive yet: %s)",
					noQuorumMsg(cluster, m.cfg.NodeName), p.Name, m.cfg.NodeName, re.Message)
				continue
			}
			return fmt.Errorf("forward to %s: %w", p.Name, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
		}
		m.mu.Lock()
		if m.slow == nil {
			m.slow = map[string]time.Time{}
		}
		m.slow[p.Name] = time.Now().Add(slowFor)
		m.mu.Unlock()
		if !idempotent && !errors.Is(err, transport.ErrNotSent) {
			// The replica had the request and went silent or away before
			// answering: it may have proposed it. Another replica would
			// apply it a second time, and a compare-and-set would report
			// its own first application as a conflict. Only a call that
			// never left this node moves on.
			if tryExpired {
				return fmt.Errorf("%w: forward to %s: no answer within %s; the write's outcome is unknown", ErrTimeout, p.Name, tryTimeout)
			}
			return fmt.Errorf("%w: forward to %s: %v; the write's outcome is unknown", ErrTimeout, p.Name, err)
		}
		lastErr = newOpError(ErrNoQuorum, err, "%s (no node hosting the group answered; last tried %s: %v)",
			noQuorumMsg(cluster, m.cfg.NodeName), p.Name, err)
	}
	return lastErr
}

// orderTargets orders a forward's targets: peers gossip says host the group
// first (a replica answers at once; any other node answers not_hosting),
// then the others, nodes that recently hung last whatever they say; each
// class rotated by rr so that load spreads. It reorders targets in place.
func orderTargets(targets []Peer, rr uint64, slow map[string]time.Time, now time.Time) []Peer {
	if len(targets) == 0 {
		return targets
	}
	start := int(rr % uint64(len(targets)))
	targets = append(targets[start:], targets[:start]...)
	rank := func(p Peer) int {
		switch {
		case now.Before(slow[p.Name]):
			return 2
		case p.Hosting:
			return 0
		}
		return 1
	}
	sort.SliceStable(targets, func(i, j int) bool { return rank(targets[i]) < rank(targets[j]) })
	return targets
}

// remoteErr carries a sentinel to the forwarding node.
func remoteErr(err error) error {
	switch {
	case errors.Is(err, ErrNoQuorum):
		return transport.Errorf(codeNoQuorum, "%v", err)
	case errors.Is(err, ErrNotBootstrapped):
		return transport.Errorf(codeNotBootstrapped, "%v", err)
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return transport.Errorf(codeTimeout, "%v", err)
	case errors.Is(err, fsm.ErrBadCommand), errors.Is(err, fsm.ErrBadSnapshot):
		return transport.Errorf(codeBad, "%v", err)
	}
	return err
}

func (m *Manager) serveApply(ctx context.Context, r *transport.Request) ([]byte, error) {
	caller, err := m.callerOf(r)
	if err != nil {
		return nil, err
	}
	var req applyReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if err := m.checkApply(caller, req); err != nil {
		return nil, err
	}
	h, ok := m.hostedShard(req.Cluster)
	if !ok {
		return nil, transport.Errorf(codeNotHosting, "%s hosts no replica of cluster %s", m.cfg.NodeName, req.Cluster)
	}
	if req.Restore != nil {
		if req.RestoreID.IsZero() {
			req.RestoreID = fsm.NewProposalID()
		}
		entry, err := fsm.EncodeRestore(req.RestoreID, req.Restore)
		if err != nil {
			return nil, remoteErr(err)
		}
		if _, err := m.proposeEntry(ctx, h.Shard, entry, true); err != nil {
			return nil, remoteErr(err)
		}
		return []byte("true"), nil
	}
	if err := req.Cmd.Validate(); err != nil {
		return nil, remoteErr(err)
	}
	if err := checkReserved(req.Cmd); err != nil {
		return nil, remoteErr(err)
	}
	res, err := m.applyLocal(ctx, h, req.Cmd)
	if err != nil {
		return nil, remoteErr(err)
	}
	return json.Marshal(res)
}

func (m *Manager) serveRead(ctx context.Context, r *transport.Request) ([]byte, error) {
	if _, err := m.callerOf(r); err != nil {
		return nil, err
	}
	var req readReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	h, ok := m.hostedShard(req.Cluster)
	if !ok {
		return nil, transport.Errorf(codeNotHosting, "%s hosts no replica of cluster %s", m.cfg.NodeName, req.Cluster)
	}
	if req.Stale {
		res, err := m.serveStaleRead(h, req.Query)
		if err != nil {
			return nil, remoteErr(err)
		}
		return json.Marshal(res)
	}
	res, err := m.readLocal(ctx, h, req.Query)
	if err != nil {
		return nil, remoteErr(err)
	}
	return json.Marshal(res)
}

// slowFor is how long a node that did not answer a forward is tried last.
const slowFor = 5 * time.Second

// hasCAS reports whether cmd has a compare-and-set op: applying it twice
// is not the same as once.
func hasCAS(cmd fsm.Command) bool {
	for _, op := range cmd.Ops {
		if op.CAS != nil {
			return true
		}
	}
	return false
}

// droppedUnder reports whether err says the local replica of cluster is
// gone (ErrNotBootstrapped: dragonboat accepted nothing) and it was
// dropped meanwhile, as a replica removed while cut off is after the heal:
// the operation may then go to the group through another node.
func droppedUnder(m *Manager, cluster string, err error) bool {
	if !errors.Is(err, ErrNotBootstrapped) {
		return false
	}
	_, still := m.hostedShard(cluster)
	return !still
}
