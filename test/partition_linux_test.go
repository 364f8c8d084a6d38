package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The partition suite (issue 12): 5 agents, each in its own network
// namespace, 3 voters, -bootstrap-expect 3 on every node. Each scenario runs
// on a fresh cluster (a fault one scenario leaves behind must not decide the
// next one), cuts links with firewall rules while a workload runs against
// both sides, heals, and then checks what the clients were told against
// what every node holds:
//   - every acknowledged write is readable on every node;
//   - the compare-and-set counter equals the increments that were applied,
//     every acknowledged one among them, none twice;
//   - an Idempotency-Key maps to one execution on every node and ran at most
//     once, and every execution a client saw accepted ends terminal;
//   - every node sees 5 alive, and there is one Raft group: every replica
//     reports the same voters and leader, and only those voters host one;
//   - the side without quorum refused writes, saying "no quorum".
//
// It reports, per side, how long writes went unacknowledged after the cut
// and what the refusals said.

// cutHold is how long a cut stays after the majority saw the other side
// fail: longer than -autopilot-dead-after (3 s in the harness) plus the
// time a non-voter took to bootstrap a second group in the issue (2.5 s
// after it saw the leader failed), so autopilot and bootstrap both act.
const cutHold = 6 * time.Second

type partSide struct {
	label string
	nodes []string
}

type cutPlan struct {
	sides []partSide
	cuts  [][2]int // pairs of sides that cannot see each other
	// minority is the side that has no quorum and must refuse (-1: none);
	// majority the side that must keep (or regain) writes (-1: none).
	minority, majority int
}

type partScenario struct {
	name string
	plan func(leader string, followers, nonVoters []string) cutPlan
}

var partScenarios = []partScenario{
	{"LeaderIsolated", func(leader string, followers, nonVoters []string) cutPlan {
		return cutPlan{
			sides:    []partSide{{"isolated leader", []string{leader}}, {"other four", concat(followers, nonVoters)}},
			cuts:     [][2]int{{0, 1}},
			minority: 0, majority: 1,
		}
	}},
	// The leader and a non-voter on the small side: the leader must step
	// down, and neither the large side's non-voter nor the small side's may
	// start a group of its own.
	{"Split2And3", func(leader string, followers, nonVoters []string) cutPlan {
		return cutPlan{
			sides: []partSide{{"leader+non-voter (2)", []string{leader, nonVoters[0]}},
				{"two voters+non-voter (3)", concat(followers, nonVoters[1:])}},
			cuts:     [][2]int{{0, 1}},
			minority: 0, majority: 1,
		}
	}},
	// A follower sees both sides; the leader's side and the other voter's
	// side cannot see each other. The leader keeps its quorum through the
	// bridge; the other side reaches the group only through it.
	{"BridgeNode", func(leader string, followers, nonVoters []string) cutPlan {
		return cutPlan{
			sides: []partSide{{"bridge voter", []string{followers[0]}},
				{"leader side", []string{leader, nonVoters[0]}},
				{"far side", []string{followers[1], nonVoters[1]}}},
			cuts:     [][2]int{{1, 2}},
			minority: -1, majority: 1,
		}
	}},
}

func concat(a ...[]string) []string {
	var out []string
	for _, x := range a {
		out = append(out, x...)
	}
	return out
}

func TestPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("partition suite: 5 agents per scenario")
	}
	skipWithoutNetLab(t)
	for _, sc := range partScenarios {
		t.Run(sc.name, func(t *testing.T) { runPartition(t, sc) })
	}
}

func runPartition(t *testing.T, sc partScenario) {
	lab := newNetLab(t)
	c := StartNetCluster(t, lab, 5, Options{BootstrapExpect: 3})
	all := map[string]string{}
	for _, n := range c.Nodes {
		all[n.Name] = "alive"
	}
	WaitMembers(t, 30*time.Second, c.Nodes, all)
	leader, voters := waitOneGroup(t, c, 60*time.Second)
	var followers, nonVoters []string
	for _, n := range c.Nodes {
		switch {
		case n.Name == leader:
		case voters[n.Name]:
			followers = append(followers, n.Name)
		default:
			nonVoters = append(nonVoters, n.Name)
		}
	}
	if len(followers) != 2 || len(nonVoters) != 2 {
		t.Fatalf("want 3 voters, got leader %s, followers %v, non-voters %v", leader, followers, nonVoters)
	}
	plan := sc.plan(leader, followers, nonVoters)
	t.Logf("leader %s, followers %v, non-voters %v; sides %v", leader, followers, nonVoters, plan.sides)

	runsLog := filepath.Join(t.TempDir(), "runs.log")
	w := newWorkload(t, c, runsLog)
	w.setup()
	partner := partners(plan)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(3)
		go func(n *Node) { defer wg.Done(); w.writer(ctx, n) }(n)
		go func(n *Node) { defer wg.Done(); w.incrementer(ctx, n) }(n)
		go func(n *Node) { defer wg.Done(); w.runner(ctx, n, byName(c.Nodes, partner[n.Name])) }(n)
	}
	stopped := false
	stopWorkload := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
		}
	}
	defer stopWorkload()
	// Warm: every node has acknowledged a write before the cut.
	Eventually(t, 30*time.Second, func() error { return w.everyNodeAcked(time.Time{}) })

	for _, p := range plan.cuts {
		lab.cut(plan.sides[p[0]].nodes, plan.sides[p[1]].nodes)
	}
	cutAt := time.Now() // every rule is in place
	detected, seen := waitMajoritySeesFailed(c, plan, 8*time.Second)
	if seen {
		t.Logf("cut; the majority saw the other side failed after %s", detected.Round(10*time.Millisecond))
	} else {
		t.Logf("cut; the majority did not see the other side failed within %s (indirect probes)", detected.Round(time.Second))
	}
	// The cut itself is the scenario: it holds for a fixed time so that
	// failure detection, autopilot and any bootstrap decision all run.
	<-time.After(time.Until(cutAt.Add(detected + cutHold)))
	if plan.minority >= 0 {
		// A minority write is refused only once its reads and its
		// proposal have timed out, which can outlast cutHold on a loaded
		// machine: hold the cut until the minority has answered one, so
		// that the refusal checks below are not vacuous.
		side := plan.sides[plan.minority].nodes
		if err := eventually(20*time.Second, func() error { return w.refusedWrite(side, cutAt) }); err != nil {
			t.Errorf("%s %v: %v", plan.sides[plan.minority].label, side, err)
		}
	}
	lab.heal()
	healAt := time.Now()
	t.Logf("healed after a %s cut", healAt.Sub(cutAt).Round(10*time.Millisecond))

	// After the heal every node takes writes again (in the issue, writes
	// through the rogue group's nodes timed out for good).
	healErr := eventually(30*time.Second, func() error { return w.everyNodeAcked(healAt) })
	healed := time.Since(healAt)
	stopWorkload()

	w.report(plan, cutAt, healAt)
	if healErr != nil {
		t.Errorf("after the heal: %v", healErr)
	} else {
		t.Logf("every node acknowledged a write again %s after the heal", healed.Round(10*time.Millisecond))
	}
	w.checkMinority(plan, cutAt, healAt)

	// One deadline for all the convergence checks: a broken cluster fails
	// them all within it instead of each waiting its own; shorter when a
	// node already failed to take writes again.
	deadline := time.Now().Add(30 * time.Second)
	if healErr != nil {
		deadline = time.Now().Add(10 * time.Second)
	}
	for _, chk := range []struct {
		what string
		f    func() error
	}{
		{"members after the heal", func() error { return everyoneSees(c, all) }},
		{"one Raft group after the heal", func() error { _, _, err := oneGroup(c); return err }},
		{"acknowledged writes", w.checkWrites},
		{"counter", w.checkCounter},
		{"runs", w.checkRuns},
	} {
		if err := eventually(max(time.Until(deadline), time.Second), chk.f); err != nil {
			t.Errorf("%s: %v", chk.what, err)
		}
	}
	var boots []string
	for _, n := range c.Nodes {
		if n.logHas("bootstrapped the cluster's Raft group") {
			boots = append(boots, n.Name)
		}
	}
	if len(boots) > 1 {
		t.Errorf("the cluster's Raft group was bootstrapped by %v: a group must be created once", boots)
	}
}

// partners pairs every node with one on another side, so that each
// Idempotency-Key is sent to both sides of the cut.
func partners(p cutPlan) map[string]string {
	out := map[string]string{}
	for i, s := range p.sides {
		other := p.sides[(i+1)%len(p.sides)].nodes
		for _, c := range p.cuts {
			if c[0] == i {
				other = p.sides[c[1]].nodes
			} else if c[1] == i {
				other = p.sides[c[0]].nodes
			}
		}
		for j, n := range s.nodes {
			out[n] = other[j%len(other)]
		}
	}
	return out
}

// waitMajoritySeesFailed waits until every node of the majority side sees
// every node it is cut from as failed (with no majority side named: every
// cut side) and returns how long that took, and whether it happened
// within d.
func waitMajoritySeesFailed(c *Cluster, p cutPlan, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	err := eventually(d, func() error {
		for _, cut := range p.cuts {
			for _, pair := range [][2]int{{cut[0], cut[1]}, {cut[1], cut[0]}} {
				if p.majority >= 0 && pair[0] != p.majority {
					continue
				}
				for _, name := range p.sides[pair[0]].nodes {
					got, err := byName(c.Nodes, name).Members()
					if err != nil {
						return err
					}
					for _, other := range p.sides[pair[1]].nodes {
						if got[other] != "failed" {
							return fmt.Errorf("%s sees %s %q", name, other, got[other])
						}
					}
				}
			}
		}
		return nil
	})
	return time.Since(start), err == nil
}

// everyoneSees checks that every node sees each member with its status
// in want.
func everyoneSees(c *Cluster, want map[string]string) error {
	for _, n := range c.Nodes {
		got, err := n.Members()
		if err != nil {
			return err
		}
		for name, st := range want {
			if got[name] != st {
				return fmt.Errorf("%s sees %s as %q, want %q (all: %v)", n.Name, name, got[name], st, got)
			}
		}
	}
	return nil
}

// eventually polls f until it returns nil and returns the last error at the
// deadline (the caller decides whether that fails the test).
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statusGroup is a Raft group as /v1/status reports it, with its IDs.
type statusGroup struct {
	Cluster  string `json:"cluster"`
	ShardID  uint64 `json:"shard_id"`
	Leader   string `json:"leader"`
	Local    bool   `json:"local"`
	Replicas []struct {
		ID   uint64 `json:"id"`
		Node string `json:"node"`
	} `json:"replicas"`
}

// oneGroup checks that the default cluster has exactly one Raft group:
// every node that hosts a replica reports the same shard, voters and
// leader, the hosts are exactly those voters, there are 3 of them, and they
// all have a leader. It returns the leader and the voters.
func oneGroup(c *Cluster) (string, map[string]bool, error) {
	type view struct{ shard, voters, leader string }
	views := map[string]view{}
	var hosts []string
	for _, n := range c.Nodes {
		var st struct {
			Groups []statusGroup `json:"groups"`
		}
		if err := n.GetJSON("/v1/status", &st); err != nil {
			return "", nil, err
		}
		for _, g := range st.Groups {
			if g.Cluster != "default" {
				continue
			}
			var vs []string
			for _, r := range g.Replicas {
				vs = append(vs, fmt.Sprintf("%s#%d", r.Node, r.ID))
			}
			sort.Strings(vs)
			views[n.Name] = view{fmt.Sprint(g.ShardID), strings.Join(vs, ","), g.Leader}
			hosts = append(hosts, n.Name)
		}
	}
	if len(views) == 0 {
		return "", nil, errors.New("no node hosts a replica of the group")
	}
	var ref view
	for _, v := range views {
		ref = v
		break
	}
	for name, v := range views {
		if v != ref {
			return "", nil, fmt.Errorf("two views of the group: %s sees shard %s voters [%s] leader %q; "+
				"another sees shard %s voters [%s] leader %q (all: %v)", name, v.shard, v.voters, v.leader,
				ref.shard, ref.voters, ref.leader, views)
		}
	}
	voters := map[string]bool{}
	for _, r := range strings.Split(ref.voters, ",") {
		voters[strings.SplitN(r, "#", 2)[0]] = true
	}
	sort.Strings(hosts)
	if len(voters) != 3 || len(hosts) != 3 {
		return "", nil, fmt.Errorf("voters [%s], hosted by %v: want the 3 voters to host it, no one else", ref.voters, hosts)
	}
	for _, h := range hosts {
		if !voters[h] {
			return "", nil, fmt.Errorf("%s hosts a replica but is not among the voters [%s]", h, ref.voters)
		}
	}
	if ref.leader == "" || !voters[ref.leader] {
		return "", nil, fmt.Errorf("leader %q (voters [%s])", ref.leader, ref.voters)
	}
	return ref.leader, voters, nil
}

func waitOneGroup(t *testing.T, c *Cluster, d time.Duration) (string, map[string]bool) {
	t.Helper()
	var leader string
	var voters map[string]bool
	Eventually(t, d, func() error {
		var err error
		leader, voters, err = oneGroup(c)
		return err
	})
	return leader, voters
}

// Workload.

type outcome int

const (
	acked      outcome = iota
	refused            // the node answered with an error
	unanswered         // no answer (client timeout, connection error)
	conflict           // a CAS lost to another increment: definitely not applied
)

type opRecord struct {
	kind       string // "write", "cas", "run"
	node       string
	start, end time.Time
	out        outcome
	msg        string
}

type workload struct {
	t       *testing.T
	c       *Cluster
	client  *http.Client
	runsLog string

	mu     sync.Mutex
	ops    []opRecord
	writes []string // acknowledged unconditional writes (service names)
	// CAS increments by operation ID: acknowledged, answered with an error
	// or not at all (may or may not have applied), refused by CAS.
	incAcked, incUnknown, incConflict map[string]bool
	runIDs                            map[string]map[string]bool // Idempotency-Key → execution IDs accepted
	seq                               map[string]int
}

func newWorkload(t *testing.T, c *Cluster, runsLog string) *workload {
	return &workload{t: t, c: c, runsLog: runsLog,
		// Shorter than the harness's 15 s: a call the cut swallows counts
		// as unanswered instead of stalling its loop.
		client:   &http.Client{Timeout: 8 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}},
		incAcked: map[string]bool{}, incUnknown: map[string]bool{}, incConflict: map[string]bool{},
		runIDs: map[string]map[string]bool{}, seq: map[string]int{}}
}

const (
	counterName = "ctr"
	runService  = "once"
)

func (w *workload) setup() {
	putService(w.t, w.c.Nodes[0], map[string]any{"name": counterName, "type": "exec", "command": []string{"true"},
		"env": map[string]string{"N": "0"}})
	// Appends the input (one line) to a file every runner shares: how many
	// times each key really ran. No retries: a retry of a lost attempt may
	// legitimately run twice; only Idempotency-Key is under test here.
	putService(w.t, w.c.Nodes[0], map[string]any{"name": runService, "type": "exec", "timeout": "10s",
		"command": []string{"sh", "-c", `IFS= read -r x; printf '%s\n' "$x" >> "$1"`, "sh", w.runsLog}})
}

func (w *workload) next(prefix string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seq[prefix]++
	return fmt.Sprintf("%s-%d", prefix, w.seq[prefix])
}

// refusedWrite reports (nil) whether a write through one of nodes that
// started at or after since has been refused.
func (w *workload) refusedWrite(nodes []string, since time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.ops {
		if r.kind == "write" && r.out == refused && !r.start.Before(since) && slices.Contains(nodes, r.node) {
			return nil
		}
	}
	return fmt.Errorf("no write through them refused yet during the cut")
}

func (w *workload) record(r opRecord) {
	w.mu.Lock()
	w.ops = append(w.ops, r)
	w.mu.Unlock()
}

// call sends one request; status 0 means no answer. For an error answer
// msg is the API's error text and code.
func (w *workload) call(ctx context.Context, n *Node, method, path string, hdr map[string]string, body, out any) (int, string) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.HTTP+path, rd)
	if err != nil {
		return 0, err.Error()
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error, Code string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return resp.StatusCode, fmt.Sprintf("%d %s: %s", resp.StatusCode, e.Code, e.Error)
		}
		return resp.StatusCode, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, "decode: " + err.Error()
		}
	}
	return resp.StatusCode, ""
}

// get reads path from n for a check, bounded by the workload client's
// timeout (the harness's 15 s would let one node that never answers eat a
// check's whole deadline).
func (w *workload) get(n *Node, path string, out any) error {
	if st, msg := w.call(context.Background(), n, "GET", path, nil, nil, out); st != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s", path, n.Name, msg)
	}
	return nil
}

func classify(status int, msg string) outcome {
	switch {
	case status == 0:
		return unanswered
	case status >= 300:
		return refused
	case msg != "":
		return unanswered // answered 2xx but unreadable: treat as unknown
	}
	return acked
}

// pace calls f every d until ctx ends; a slow f just skips ticks.
func pace(ctx context.Context, d time.Duration, f func()) {
	tk := time.NewTicker(d)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			f()
		}
	}
}

// writer puts services with unique names through n.
func (w *workload) writer(ctx context.Context, n *Node) {
	pace(ctx, 100*time.Millisecond, func() {
		name := w.next("w-" + n.Name)
		start := time.Now()
		st, msg := w.call(ctx, n, "PUT", "/v1/services/"+name, nil, svcDef(name), nil)
		if ctx.Err() != nil && st == 0 {
			return // stopped, not refused
		}
		r := opRecord{kind: "write", node: n.Name, start: start, end: time.Now(), out: classify(st, msg), msg: msg}
		w.record(r)
		if r.out == acked {
			w.mu.Lock()
			w.writes = append(w.writes, name)
			w.mu.Unlock()
		}
	})
}

type counterView struct {
	Version uint64            `json:"version"`
	Env     map[string]string `json:"env"`
}

// count returns the counter's value and its history of increment IDs.
func (v counterView) count() (int, []string, error) {
	n, err := strconv.Atoi(v.Env["N"])
	if err != nil {
		return 0, nil, fmt.Errorf("counter N=%q: %v", v.Env["N"], err)
	}
	var hist []string
	for i := 0; ; i++ {
		h, ok := v.Env[fmt.Sprintf("H%d", i)]
		if !ok {
			break
		}
		hist = append(hist, strings.Fields(h)...)
	}
	return n, hist, nil
}

// incremented is the definition after one more increment op: N+1 and op
// appended to the history (split over variables of at most 8000 bytes).
func (v counterView) incremented(n int, hist []string, op string) map[string]any {
	env := map[string]string{"N": strconv.Itoa(n + 1)}
	chunk, i := "", 0
	for _, h := range append(hist, op) {
		if len(chunk)+len(h)+1 > 8000 {
			env[fmt.Sprintf("H%d", i)] = chunk
			chunk, i = "", i+1
		}
		chunk = strings.TrimPrefix(chunk+" "+h, " ")
	}
	env[fmt.Sprintf("H%d", i)] = chunk
	return map[string]any{"name": counterName, "type": "exec", "command": []string{"true"}, "env": env}
}

// incrementer reads the counter through n and writes it back +1 with
// ?cas=VERSION, recording its increment's ID in the counter's history, so
// that after the heal each increment whose answer was lost can be told
// applied or not.
func (w *workload) incrementer(ctx context.Context, n *Node) {
	pace(ctx, 100*time.Millisecond, func() {
		start := time.Now()
		var v counterView
		st, msg := w.call(ctx, n, "GET", "/v1/services/"+counterName, nil, nil, &v)
		if ctx.Err() != nil {
			return
		}
		if o := classify(st, msg); o != acked {
			w.record(opRecord{kind: "cas-read", node: n.Name, start: start, end: time.Now(), out: o, msg: msg})
			return
		}
		cnt, hist, err := v.count()
		if err != nil {
			w.record(opRecord{kind: "cas-read", node: n.Name, start: start, end: time.Now(), out: refused, msg: err.Error()})
			return
		}
		op := w.next("i-" + n.Name)
		st, msg = w.call(context.WithoutCancel(ctx), n, "PUT", fmt.Sprintf("/v1/services/%s?cas=%d", counterName, v.Version), nil,
			v.incremented(cnt, hist, op), nil)
		o := classify(st, msg)
		if st == http.StatusConflict {
			o = conflict
		}
		w.record(opRecord{kind: "cas", node: n.Name, start: start, end: time.Now(), out: o, msg: msg})
		w.mu.Lock()
		switch o {
		case acked:
			w.incAcked[op] = true
		case conflict:
			w.incConflict[op] = true
		default:
			w.incUnknown[op] = true
		}
		w.mu.Unlock()
	})
}

// runner starts async runs of the once service, each with a new
// Idempotency-Key sent to n and to partner (a node on another side of the
// cut) at the same time, and records every execution ID a node accepted.
func (w *workload) runner(ctx context.Context, n, partner *Node) {
	pace(ctx, 300*time.Millisecond, func() {
		key := w.next("k-" + n.Name)
		var wg sync.WaitGroup
		for _, target := range []*Node{n, partner} {
			wg.Add(1)
			go func(target *Node) {
				defer wg.Done()
				start := time.Now()
				var r runResult
				// Not cancelled by the stop: an accepted run must be seen.
				st, msg := w.call(context.WithoutCancel(ctx), target, "POST", "/v1/services/"+runService+"/run?async=true",
					map[string]string{"Idempotency-Key": key}, map[string]string{"k": key}, &r)
				o := classify(st, msg)
				if o == acked && r.ID == "" {
					o, msg = unanswered, "accepted without execution_id"
				}
				w.record(opRecord{kind: "run", node: target.Name, start: start, end: time.Now(), out: o, msg: msg})
				if o == acked {
					w.mu.Lock()
					if w.runIDs[key] == nil {
						w.runIDs[key] = map[string]bool{}
					}
					w.runIDs[key][r.ID] = true
					w.mu.Unlock()
				}
			}(target)
		}
		wg.Wait()
	})
}

// everyNodeAcked reports whether each node acknowledged a write it was sent
// at or after since.
func (w *workload) everyNodeAcked(since time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ok := map[string]bool{}
	for _, r := range w.ops {
		if r.kind == "write" && r.out == acked && !r.start.Before(since) {
			ok[r.node] = true
		}
	}
	var missing []string
	for _, n := range w.c.Nodes {
		if !ok[n.Name] {
			missing = append(missing, n.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no write acknowledged through %v since %s", missing, since.Format("15:04:05.000"))
	}
	return nil
}

// report logs, per side, how long writes went unacknowledged after the
// cut, and what the nodes answered while it held.
func (w *workload) report(p cutPlan, cutAt, healAt time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range p.sides {
		in := map[string]bool{}
		for _, n := range s.nodes {
			in[n] = true
		}
		var ackEnds []time.Time
		counts := map[outcome]int{}
		msgs := map[string]int{}
		for _, r := range w.ops {
			if r.kind != "write" || !in[r.node] || r.start.Before(cutAt) || !r.start.Before(healAt) {
				continue
			}
			counts[r.out]++
			if r.out == acked {
				ackEnds = append(ackEnds, r.end)
			} else {
				msgs[shortMsg(r.msg)]++
			}
		}
		sort.Slice(ackEnds, func(i, j int) bool { return ackEnds[i].Before(ackEnds[j]) })
		first := fmt.Sprintf("none while cut (%s)", healAt.Sub(cutAt).Round(10*time.Millisecond))
		if len(ackEnds) > 0 {
			gap, prev := time.Duration(0), cutAt
			for _, e := range append(ackEnds, healAt) {
				gap, prev = max(gap, e.Sub(prev)), e
			}
			first = fmt.Sprintf("%s, longest gap %s", ackEnds[0].Sub(cutAt).Round(10*time.Millisecond),
				gap.Round(10*time.Millisecond))
		}
		w.t.Logf("%s %v: writes during the cut: %d acknowledged, %d refused, %d unanswered; first ack after the cut: %s",
			s.label, s.nodes, counts[acked], counts[refused], counts[unanswered], first)
		for m, k := range msgs {
			w.t.Logf("    %dx %s", k, m)
		}
	}
}

func shortMsg(m string) string {
	if len(m) > 160 {
		return m[:160] + "..."
	}
	return m
}

// checkMinority: the side without quorum refused writes (it must not have
// accepted them all and lost them), and once its stale leader had stepped
// down (1 s: 5 election timeouts) every refusal said "no quorum".
func (w *workload) checkMinority(p cutPlan, cutAt, healAt time.Time) {
	if p.minority < 0 {
		return
	}
	s := p.sides[p.minority]
	in := map[string]bool{}
	for _, n := range s.nodes {
		in[n] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	refusedN, noQuorum := 0, 0
	other := map[string]int{}
	for _, r := range w.ops {
		if r.kind != "write" || !in[r.node] || r.out != refused || r.start.Before(cutAt) || !r.start.Before(healAt) {
			continue
		}
		refusedN++
		if strings.Contains(strings.ToLower(r.msg), "no quorum") {
			noQuorum++
		} else if r.start.After(cutAt.Add(time.Second)) {
			other[shortMsg(r.msg)]++
		}
	}
	if refusedN == 0 {
		w.t.Errorf("%s %v refused no write during the cut", s.label, s.nodes)
	}
	if noQuorum == 0 || len(other) > 0 {
		w.t.Errorf("%s %v: %d refusals said \"no quorum\"; want every refusal to, others: %v", s.label, s.nodes, noQuorum, other)
	}
}

// checkWrites: every acknowledged write is in every node's list.
func (w *workload) checkWrites() error {
	w.mu.Lock()
	want := append([]string(nil), w.writes...)
	w.mu.Unlock()
	for _, n := range w.c.Nodes {
		var list []struct {
			Name string `json:"name"`
		}
		if err := w.get(n, "/v1/services", &list); err != nil {
			return err
		}
		have := map[string]bool{}
		for _, s := range list {
			have[s.Name] = true
		}
		var lost []string
		for _, name := range want {
			if !have[name] {
				lost = append(lost, name)
			}
		}
		if len(lost) > 0 {
			return fmt.Errorf("%s lacks %d of %d acknowledged writes, e.g. %v", n.Name, len(lost), len(want), lost[:min(5, len(lost))])
		}
	}
	w.t.Logf("writes: all %d acknowledged writes readable on every node", len(want))
	return nil
}

// checkCounter: every node reads the same counter; its value is the length
// of its history; no increment appears twice; every acknowledged increment
// is in it and no increment refused by CAS is. The counter then equals the
// acknowledged increments plus those whose answer was lost but applied.
func (w *workload) checkCounter() error {
	var ref counterView
	for i, n := range w.c.Nodes {
		var v counterView
		if err := w.get(n, "/v1/services/"+counterName, &v); err != nil {
			return err
		}
		if i > 0 && (v.Version != ref.Version || v.Env["N"] != ref.Env["N"]) {
			return fmt.Errorf("%s reads counter %s at version %d, %s reads %s at %d",
				n.Name, v.Env["N"], v.Version, w.c.Nodes[0].Name, ref.Env["N"], ref.Version)
		}
		ref = v
	}
	cnt, hist, err := ref.count()
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	var problems []string
	appliedUnknown := 0
	for _, op := range hist {
		if seen[op] {
			problems = append(problems, "increment "+op+" applied twice")
		}
		seen[op] = true
		switch {
		case w.incAcked[op]:
		case w.incUnknown[op]:
			appliedUnknown++
		case w.incConflict[op]:
			problems = append(problems, "increment "+op+" was refused by CAS (409) yet applied")
		default:
			problems = append(problems, "increment "+op+" was never sent")
		}
	}
	for op := range w.incAcked {
		if !seen[op] {
			problems = append(problems, "acknowledged increment "+op+" lost")
		}
	}
	if cnt != len(hist) {
		problems = append(problems, fmt.Sprintf("counter %d but %d increments in its history", cnt, len(hist)))
	}
	if cnt != len(w.incAcked)+appliedUnknown {
		problems = append(problems, fmt.Sprintf("counter %d, acknowledged increments %d (+%d applied without an answer)",
			cnt, len(w.incAcked), appliedUnknown))
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d problems: %v", len(problems), problems[:min(10, len(problems))])
	}
	w.t.Logf("counter: %d = %d acknowledged increments + %d applied whose answer was an error or none "+
		"(%d such not applied, %d CAS conflicts)", cnt, len(w.incAcked), appliedUnknown,
		len(w.incUnknown)-appliedUnknown, len(w.incConflict))
	return nil
}

// checkRuns: a key the clients saw accepted maps to one execution ID, the
// same on every node; no key has two executions; every accepted execution
// is terminal; no key ran twice, and a succeeded one ran exactly once.
func (w *workload) checkRuns() error {
	w.mu.Lock()
	accepted := map[string]string{}
	var problems []string
	for key, ids := range w.runIDs {
		if len(ids) > 1 {
			problems = append(problems, fmt.Sprintf("key %s accepted as %d executions %v", key, len(ids), keys(ids)))
		}
		for id := range ids {
			accepted[key] = id
		}
	}
	w.mu.Unlock()
	ran, err := w.runCounts()
	if err != nil {
		return err
	}
	statuses := map[string]int{}
	for i, n := range w.c.Nodes {
		var list []struct {
			ID     string `json:"execution_id"`
			Status string `json:"status"`
			Key    string `json:"idempotency_key"`
		}
		if err := w.get(n, "/v1/executions?service="+runService+"&limit=1000", &list); err != nil {
			return err
		}
		if len(list) >= 1000 {
			return fmt.Errorf("%s lists %d executions: the check needs fewer than the API's limit", n.Name, len(list))
		}
		byKey := map[string][]string{}
		status := map[string]string{}
		for _, e := range list {
			byKey[e.Key] = append(byKey[e.Key], e.ID)
			status[e.ID] = e.Status
		}
		for key, ids := range byKey {
			if len(ids) > 1 {
				problems = append(problems, fmt.Sprintf("%s: key %s has %d executions %v", n.Name, key, len(ids), ids))
			}
		}
		for key, id := range accepted {
			ids := byKey[key]
			switch {
			case len(ids) == 0:
				problems = append(problems, fmt.Sprintf("%s: accepted execution %s (key %s) has no record", n.Name, id, key))
			case ids[0] != id:
				problems = append(problems, fmt.Sprintf("%s: key %s maps to %v, clients were given %s", n.Name, key, ids, id))
			case !terminal(status[id]):
				return fmt.Errorf("%s: accepted execution %s (key %s) is %s", n.Name, id, key, status[id])
			}
			if i == 0 {
				statuses[status[id]]++
			}
			if i == 0 && status[id] == "succeeded" && ran[key] != 1 {
				problems = append(problems, fmt.Sprintf("key %s succeeded but ran %d times", key, ran[key]))
			}
		}
	}
	for key, k := range ran {
		if k > 1 {
			problems = append(problems, fmt.Sprintf("key %s ran %d times", key, k))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d problems: %v", len(problems), problems[:min(10, len(problems))])
	}
	w.t.Logf("runs: %d keys accepted, each one execution on every node, none ran twice; final status %v", len(accepted), statuses)
	return nil
}

// runCounts reads how many times each key ran from the shared runs log.
func (w *workload) runCounts() (map[string]int, error) {
	f, err := os.Open(w.runsLog)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}, nil
	} else if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var in struct{ K string }
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			return nil, fmt.Errorf("runs log line %q: %v", sc.Text(), err)
		}
		out[in.K]++
	}
	return out, sc.Err()
}

func terminal(s string) bool {
	switch s {
	case "succeeded", "failed", "timed_out", "lost", "cancelled":
		return true
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The counter's history survives its own encoding: split over variables
// under the 8192-byte value limit, read back in order, and partners pair
// every node across each cut. No agents.
func TestPartitionWorkloadBookkeeping(t *testing.T) {
	v := counterView{Env: map[string]string{"N": "0"}}
	var want []string
	for i := 0; i < 1200; i++ {
		n, hist, err := v.count()
		if err != nil || n != i || len(hist) != i {
			t.Fatalf("step %d: n %d, %d ops, %v", i, n, len(hist), err)
		}
		op := fmt.Sprintf("i-n%d-%d", i%5+1, i)
		want = append(want, op)
		def := v.incremented(n, hist, op)
		v.Env = def["env"].(map[string]string)
		for k, s := range v.Env {
			if len(s) > 8000 {
				t.Fatalf("step %d: %s is %d bytes", i, k, len(s))
			}
		}
	}
	_, hist, _ := v.count()
	if strings.Join(hist, " ") != strings.Join(want, " ") || len(v.Env) < 3 {
		t.Fatalf("history read back differs (or was not split: %d variables)", len(v.Env))
	}
	for _, sc := range partScenarios {
		p := sc.plan("n1", []string{"n2", "n3"}, []string{"n4", "n5"})
		side := map[string]int{}
		for i, s := range p.sides {
			for _, n := range s.nodes {
				side[n] = i
			}
		}
		if len(side) != 5 {
			t.Fatalf("%s: sides %v do not hold the 5 nodes once each", sc.name, p.sides)
		}
		for n, m := range partners(p) {
			if side[n] == side[m] {
				t.Errorf("%s: %s's runs go to %s, on its own side", sc.name, n, m)
			}
		}
	}
}
