package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// The bootstrap protocol and its safety argument are in doc.go.

// bootstrapWindow bounds how long a bootstrap round is joinable: a node in
// a round's initial map that has not started its replica by then waits to
// be added by the leader instead (its replica ID may have history by then).
const bootstrapWindow = time.Minute

// maxProposals bounds the proposal registry. A node whose registry is full
// refuses to record more and answers the probe with an error, which makes
// the asker wait: refusing is safe, forgetting would not be.
const maxProposals = 1024

// maxProposalMembers bounds one proposal's member list (and so the record).
const maxProposalMembers = 256

// waitLogEvery is how often a node still waiting for the same reason says so.
const waitLogEvery = 30 * time.Second

// bootProposal is a bootstrap round an initiator is about to create: Members
// (sorted, Members[0] is the initiator) are its first voters.
type bootProposal struct {
	Initiator string    `json:"initiator"`
	Members   []string  `json:"members"`
	At        time.Time `json:"at,omitzero"` // local time recorded; not sent
}

func (p bootProposal) validate(from string) error {
	switch {
	case p.Initiator == "" || p.Initiator != from:
		return fmt.Errorf("proposal by %q sent by %q", p.Initiator, from)
	case len(p.Members) == 0 || len(p.Members) > maxProposalMembers:
		return fmt.Errorf("proposal with %d members", len(p.Members))
	case p.Members[0] != p.Initiator:
		return fmt.Errorf("proposal by %q names %q first", p.Initiator, p.Members[0])
	}
	for i := 1; i < len(p.Members); i++ {
		if p.Members[i] <= p.Members[i-1] {
			return errors.New("proposal members are not sorted and distinct")
		}
	}
	return nil
}

// bootState is what a node keeps about bootstrap across restarts, in
// DataDir/raft/bootstrap.json.
type bootState struct {
	// Seen: this node has seen the cluster's group exist. It never
	// creates or joins a bootstrap round again and stops probing.
	Seen    bool   `json:"seen"`
	SeenWhy string `json:"seen_why,omitempty"`
	// Proposals holds the latest proposal each initiator told this node of.
	Proposals map[string]bootProposal `json:"proposals,omitempty"`
}

func (m *Manager) bootFile() string { return filepath.Join(m.raftDir(), "bootstrap.json") }

// loadBoot reads the bootstrap state. Record times become the load time:
// every probe after a restart is then later than every record, whatever
// the wall clock did meanwhile (see doc.go on why "later" matters).
// Caller holds m.bootMu.
func (m *Manager) loadBoot(now time.Time) error {
	data, err := os.ReadFile(m.bootFile())
	if errors.Is(err, os.ErrNotExist) {
		m.boot = bootState{Proposals: map[string]bootProposal{}}
		return nil
	}
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	var st bootState
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("consensus: %s: %w", m.bootFile(), err)
	}
	if st.Proposals == nil {
		st.Proposals = map[string]bootProposal{}
	}
	for k, p := range st.Proposals {
		p.At = now
		st.Proposals[k] = p
	}
	m.boot = st
	return nil
}

// saveBoot writes the bootstrap state atomically and durably (caller holds
// bootMu).
func (m *Manager) saveBoot() error {
	data, err := json.MarshalIndent(m.boot, "", "  ")
	if err != nil {
		return fmt.Errorf("consensus: encode bootstrap state: %w", err)
	}
	if err := writeFileSync(m.bootFile(), data); err != nil {
		return fmt.Errorf("consensus: save bootstrap state: %w", err)
	}
	return nil
}

// writeFileSync replaces path with data: a temporary file, fsync, rename.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// markSeen records that the group exists (caller holds bootMu).
func (m *Manager) markSeen(why string) error {
	if m.boot.Seen {
		return nil
	}
	m.boot.Seen, m.boot.SeenWhy = true, why
	if err := m.saveBoot(); err != nil {
		return err
	}
	m.log.Info().Str("cluster", m.cfg.LocalCluster).Str("why", why).
		Msg("the cluster's group exists: this node will never bootstrap it, only wait to be added")
	return nil
}

func (m *Manager) isSeen() bool {
	m.bootMu.Lock()
	defer m.bootMu.Unlock()
	return m.boot.Seen
}

// bootAction is what decideBootstrap tells the node to do.
type bootAction int

const (
	actWait   bootAction = iota
	actSeen              // the group exists: record seen, then wait
	actJoin              // start this node's replica of a peer's round
	actCreate            // create the group (initiator only; final check next)
)

func (a bootAction) String() string {
	return [...]string{"wait", "seen", "join", "create"}[a]
}

// bootView is everything decideBootstrap looks at. Members are the local
// cluster's gossip members, any status, this node included; Answers holds
// the info answers of the peers probed in this pass (a member absent from
// it did not answer or was not probed).
type bootView struct {
	Self, Cluster, SelfRaft string
	SelfReplica             uint64
	Expect                  int
	Seen                    bool
	Members                 []Peer
	Answers                 map[string]infoResp
	// Candidates is the candidate set of the previous passes and
	// CandidatesSince when it was first computed.
	Candidates      string
	CandidatesSince time.Time
	Now             time.Time
	Stable, Window  time.Duration
}

type bootDecision struct {
	Action bootAction
	Reason string
	// Peer and Round: the round to join (actJoin).
	Peer  string
	Round infoResp
	// Chosen are the first voters (actCreate), sorted by name.
	Chosen []Peer
	// Candidates is this pass's candidate set ("" when not computed).
	Candidates string
}

// decideBootstrap is the bootstrap decision, a pure function of the view
// (doc.go states the rule and why it is safe).
func decideBootstrap(v bootView) bootDecision {
	wait := func(format string, args ...any) bootDecision {
		return bootDecision{Action: actWait, Reason: fmt.Sprintf(format, args...)}
	}
	if v.Expect <= 0 {
		return wait("bootstrap-expect is 0: waiting to be added by the group's leader")
	}
	if v.Seen {
		return wait("the group exists: waiting to be added by its leader")
	}
	// What the peers that answered host decides first: joining a round
	// this node is a first voter of never creates anything, so it need
	// not wait for unrelated members.
	names := make([]string, 0, len(v.Answers))
	for n := range v.Answers {
		names = append(names, n)
	}
	sort.Strings(names)
	var joinPeer string
	var round infoResp
	for _, n := range names {
		a := v.Answers[n]
		if !a.Hosts {
			continue
		}
		if !joinable(a, v) {
			return bootDecision{Action: actSeen, Reason: fmt.Sprintf("%s hosts the group", n)}
		}
		if joinPeer != "" && !sameRound(round, a) {
			return bootDecision{Action: actSeen, Reason: fmt.Sprintf(
				"%s and %s host different bootstrap rounds", joinPeer, n)}
		}
		if joinPeer == "" {
			joinPeer, round = n, a
		}
	}
	if joinPeer != "" {
		return bootDecision{Action: actJoin, Peer: joinPeer, Round: round,
			Reason: fmt.Sprintf("%s bootstrapped the group with this node as a first voter", joinPeer)}
	}
	self := false
	for _, p := range v.Members {
		if p.Name == v.Self {
			self = true
			continue
		}
		if p.Status != "alive" {
			return wait("%s is %s; it may host the group", p.Name, p.Status)
		}
		if p.RaftAddr == "" || p.RPCAddr == "" {
			return wait("%s advertises no Raft or RPC address yet", p.Name)
		}
	}
	if !self {
		return wait("this node is not in its own gossip view yet")
	}
	for _, p := range v.Members {
		if _, ok := v.Answers[p.Name]; !ok && p.Name != v.Self {
			return wait("%s did not answer whether it hosts the group", p.Name)
		}
	}
	if len(v.Members) < v.Expect {
		return wait("waiting for %d more nodes of cluster %s (bootstrap-expect %d)",
			v.Expect-len(v.Members), v.Cluster, v.Expect)
	}
	sorted := append([]Peer(nil), v.Members...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	chosen := sorted[:v.Expect]
	key := peerNames(chosen)
	d := bootDecision{Action: actWait, Candidates: key}
	switch {
	case key != v.Candidates:
		d.Reason = fmt.Sprintf("candidate voters changed to %s", key)
	case v.Expect > 1 && v.Now.Sub(v.CandidatesSince) < v.Stable:
		d.Reason = fmt.Sprintf("candidate voters %s must stay the same for %s", key, v.Stable)
	case chosen[0].Name != v.Self:
		d.Reason = fmt.Sprintf("waiting for %s to create the group (voters %s)", chosen[0].Name, key)
	default:
		d.Action, d.Chosen = actCreate, chosen
		d.Reason = fmt.Sprintf("initiator of voters %s", key)
	}
	return d
}

func peerNames(ps []Peer) string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ",")
}

// joinable reports whether a is a bootstrap round this node may still start
// its replica of: recent, with this node's replica ID at this node's
// address in its initial map.
func joinable(a infoResp, v bootView) bool {
	if !a.Hosts || a.BootstrappedAt.IsZero() {
		return false
	}
	// Both clocks' estimates of the round's age, the larger one: a skewed
	// clock can only make a round look older (not joinable: safe).
	age := max(v.Now.Sub(a.BootstrappedAt), time.Duration(a.AgeMs)*time.Millisecond)
	if age >= v.Window {
		return false
	}
	addr, ok := a.Initial[v.SelfReplica]
	return ok && addr == v.SelfRaft
}

// sameRound reports whether two answers describe one bootstrap round:
// created at the same instant with the same initial member map.
func sameRound(a, b infoResp) bool {
	return !a.BootstrappedAt.IsZero() && a.BootstrappedAt.Equal(b.BootstrappedAt) &&
		len(a.Initial) > 0 && maps.Equal(a.Initial, b.Initial)
}

// probeRec is one info probe of an initiator's pass.
type probeRec struct {
	Peer           string
	Sent, Answered time.Time
	Resp           infoResp
}

// checkConflicts is the initiator's final check (doc.go, rule 7): every
// other initiator it knows of must be met (see unmet), and the pass must
// have started at most maxPass before now.
func checkConflicts(self string, registry map[string]bootProposal, probes []probeRec,
	start, now time.Time, maxPass time.Duration) error {
	if d := now.Sub(start); d > maxPass {
		return fmt.Errorf("the pass took %s, more than %s", d.Round(time.Millisecond), maxPass)
	}
	if u := unmet(self, registry, probes); len(u) > 0 {
		return fmt.Errorf("%s also proposed a bootstrap round and was not probed since this node learnt of it",
			strings.Join(u, ", "))
	}
	return nil
}

// unmet lists the other initiators whose proposal this node knows, from
// its registry (learnt at the record time) or from a probed node's answer
// (learnt when the answer arrived), and that no probe sent after this node
// learnt of the proposal found not hosting.
func unmet(self string, registry map[string]bootProposal, probes []probeRec) []string {
	learnt := map[string]time.Time{}
	for j, p := range registry {
		if j != self {
			learnt[j] = p.At
		}
	}
	for _, pr := range probes {
		for _, p := range pr.Resp.Proposals {
			if p.Initiator == self {
				continue
			}
			if t, ok := learnt[p.Initiator]; !ok || pr.Answered.After(t) {
				learnt[p.Initiator] = pr.Answered
			}
		}
	}
	var out []string
	for j, at := range learnt {
		met := false
		for _, pr := range probes {
			if pr.Peer == j && pr.Sent.After(at) && !pr.Resp.Hosts {
				met = true
			}
		}
		if !met {
			out = append(out, j)
		}
	}
	sort.Strings(out)
	return out
}

type infoReq struct {
	Cluster string `json:"cluster"`
	// From and Proposal: the asker, and the round it is about to create
	// when it is an initiator (recorded by the answering node).
	From     string        `json:"from,omitempty"`
	Proposal *bootProposal `json:"proposal,omitempty"`
}

type infoResp struct {
	Hosts          bool              `json:"hosts"`
	Replica        uint64            `json:"replica,omitempty"`
	BootstrappedAt time.Time         `json:"bootstrapped_at,omitzero"`
	Initial        map[uint64]string `json:"initial,omitempty"`
	// AgeMs is the round's age by the answering node's clock.
	AgeMs int64 `json:"age_ms,omitempty"`
	// Proposals are the proposals the answering node has recorded.
	Proposals []bootProposal `json:"proposals,omitempty"`
}

func (m *Manager) info(ctx context.Context, addr, cluster string, prop *bootProposal) (infoResp, error) {
	body, err := json.Marshal(infoReq{Cluster: cluster, From: m.cfg.NodeName, Proposal: prop})
	if err != nil {
		return infoResp{}, fmt.Errorf("encode info request: %w", err)
	}
	resp, err := m.rpc.Call(ctx, addr, methodInfo, body)
	if err != nil {
		return infoResp{}, err
	}
	var out infoResp
	if err := json.Unmarshal(resp, &out); err != nil {
		return infoResp{}, fmt.Errorf("decode info answer from %s: %w", addr, err)
	}
	return out, nil
}

// serveInfo answers whether this node hosts cluster's group. Under bootMu
// it records the asker's proposal before answering, and a node creating
// the group holds bootMu from its final check until the replica is
// recorded: an answer is either "hosting" or given before that check.
func (m *Manager) serveInfo(ctx context.Context, r *transport.Request) ([]byte, error) {
	caller, err := m.callerOf(r)
	if err != nil {
		return nil, err
	}
	var req infoReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf(codeBad, "decode: %v", err)
	}
	if req.Proposal != nil && req.From != r.Peer {
		// A proposal is recorded as its initiator's: only the initiator,
		// by its certificate, may send it.
		return nil, transport.Errorf(codeForbidden, "bootstrap proposal from %q sent with the certificate of %q",
			req.From, r.Peer)
	}
	if req.Proposal != nil && caller.Cluster != req.Cluster {
		// Recorded proposals hold a bootstrap back (and fill a bounded
		// registry): only the cluster's own nodes may make them.
		return nil, transport.Errorf(codeForbidden, "bootstrap proposal for cluster %s from %s, a node of cluster %s",
			req.Cluster, caller.Name, caller.Cluster)
	}
	m.bootMu.Lock()
	defer m.bootMu.Unlock()
	if m.boot.Proposals == nil {
		// Start has not loaded the persisted state yet: an answer now
		// could deny a group or a proposal this node knows of.
		return nil, transport.Errorf(codeNotBootstrapped, "%s is starting", m.cfg.NodeName)
	}
	if req.Proposal != nil && req.Cluster == m.cfg.LocalCluster {
		p := *req.Proposal
		if err := p.validate(req.From); err != nil {
			return nil, transport.Errorf(codeBad, "%v", err)
		}
		if _, ok := m.boot.Proposals[p.Initiator]; !ok && len(m.boot.Proposals) >= maxProposals {
			return nil, fmt.Errorf("consensus: %d bootstrap proposals recorded already; not recording %s's",
				maxProposals, p.Initiator)
		}
		p.At = time.Now()
		m.boot.Proposals[p.Initiator] = p
		if err := m.saveBoot(); err != nil {
			return nil, err
		}
	}
	h, ok := m.hostedShard(req.Cluster)
	resp := infoResp{Hosts: ok, Replica: h.Replica, BootstrappedAt: h.BootstrappedAt, Initial: h.Initial}
	if ok && !h.BootstrappedAt.IsZero() {
		resp.AgeMs = max(time.Since(h.BootstrappedAt).Milliseconds(), 0)
	}
	if req.Cluster == m.cfg.LocalCluster {
		for _, p := range m.boot.Proposals {
			p.At = time.Time{}
			resp.Proposals = append(resp.Proposals, p)
		}
		sort.Slice(resp.Proposals, func(i, j int) bool {
			return resp.Proposals[i].Initiator < resp.Proposals[j].Initiator
		})
	}
	return json.Marshal(resp)
}

// maybeBootstrap runs one bootstrap pass: probe, decide, act.
func (m *Manager) maybeBootstrap(ctx context.Context, peers []Peer) {
	if m.cfg.BootstrapExpect == 0 {
		return
	}
	var members []Peer
	for _, p := range peers {
		// A member whose TLS this node refuses cannot be a replica of a
		// group with it (Raft uses the same trust): it neither blocks
		// the bootstrap nor takes part in it.
		if p.Cluster == m.cfg.LocalCluster && p.Status != StatusRefused {
			members = append(members, p)
		}
	}
	view := m.bootView(members)
	if !view.Seen {
		view.Answers, _ = m.probe(ctx, members, nil)
	}
	d := decideBootstrap(view)
	m.mu.Lock()
	if d.Candidates != m.candidates {
		m.candidates, m.stableSince = d.Candidates, view.Now
	}
	m.mu.Unlock()
	switch d.Action {
	case actSeen:
		m.bootMu.Lock()
		err := m.markSeen(d.Reason)
		m.bootMu.Unlock()
		if err != nil {
			m.log.Error().Err(err).Msg("bootstrap")
		}
		return // markSeen said why
	case actJoin:
		m.joinRound(d)
		return
	case actCreate:
		if err := m.create(ctx, members, d); err != nil {
			d.Reason = "bootstrap deferred: " + err.Error()
		} else {
			return
		}
	}
	// A seen node waiting to be added is in its normal state (a
	// non-voter may stay one for good): said once, not every 30 s.
	m.logWait(d.Reason, !view.Seen)
}

// bootView snapshots what decideBootstrap needs.
func (m *Manager) bootView(members []Peer) bootView {
	m.mu.Lock()
	cand, since := m.candidates, m.stableSince
	m.mu.Unlock()
	return bootView{
		Self: m.cfg.NodeName, Cluster: m.cfg.LocalCluster, SelfRaft: m.cfg.RaftAdvertiseAddr,
		SelfReplica: replicaID(m.cfg.NodeName, 0), Expect: m.cfg.BootstrapExpect, Seen: m.isSeen(),
		Members: members, Candidates: cand, CandidatesSince: since, Now: time.Now(),
		Stable: m.cfg.BootstrapStable, Window: bootstrapWindow,
	}
}

// probe asks members (this node excluded) whether they host the group,
// carrying prop when this node is an initiator. Peers gossip says host it
// are asked first; when one does, the others are not asked (the answer
// decides). Without a proposal, probing stops at the first peer that is
// not alive or does not answer: the decision is "wait" anyway.
func (m *Manager) probe(ctx context.Context, members []Peer,
	prop *bootProposal) (map[string]infoResp, []probeRec) {
	var tagged, rest []Peer
	for _, p := range members {
		switch {
		case p.Name == m.cfg.NodeName:
		case p.Hosting && p.Status == "alive" && p.RPCAddr != "":
			tagged = append(tagged, p)
		default:
			rest = append(rest, p)
		}
	}
	answers := map[string]infoResp{}
	var recs []probeRec
	var mu sync.Mutex // answers, recs: the proposal pass asks in parallel
	ask := func(p Peer) bool {
		if p.Status != "alive" || p.RPCAddr == "" {
			return false
		}
		pctx, cancel := boundedCtx(ctx, m.cfg.OpTimeout)
		sent := time.Now()
		a, err := m.info(pctx, p.RPCAddr, m.cfg.LocalCluster, prop)
		cancel()
		if err != nil {
			m.log.Debug().Err(err).Str("peer", p.Name).Msg("bootstrap: peer did not answer")
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		answers[p.Name] = a
		recs = append(recs, probeRec{Peer: p.Name, Sent: sent, Answered: time.Now(), Resp: a})
		return true
	}
	if prop != nil {
		// The initiator asks everyone, and each asked node writes the
		// proposal to disk before answering: in parallel, so that the pass
		// stays within its bound in a large mesh with slow disks.
		sem := make(chan struct{}, probeParallel)
		var wg sync.WaitGroup
		for _, p := range append(tagged, rest...) {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ask(p)
			}()
		}
		wg.Wait()
		return answers, recs
	}
	hosts := false
	for _, p := range tagged {
		if ask(p) && answers[p.Name].Hosts {
			hosts = true
		}
	}
	if hosts {
		return answers, recs
	}
	for _, p := range rest {
		if !ask(p) {
			break
		}
	}
	return answers, recs
}

// probeParallel bounds the initiator's concurrent probes.
const probeParallel = 16

// joinRound starts this node's replica of the round a peer bootstrapped.
func (m *Manager) joinRound(d bootDecision) {
	m.bootMu.Lock()
	defer m.bootMu.Unlock()
	if m.boot.Seen {
		return
	}
	if _, ok := m.hostedShard(m.cfg.LocalCluster); ok {
		return
	}
	// Seen first: a crash between the two must not leave a node that may
	// still bootstrap while Raft already has its replica's data.
	if err := m.markSeen("joined the bootstrap round of " + d.Peer); err != nil {
		m.log.Error().Err(err).Msg("bootstrap: join round")
		return
	}
	h := hosted{Cluster: m.cfg.LocalCluster, Shard: ShardID(m.cfg.LocalCluster),
		Replica:        replicaID(m.cfg.NodeName, 0),
		BootstrappedAt: d.Round.BootstrappedAt, Initial: d.Round.Initial}
	if err := m.startReplica(h, d.Round.Initial, false); err != nil {
		m.log.Error().Err(err).Msg("start bootstrap replica")
		return
	}
	m.log.Info().Str("cluster", h.Cluster).Str("peer", d.Peer).
		Msg("started this node's replica of the group a peer bootstrapped")
}

// create is the initiator's pass: record its own proposal, probe every
// member with it, check for conflicting initiators and create the group
// while holding bootMu.
func (m *Manager) create(ctx context.Context, members []Peer, d bootDecision) error {
	start := time.Now()
	// The pass has OpTimeout of its own, whatever the first probes used of
	// the loop's: the final check refuses a longer pass anyway.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.OpTimeout)
	defer cancel()
	names := make([]string, len(d.Chosen))
	for i, p := range d.Chosen {
		names[i] = p.Name
	}
	prop := bootProposal{Initiator: m.cfg.NodeName, Members: names}
	m.bootMu.Lock()
	if _, ok := m.boot.Proposals[prop.Initiator]; !ok && len(m.boot.Proposals) >= maxProposals {
		m.bootMu.Unlock()
		return errors.New("proposal registry full")
	}
	prop.At = start
	m.boot.Proposals[prop.Initiator] = prop
	err := m.saveBoot()
	m.bootMu.Unlock()
	if err != nil {
		return err
	}
	prop.At = time.Time{}
	answers, recs := m.probe(ctx, members, &prop)
	// The same decision on this pass's answers: still the initiator of the
	// same voters, every member answered, none hosts.
	view := m.bootView(members)
	view.Answers = answers
	if d2 := decideBootstrap(view); d2.Action != actCreate || d2.Candidates != d.Candidates {
		return errors.New(d2.Reason)
	}
	// Initiators heard of but not probed since: ask them again, once.
	m.bootMu.Lock()
	again := unmet(m.cfg.NodeName, maps.Clone(m.boot.Proposals), recs)
	m.bootMu.Unlock()
	for _, j := range again {
		for _, p := range members {
			if p.Name == j {
				a, r := m.probe(ctx, []Peer{p}, &prop)
				if a[j].Hosts {
					return fmt.Errorf("%s hosts the group", j)
				}
				recs = append(recs, r...)
			}
		}
	}
	m.bootMu.Lock()
	defer m.bootMu.Unlock()
	if m.boot.Seen {
		return errors.New("the group exists")
	}
	err = checkConflicts(m.cfg.NodeName, m.boot.Proposals, recs, start, time.Now(), m.cfg.OpTimeout)
	if err != nil {
		return err
	}
	if err := m.markSeen("bootstrapped the group"); err != nil {
		return err
	}
	initial := map[uint64]string{}
	for _, p := range d.Chosen {
		initial[replicaID(p.Name, 0)] = p.RaftAddr
	}
	h := hosted{Cluster: m.cfg.LocalCluster, Shard: ShardID(m.cfg.LocalCluster),
		Replica:        replicaID(m.cfg.NodeName, 0),
		BootstrappedAt: time.Now(), Initial: initial}
	if err := m.startReplica(h, initial, false); err != nil {
		// Seen stays set: Raft may hold data of the group already; an
		// operator must look (recover or wipe) rather than us retry.
		m.log.Error().Err(err).Str("cluster", h.Cluster).Msg("bootstrap failed; this node will not try again")
		return nil
	}
	m.log.Info().Str("cluster", h.Cluster).Strs("voters", names).Msg("bootstrapped the cluster's Raft group")
	return nil
}

// logWait says what a waiting node waits for: when the reason changes,
// then, if repeat, every waitLogEvery.
func (m *Manager) logWait(reason string, repeat bool) {
	now := time.Now()
	m.mu.Lock()
	if reason == m.waitReason && (!repeat || now.Sub(m.waitLogged) < waitLogEvery) {
		m.mu.Unlock()
		return
	}
	m.waitReason, m.waitLogged = reason, now
	m.mu.Unlock()
	m.log.Info().Str("cluster", m.cfg.LocalCluster).Str("reason", reason).Msg("bootstrap: waiting")
}
