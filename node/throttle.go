package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/roles"
	"github.com/meshgw/meshgw/throttle"
	"github.com/meshgw/meshgw/transport"
)

// throttler wires package throttle into the agent: the manager runs as
// the throttle-manager role, the limiter checks every run and /svc/
// request of a service with limits or max_in_flight before anything runs
// or is proxied (httpapi.Throttler).
//
// RPC methods (node/doc.go's table): throttle.ask and throttle.usage may be
// called by nodes of this node's own cluster only; the manager also checks
// that an ask names its caller.
type throttler struct {
	a   *Agent
	mgr *throttle.Manager
	lim *throttle.Limiter

	admitted, refused *prometheus.CounterVec

	mu      sync.Mutex
	manager string // name of the node believed active, "" unknown
	at      time.Time

	// left: members of this cluster gossip shows left, as of leftAt
	// (the manager asks for each roster node at every sweep).
	lmu    sync.Mutex
	left   map[string]bool
	leftAt time.Time

	// prepared: per service, its limits as the throttle takes them and
	// their counters, for the definition's version (the hot path).
	pmu      sync.RWMutex
	prepared map[string]*preparedSvc
}

type preparedSvc struct {
	version           uint64
	specs             []throttle.Spec
	admitted, refused []prometheus.Counter // per limit, then max_in_flight
}

// throttleLocate is how long a located manager is trusted before it is
// looked up again (a failed call looks it up at once).
const throttleLocate = 2 * time.Second

func (a *Agent) newThrottler() *throttler {
	t := &throttler{a: a, prepared: map[string]*preparedSvc{},
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshgw_throttle_admitted_total",
			Help: "Requests a service's limit (index, or max_in_flight) let through on this node."}, []string{"cluster", "service", "limit"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshgw_throttle_refused_total",
			Help: "Requests refused with 429 on this node, by the service's limit that refused them."}, []string{"cluster", "service", "limit"}),
	}
	t.mgr = throttle.NewManager(throttle.ManagerConfig{Node: a.cfg.NodeName, Lease: a.cfg.ThrottleLease,
		Departed: t.departed}, a.log)
	// The record of fallback spent survives a restart (throttle's doc, "Restarts").
	spend := ""
	if a.cfg.DataDir != "" {
		spend = filepath.Join(a.cfg.DataDir, throttle.SpendFileName)
	}
	t.lim = throttle.NewLimiter(throttle.LimiterConfig{Node: a.cfg.NodeName, Call: t.call,
		Lease: a.cfg.ThrottleLease, SpendFile: spend}, a.log)
	cl := prometheus.Labels{"cluster": a.cfg.Cluster}
	shares := func(state string) prometheus.GaugeOpts {
		return prometheus.GaugeOpts{Name: "meshgw_throttle_shares",
			ConstLabels: prometheus.Labels{"cluster": a.cfg.Cluster, "state": state},
			Help: "On the active throttle manager: roster nodes whose fallback share is reserved " +
				"(their lease may run) or reclaimed (lease over, or left)."}
	}
	a.reg.MustRegister(t.admitted, t.refused,
		prometheus.NewGaugeFunc(shares(throttle.ShareReserved), func() float64 {
			r, _, _ := t.mgr.ShareCounts()
			return float64(r)
		}),
		prometheus.NewGaugeFunc(shares(throttle.ShareReclaimed), func() float64 {
			_, r, _ := t.mgr.ShareCounts()
			return float64(r)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshgw_throttle_lease_seconds", ConstLabels: cl,
			Help: "How long this node may still spend fallback shares without reaching the throttle " +
				"manager (0: it fails closed until it does)."}, func() float64 {
			return t.lim.Status().LeaseLeft.Seconds()
		}))
	a.rpc.Handle(throttle.Method, func(ctx context.Context, req *transport.Request) ([]byte, error) {
		if err := t.sameCluster(req.Peer, throttle.Method); err != nil {
			return nil, err
		}
		b, err := t.mgr.Handle(ctx, req.Peer, req.Body)
		if errors.Is(err, throttle.ErrNotManager) {
			return nil, transport.Errorf("not_manager", "%v", err)
		}
		return b, err
	})
	a.rpc.Handle(throttle.UsageMethod, func(ctx context.Context, req *transport.Request) ([]byte, error) {
		if err := t.sameCluster(req.Peer, throttle.UsageMethod); err != nil {
			return nil, err
		}
		var q struct{ Service string }
		if len(req.Body) > 4096 || json.Unmarshal(req.Body, &q) != nil {
			return nil, transport.Errorf("bad_request", "throttle.usage: malformed request")
		}
		rep, err := t.mgr.Usage(q.Service)
		if err != nil {
			return nil, transport.Errorf("not_manager", "%v", err)
		}
		return json.Marshal(rep)
	})
	return t
}

// role is the throttle-manager role.
func (t *throttler) role() roles.Role {
	return roles.Role{Name: roles.ThrottleManager, Run: func(ctx context.Context, f *roles.Fence) error {
		return t.mgr.Activate(ctx, f.Term, f.Since, throttleStore{kv: t.a.cons, f: f, cluster: f.Cluster})
	}}
}

// start runs the limiter's loop until the agent stops.
func (a *Agent) startThrottle() {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.thr.lim.Run(a.stopCtx)
	}()
}

// departedEvery is how long departed's view of the members is reused.
const departedEvery = 200 * time.Millisecond

// departed implements throttle.ManagerConfig.Departed: gossip shows node,
// a member of this cluster, left (a graceful leave: it stopped serving
// first). A failed member is not departed: it may be cut off and alive,
// and its lease says when its share comes back; serf reaps it, or a left
// one, only long after.
func (t *throttler) departed(node string) bool {
	t.lmu.Lock()
	defer t.lmu.Unlock()
	if time.Since(t.leftAt) > departedEvery {
		t.left = map[string]bool{}
		for _, m := range t.a.gossip.Members(gossip.Filter{Cluster: t.a.cfg.Cluster, Status: gossip.StatusLeft}) {
			t.left[m.Name] = true
		}
		t.leftAt = time.Now()
	}
	return t.left[node]
}

func (t *throttler) sameCluster(peer, method string) error {
	for _, m := range t.a.gossip.Members(gossip.Filter{Cluster: t.a.cfg.Cluster}) {
		if m.Name == peer {
			return nil
		}
	}
	return transport.Errorf("forbidden", "%s: caller %q is not a node of cluster %s", method, peer, t.a.cfg.Cluster)
}

// locate names the node believed to run the active manager: the group's
// leader as this node sees it, else the role's fence record.
func (t *throttler) locate(ctx context.Context) (string, error) {
	t.mu.Lock()
	if t.manager != "" && time.Since(t.at) < throttleLocate {
		defer t.mu.Unlock()
		return t.manager, nil
	}
	t.mu.Unlock()
	name := ""
	for _, g := range t.a.cons.Status(ctx) {
		if g.Cluster == t.a.cfg.Cluster && g.Local && g.Leader != "" {
			name = g.Leader
		}
	}
	if name == "" {
		it, ok, err := t.a.cons.Get(ctx, t.a.cfg.Cluster, roles.FenceKey(roles.ThrottleManager))
		if err != nil {
			return "", err
		}
		if !ok {
			return "", errors.New("no throttle manager has been active yet")
		}
		rec, err := roles.DecodeRecord(it.Value)
		if err != nil {
			return "", err
		}
		name = rec.Node
	}
	t.mu.Lock()
	t.manager, t.at = name, time.Now()
	t.mu.Unlock()
	return name, nil
}

func (t *throttler) forget() {
	t.mu.Lock()
	t.manager = ""
	t.mu.Unlock()
}

// callManager sends method to the active manager, in process when it is
// this node.
func (t *throttler) callManager(ctx context.Context, method string, body []byte) ([]byte, error) {
	name, err := t.locate(ctx)
	if err != nil {
		return nil, err
	}
	var out []byte
	if name == t.a.cfg.NodeName {
		switch method {
		case throttle.Method:
			out, err = t.mgr.Handle(ctx, name, body)
		default:
			var q struct{ Service string }
			_ = json.Unmarshal(body, &q)
			var rep throttle.UsageReport
			if rep, err = t.mgr.Usage(q.Service); err == nil {
				out, err = json.Marshal(rep)
			}
		}
	} else {
		addr := ""
		for _, m := range t.a.gossip.Members(gossip.Filter{Cluster: t.a.cfg.Cluster}) {
			if m.Name == name && (m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect) {
				addr = m.RPCAddr
			}
		}
		if addr == "" {
			err = fmt.Errorf("throttle manager %s is not a live member", name)
		} else {
			out, err = t.a.rpc.Call(ctx, addr, method, body)
		}
	}
	if err != nil {
		t.forget()
	}
	return out, err
}

func (t *throttler) call(ctx context.Context, body []byte) ([]byte, error) {
	return t.callManager(ctx, throttle.Method, body)
}

// prepare returns svc's limits and counters, computed once per version.
func (t *throttler) prepare(cluster string, svc dispatch.Service) *preparedSvc {
	t.pmu.RLock()
	p := t.prepared[svc.Name]
	t.pmu.RUnlock()
	if p != nil && p.version == svc.Version && len(p.specs) == len(svc.Limits) {
		return p
	}
	p = &preparedSvc{version: svc.Version, specs: specs(svc)}
	for i := range p.specs {
		p.specs[i] = p.specs[i].Prepare()
		p.admitted = append(p.admitted, t.admitted.WithLabelValues(cluster, svc.Name, strconv.Itoa(i)))
		p.refused = append(p.refused, t.refused.WithLabelValues(cluster, svc.Name, strconv.Itoa(i)))
	}
	p.admitted = append(p.admitted, t.admitted.WithLabelValues(cluster, svc.Name, "max_in_flight"))
	p.refused = append(p.refused, t.refused.WithLabelValues(cluster, svc.Name, "max_in_flight"))
	t.pmu.Lock()
	if len(t.prepared) > 4096 {
		clear(t.prepared)
	}
	t.prepared[svc.Name] = p
	t.pmu.Unlock()
	return p
}

// specs turns a service's limits into the throttle's.
func specs(svc dispatch.Service) []throttle.Spec {
	out := make([]throttle.Spec, len(svc.Limits))
	for i, l := range svc.Limits {
		by := l.By
		if by == "" {
			by = throttle.ByService
		}
		out[i] = throttle.Spec{Service: svc.Name, Index: i, Rate: l.Rate, Per: throttle.Pers[l.Per], By: by,
			Burst: l.Burst, Share: svc.OnManagerLoss != dispatch.OnManagerLossDeny}
	}
	return out
}

// Admit implements httpapi.Throttler.
func (t *throttler) Admit(ctx context.Context, w http.ResponseWriter, r httpapi.Request, tok *httpapi.Token, cluster, service string) (func(), error) {
	if dispatch.ValidateName(service) != nil {
		return func() {}, nil
	}
	svc, ok, err := t.a.execB.cachedService(ctx, cluster, service)
	if err != nil || !ok || !svc.Throttled() {
		return func() {}, nil // the handler answers for a missing service or a failed read
	}
	if cluster != t.a.cfg.Cluster {
		return nil, httpapi.Errorf(http.StatusForbidden, "cluster_local",
			"service %s of cluster %s has limits, which that cluster's nodes enforce: send its requests to a node of %s",
			service, cluster, cluster)
	}
	p := t.prepare(cluster, svc)
	req := throttle.Request{Service: service, Limits: p.specs, MaxInFlight: svc.MaxInFlight}
	req.Keys = make([]string, len(req.Limits))
	for i, s := range req.Limits {
		switch s.By {
		case throttle.ByToken:
			if tok != nil {
				req.Keys[i] = tok.AccessorID
			}
		case throttle.ByIP:
			remote := r.RemoteAddr()
			if host, _, err := net.SplitHostPort(remote); err == nil {
				req.Keys[i] = host
			} else {
				req.Keys[i] = remote
			}
		}
	}
	d := t.lim.Admit(ctx, req)
	if d.OK {
		for i := range req.Limits {
			p.admitted[i].Inc()
		}
		if req.MaxInFlight > 0 {
			p.admitted[len(p.specs)].Inc()
		}
		return d.Release, nil
	}
	secs := max(1, int((d.Reset+time.Second-1)/time.Second))
	h := w.Header()
	if d.InFlight {
		p.refused[len(p.specs)].Inc()
		h.Set("RateLimit-Limit", strconv.Itoa(svc.MaxInFlight))
		h.Set("RateLimit-Remaining", "0")
		h.Set("RateLimit-Reset", "1")
		return nil, httpapi.Errorf(http.StatusTooManyRequests, "too_many_in_flight",
			"service %s has %d requests in flight across the cluster (max_in_flight); retry later", service, svc.MaxInFlight).WithRetryAfter(1)
	}
	p.refused[d.Limit.Index].Inc()
	l := svc.Limits[d.Limit.Index]
	h.Set("RateLimit-Limit", strconv.FormatInt(l.Rate+l.Burst, 10))
	h.Set("RateLimit-Remaining", strconv.FormatInt(d.Remaining, 10))
	h.Set("RateLimit-Reset", strconv.Itoa(secs))
	if d.NoManager {
		return nil, httpapi.Errorf(http.StatusTooManyRequests, "no_throttle_manager",
			"service %s: this node cannot reach the cluster's throttle manager (`meshgw roles`) and may not "+
				"spend more of limits[%d] (%d per %s) on its own; retry in %ds, or send the request to another node",
			service, d.Limit.Index, l.Rate, l.Per, secs).WithRetryAfter(secs)
	}
	return nil, httpapi.Errorf(http.StatusTooManyRequests, "rate_limited",
		"service %s: limits[%d] (%d per %s) is spent for this window; retry in %ds", service, d.Limit.Index, l.Rate, l.Per, secs).
		WithRetryAfter(secs)
}

// Throttles implements httpapi.Throttler: the active manager's usage table.
func (t *throttler) Throttles(ctx context.Context, cluster, service string) (any, error) {
	if cluster != "" && cluster != t.a.cfg.Cluster {
		return nil, httpapi.Errorf(http.StatusBadRequest, "cluster_local",
			"throttles of cluster %s are known to its nodes: ask a node of %s", cluster, cluster)
	}
	body, _ := json.Marshal(struct{ Service string }{service})
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	out, err := t.callManager(ctx, throttle.UsageMethod, body)
	if err != nil {
		return nil, httpapi.Errorf(http.StatusServiceUnavailable, "no_manager",
			"the throttle manager of cluster %s cannot be reached (%v); retry once `meshgw roles` shows it active", t.a.cfg.Cluster, err).WithRetryAfter(1)
	}
	var rep throttle.UsageReport
	if err := json.Unmarshal(out, &rep); err != nil {
		return nil, fmt.Errorf("throttle usage: %w", err)
	}
	return rep, nil
}

// throttleStore adapts the cluster's group to throttle.Store; writes are
// fenced by the role's activation.
type throttleStore struct {
	kv      kvStore
	f       *roles.Fence
	cluster string
}

func (s throttleStore) Load(ctx context.Context, key string) ([]byte, bool, error) {
	it, ok, err := s.kv.Get(ctx, s.cluster, key)
	if err != nil || !ok {
		return nil, ok, err
	}
	return it.Value, true, nil
}

func (s throttleStore) Keys(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	after := ""
	for {
		items, err := s.kv.List(ctx, s.cluster, fsm.ListQuery{Prefix: prefix, After: after, Limit: 500})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out = append(out, it.Key)
		}
		if len(items) < 500 || len(out) > 100_000 {
			return out, nil
		}
		after = items[len(items)-1].Key
	}
}

func (s throttleStore) Save(ctx context.Context, puts map[string][]byte, deletes []string) error {
	ops := make([]fsm.Op, 0, len(puts)+len(deletes))
	for k, v := range puts {
		ops = append(ops, fsm.Op{Type: fsm.OpPut, Key: k, Value: v})
	}
	for _, k := range deletes {
		ops = append(ops, fsm.Op{Type: fsm.OpDelete, Key: k})
	}
	for len(ops) > 0 {
		n := min(len(ops), fsm.MaxOps-1)
		if _, err := applyFenced(ctx, s.kv, s.f, s.cluster, ops[:n]); err != nil {
			return err
		}
		ops = ops[n:]
	}
	return nil
}
