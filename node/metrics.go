package node

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Metric labels are bounded: cluster and service names come from the
// replicated state (a service is labelled only once it was found there),
// routes are ServeMux patterns, codes are classes ("2xx"). Execution IDs,
// paths and tokens never become labels.

// durationBuckets suit runs and proxied requests alike: 5 ms to 5 min.
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// metrics are the agent's own instruments, registered on its registry.
type metrics struct {
	execStarted  *prometheus.CounterVec
	execInFlight *prometheus.GaugeVec
	execFinished *prometheus.CounterVec
	execDuration *prometheus.HistogramVec
	execRefused  *prometheus.CounterVec

	proxyRequests *prometheus.CounterVec
	proxyDuration *prometheus.HistogramVec
	proxyUpstream *prometheus.CounterVec

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	gossipEvents *prometheus.CounterVec
	gossipFlaps  prometheus.Counter

	// The label children a request updates, resolved once per label set:
	// With(...) hashes the labels and takes the vector's lock per call.
	proxyKids kidCache[proxyLabels]
	httpKids  kidCache[httpLabels]
}

// maxKids bounds each cache of resolved children; past it, requests
// resolve their labels each time (the labels are bounded anyway, see above).
const maxKids = 4096

type proxyLabels struct {
	cluster, service, code string
}

type httpLabels struct{ route, code string }

// kids are the children of one label set: its request counter and its
// duration histogram.
type kids struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// kidCache keeps resolved children by label set, at most maxKids.
type kidCache[L comparable] struct {
	mu sync.RWMutex
	m  map[L]kids
}

func (c *kidCache[L]) lookup(l L) (kids, bool) {
	c.mu.RLock()
	k, ok := c.m[l]
	c.mu.RUnlock()
	return k, ok
}

func (c *kidCache[L]) keep(l L, k kids) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[L]kids{}
	}
	if len(c.m) < maxKids {
		c.m[l] = k
	}
	c.mu.Unlock()
}

func (m *metrics) proxyChildren(cluster, service, code string) kids {
	l := proxyLabels{cluster, service, code}
	if k, ok := m.proxyKids.lookup(l); ok {
		return k
	}
	k := kids{m.proxyRequests.WithLabelValues(cluster, service, code),
		m.proxyDuration.WithLabelValues(cluster, service)}
	m.proxyKids.keep(l, k)
	return k
}

func (m *metrics) httpChildren(route, code string) kids {
	l := httpLabels{route, code}
	if k, ok := m.httpKids.lookup(l); ok {
		return k
	}
	k := kids{m.httpRequests.WithLabelValues(route, code), m.httpDuration.WithLabelValues(route)}
	m.httpKids.keep(l, k)
	return k
}

func newMetrics() *metrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshgw", Name: name, Help: help}, labels)
	}
	hv := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "meshgw", Name: name, Help: help,
			Buckets: durationBuckets}, labels)
	}
	return &metrics{
		execStarted: cv("executions_started_total", "Executions accepted by this node.", "cluster", "service"),
		execInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "meshgw", Name: "executions_in_flight",
			Help: "Executions this node drives now (accepted here or taken over by recovery)."},
			[]string{"cluster", "service"}),
		execFinished: cv("executions_finished_total",
			"Executions whose terminal record this node wrote, by status.", "cluster", "service", "status"),
		execDuration: hv("execution_duration_seconds",
			"Time from an execution's acceptance to its terminal record.", "cluster", "service"),
		execRefused: cv("executions_refused_total",
			"Runs refused with 429 because every runner (or this node's async queue) was busy.", "cluster", "service"),
		proxyRequests: cv("proxy_requests_total", "Requests to /svc/ services, by answer status class.",
			"cluster", "service", "code"),
		proxyDuration: hv("proxy_request_duration_seconds", "Time to answer a /svc/ request.", "cluster", "service"),
		proxyUpstream: cv("proxy_upstream_errors_total",
			"/svc/ requests that got no upstream answer: no runner, runner unreachable or busy, upstream "+
				"unreachable or timed out (502, 504), or the answer cut off.", "cluster", "service", "reason"),
		httpRequests: cv("http_requests_total", "HTTP API requests, by route pattern and status class.",
			"route", "code"),
		httpDuration: hv("http_request_duration_seconds", "Time to answer an HTTP API request, by route pattern.",
			"route"),
		gossipEvents: cv("gossip_member_events_total", "Membership events delivered by gossip, by type.", "type"),
		gossipFlaps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "meshgw", Name: "gossip_member_flaps_total",
			Help: "Members seen failed that came back alive without leaving."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.execStarted, m.execInFlight, m.execFinished, m.execDuration, m.execRefused,
		m.proxyRequests, m.proxyDuration, m.proxyUpstream, m.httpRequests, m.httpDuration, m.gossipEvents,
		m.gossipFlaps}
}

// codeClass is "2xx" for 200..299; "aborted" for 0 (the connection was cut
// before a status was sent).
func codeClass(code int) string {
	if code < 100 || code > 599 {
		return "aborted"
	}
	return codeClasses[code/100-1]
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

var _ dispatch.Observer = (*metrics)(nil)

func (m *metrics) ExecStarted(cluster, service string) {
	m.execStarted.WithLabelValues(cluster, service).Inc()
}

func (m *metrics) ExecDriving(cluster, service string, delta int) {
	m.execInFlight.WithLabelValues(cluster, service).Add(float64(delta))
}

func (m *metrics) ExecFinished(cluster, service string, status dispatch.Status, took time.Duration) {
	m.execFinished.WithLabelValues(cluster, service, string(status)).Inc()
	m.execDuration.WithLabelValues(cluster, service).Observe(took.Seconds())
}

// observeRequest is the API's httpapi.RequestObserver.
func (m *metrics) observeRequest(route string, code int, took time.Duration) {
	k := m.httpChildren(route, codeClass(code))
	k.requests.Inc()
	k.duration.Observe(took.Seconds())
}

// observeProxy records one /svc/ request of a known service: code is what
// the client got (the handler's written status, or err's once mapped).
func (m *metrics) observeProxy(cluster, service string, code int, took time.Duration, err error) {
	reason := ""
	switch {
	case err != nil:
		code, reason = proxyFailure(code, err)
	case code == http.StatusBadGateway:
		reason = "upstream_unreachable"
	case code == http.StatusGatewayTimeout:
		reason = "upstream_timeout"
	}
	if code == 0 && err == nil {
		code = http.StatusOK
	}
	k := m.proxyChildren(cluster, service, codeClass(code))
	k.requests.Inc()
	k.duration.Observe(took.Seconds())
	if reason != "" {
		m.proxyUpstream.WithLabelValues(cluster, service, reason).Inc()
	}
}

// proxyFailure is observeProxy's status and reason for an error: apart,
// so that an answer without one does not put an *httpapi.Error target on
// the heap.
func proxyFailure(code int, err error) (int, string) {
	var he *httpapi.Error
	switch {
	case errors.Is(err, dispatch.ErrProxyAborted):
		return code, "aborted"
	case errors.As(err, &he):
		if code == 0 {
			code = he.Status
		}
		if he.Status >= 500 || he.Status == http.StatusTooManyRequests {
			return code, he.Code // no_runner, runner_unreachable, busy, ...
		}
		return code, ""
	}
	return http.StatusInternalServerError, "internal"
}

// flapTracker counts members that came back alive after gossip declared
// them failed. It is fed by the agent's one event loop.
type flapTracker struct {
	m      *metrics
	failed map[string]bool // bounded by the members gossip knows
}

func (f *flapTracker) event(ev gossip.Event) {
	f.m.gossipEvents.WithLabelValues(string(ev.Type)).Inc()
	for _, mb := range ev.Members {
		switch ev.Type {
		case gossip.EventFailed:
			f.failed[mb.Name] = true
		case gossip.EventJoin, gossip.EventUpdate:
			if f.failed[mb.Name] && mb.Status == gossip.StatusAlive {
				f.m.gossipFlaps.Inc()
				delete(f.failed, mb.Name)
			}
		case gossip.EventLeave, gossip.EventReap:
			delete(f.failed, mb.Name)
		}
	}
}

// raftCollector reads the Raft groups' state at scrape time.
type raftCollector struct {
	cons   *consensus.Manager
	gossip *gossip.Gossip
	local  string
	// timeout bounds one scrape's status read.
	timeout time.Duration

	leaderPresent, isLeader, term, applied, voters, votersAlive *prometheus.Desc
	proposals, proposalFailures, autopilot, dropped             *prometheus.Desc
}

func newRaftCollector(cons *consensus.Manager, g *gossip.Gossip, local string) *raftCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("meshgw_"+name, help, labels, nil)
	}
	return &raftCollector{cons: cons, gossip: g, local: local, timeout: 2 * time.Second,
		leaderPresent: d("raft_leader_present", "1 when this node's replica knows a leader of the group.", "cluster"),
		isLeader:      d("raft_is_leader", "1 when this node leads the group.", "cluster"),
		term:          d("raft_term", "The group's Raft term as this replica sees it.", "cluster"),
		applied:       d("raft_applied_index", "The last log index this replica applied.", "cluster"),
		voters:        d("raft_voters", "Voters in the group's membership.", "cluster"),
		votersAlive: d("raft_voters_alive",
			"Voters whose node gossip sees alive; below a majority of raft_voters the group has no quorum.", "cluster"),
		proposals: d("raft_proposals_total", "Entries this node proposed to the group, re-proposals included.",
			"cluster"),
		proposalFailures: d("raft_proposal_failures_total",
			"Proposals not committed (timeout, no leader, busy).", "cluster"),
		autopilot: d("autopilot_actions_total", "Membership changes autopilot tried, by action and result.",
			"cluster", "action", "result"),
		dropped: d("gossip_events_dropped_total", "Membership events dropped because the agent fell behind."),
	}
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.leaderPresent, c.isLeader, c.term, c.applied, c.voters, c.votersAlive,
		c.proposals, c.proposalFailures, c.autopilot, c.dropped} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	alive := map[string]bool{}
	for _, m := range c.gossip.Members(gossip.Filter{Status: gossip.StatusAlive}) {
		alive[m.Name] = true
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, g := range c.cons.Status(ctx) {
		n := 0
		for _, r := range g.Replicas {
			if alive[r.Node] {
				n++
			}
		}
		gauge(c.leaderPresent, b2f(g.LeaderReplicaID != 0), g.Cluster)
		gauge(c.isLeader, b2f(g.LeaderReplicaID != 0 && g.Leader == c.local), g.Cluster)
		gauge(c.term, float64(g.Term), g.Cluster)
		gauge(c.applied, float64(g.AppliedIndex), g.Cluster)
		gauge(c.voters, float64(len(g.Replicas)), g.Cluster)
		gauge(c.votersAlive, float64(n), g.Cluster)
	}
	cnt := c.cons.Counters()
	for cl, n := range cnt.Proposals {
		ch <- prometheus.MustNewConstMetric(c.proposals, prometheus.CounterValue, float64(n), cl)
		ch <- prometheus.MustNewConstMetric(c.proposalFailures, prometheus.CounterValue,
			float64(cnt.ProposalFailures[cl]), cl)
	}
	for _, a := range cnt.Autopilot {
		result := "failed"
		if a.OK {
			result = "ok"
		}
		ch <- prometheus.MustNewConstMetric(c.autopilot, prometheus.CounterValue, float64(a.N), a.Cluster, a.Action, result)
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(c.gossip.Dropped()))
}
