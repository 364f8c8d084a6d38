package node

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/gossip"
)

const (
	// quorumCheckEvery is how often the groups this node hosts are looked
	// at: cheap (local Raft state and the gossip view, no network).
	quorumCheckEvery = time.Second
	// quorumLogEvery is how often a loss that lasts is logged again, so
	// that an operator reading the end of the log sees it is still on.
	quorumLogEvery = 30 * time.Second
	// quorumGraceMin is the least time a group must look quorum-less
	// before it is logged: an election, or a start while gossip has not
	// yet met the other voters, is not a loss worth a warning.
	quorumGraceMin = 2 * time.Second
	// quorumAllAliveGrace is the grace when gossip still sees every voter
	// alive: a voter that just died is declared failed only after gossip's
	// probes time out (seconds on a LAN profile), and until then the
	// advice to check Raft addresses and TLS would mislead.
	quorumAllAliveGrace = 10 * time.Second
	// quorumChangeEvery bounds how often a change of the missing voters is
	// logged within one loss.
	quorumChangeEvery = 3 * time.Second
)

// voterView is one voter of a group and what gossip says of its node.
type voterView struct {
	Node   string // "" when gossip knows no member at its Raft address
	Addr   string
	ID     uint64
	Status string // gossip status, "refused" (TLS), or "" when unknown
}

// present reports whether the voter counts for a quorum: alive in gossip
// (as /v1/ready counts it; a suspect is named, with its status).
func (v voterView) present() bool { return v.Status == string(gossip.StatusAlive) }

func (v voterView) String() string {
	name := v.Node
	if name == "" {
		name = fmt.Sprintf("replica %d at %s", v.ID, v.Addr)
	}
	status := v.Status
	if status == "" {
		status = "not in gossip"
	}
	return name + " (" + status + ")"
}

// groupView is one group this node hosts, as consensus and gossip see it.
type groupView struct {
	Cluster         string
	Leader          string // node name; "" with LeaderKnown when gossip lacks it
	LeaderKnown     bool
	ElectionTimeout time.Duration
	Voters          []voterView
}

// quorumLoss is what the watch remembers of one group.
type quorumLoss struct {
	badSince time.Time // when the group started to look quorum-less; zero while fine
	since    time.Time // when the loss was logged; zero when not logged
	lastLog  time.Time
	missing  string // the replica IDs of the missing voters last logged
}

// quorumWatch logs while a group this node hosts has no quorum: once when
// it has looked so for a grace period, then every logEvery, naming the
// missing voters; and once when the quorum is back, with how long it was
// gone. It is driven by observe, so it is a plain state machine.
type quorumWatch struct {
	log      zerolog.Logger
	logEvery time.Duration
	groups   map[string]*quorumLoss
}

func newQuorumWatch(log zerolog.Logger, every time.Duration) *quorumWatch {
	return &quorumWatch{log: log, logEvery: every, groups: map[string]*quorumLoss{}}
}

// observe takes the groups this node hosts at now.
func (w *quorumWatch) observe(now time.Time, groups []groupView) {
	seen := map[string]bool{}
	for _, g := range groups {
		seen[g.Cluster] = true
		st := w.groups[g.Cluster]
		if st == nil {
			st = &quorumLoss{}
			w.groups[g.Cluster] = st
		}
		var missing []voterView
		for _, v := range g.Voters {
			if !v.present() {
				missing = append(missing, v)
			}
		}
		need := len(g.Voters)/2 + 1
		reachable := len(g.Voters) - len(missing)
		// No leader, or too few voters left for one: either way writes
		// and linearizable reads of the cluster cannot succeed.
		bad := !g.LeaderKnown || reachable < need
		if !bad {
			if !st.since.IsZero() {
				lasted := now.Sub(st.badSince)
				w.log.Info().Str("cluster", g.Cluster).Str("leader", g.Leader).
					Dur("lasted", lasted).Int("voters", len(g.Voters)).Int("voters_reachable", reachable).
					Msgf("quorum regained for the group of cluster %s: leader %s, after %s without quorum",
						g.Cluster, orUnknown(g.Leader), lasted.Round(100*time.Millisecond))
			}
			*st = quorumLoss{}
			continue
		}
		if st.badSince.IsZero() {
			st.badSince = now
		}
		grace := quorumGrace(g)
		if len(missing) == 0 {
			grace = max(grace, quorumAllAliveGrace)
		}
		if now.Sub(st.badSince) < grace {
			continue
		}
		names := make([]string, 0, len(missing))
		for _, v := range missing {
			names = append(names, v.String())
		}
		sort.Strings(names)
		// Logged again every logEvery, and sooner when the set of missing
		// voters changes (news for whoever brings them back), though not
		// more often than quorumChangeEvery, so that a flapping voter
		// does not fill the log.
		ids := make([]string, 0, len(missing))
		for _, v := range missing {
			ids = append(ids, fmt.Sprint(v.ID))
		}
		joined := strings.Join(ids, ",")
		if !st.since.IsZero() {
			since := now.Sub(st.lastLog)
			if since < quorumChangeEvery || (since < w.logEvery && joined == st.missing) {
				continue
			}
		}
		ev := w.log.Warn()
		if st.since.IsZero() {
			st.since = now
		} else {
			ev = ev.Dur("for", now.Sub(st.badSince))
		}
		st.lastLog, st.missing = now, joined
		ev.Str("cluster", g.Cluster).Strs("missing", names).Int("voters", len(g.Voters)).
			Int("voters_reachable", reachable).Int("voters_needed", need).
			Msg(noQuorumMessage(g.Cluster, names, reachable, len(g.Voters), need, now.Sub(st.badSince)))
	}
	for c := range w.groups {
		if !seen[c] {
			delete(w.groups, c) // no longer hosted here
		}
	}
}

// quorumGrace is how long g must look quorum-less before it is logged:
// a few election timeouts, so that an ordinary election is not reported.
func quorumGrace(g groupView) time.Duration {
	return max(3*g.ElectionTimeout, quorumGraceMin)
}

func noQuorumMessage(cluster string, missing []string, reachable, total, need int, lasted time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "no quorum for the group of cluster %s", cluster)
	if lasted >= quorumLogEvery {
		fmt.Fprintf(&b, " for %s", lasted.Round(time.Second))
	}
	if len(missing) == 0 {
		fmt.Fprintf(&b, ": all %d voters are alive in gossip but no leader is elected; check that their "+
			"Raft addresses (-raft, -advertise) reach each other and that their node TLS is accepted", total)
		return b.String()
	}
	fmt.Fprintf(&b, ": waiting for voters %s (%d of %d voters reachable, %d needed). "+
		"Writes and reads of cluster %s fail with 503 until enough are back: restart them; "+
		"if they are lost for good, `meshgw raft recover` on a stopped survivor",
		strings.Join(missing, ", "), reachable, total, need, cluster)
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "(name not in gossip yet)"
	}
	return s
}

// groupViews is what the watch needs, from consensus Status and gossip.
func (a *Agent) groupViews(ctx context.Context) []groupView {
	status := map[string]string{}
	for _, m := range a.gossip.Members(gossip.Filter{}) {
		status[m.Name] = a.trust.status(m)
	}
	var out []groupView
	for _, g := range a.cons.Status(ctx) {
		if !g.Local {
			continue
		}
		v := groupView{Cluster: g.Cluster, Leader: g.Leader, LeaderKnown: g.LeaderReplicaID != 0,
			ElectionTimeout: g.ElectionTimeout}
		for _, r := range g.Replicas {
			s := status[r.Node]
			if r.Node == a.cfg.NodeName {
				s = string(gossip.StatusAlive) // this node, running
			}
			v.Voters = append(v.Voters, voterView{Node: r.Node, Addr: r.Addr, ID: r.ID, Status: s})
		}
		sort.Slice(v.Voters, func(i, j int) bool { return v.Voters[i].ID < v.Voters[j].ID })
		out = append(out, v)
	}
	return out
}

// watchQuorum runs the quorum watch until quorumStop is closed, which
// Shutdown does before it stops consensus.
func (a *Agent) watchQuorum(every time.Duration) {
	defer a.quorumWG.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newQuorumWatch(a.log.With().Str("component", "quorum").Logger(), every)
	tick := time.NewTicker(quorumCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-a.quorumStop:
			return
		case now := <-tick.C:
			w.observe(now, a.groupViews(ctx))
		}
	}
}
