package node

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/upstreams"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/transport"
	"github.com/rs/zerolog"
)

// methodHealth carries a runner's health verdicts (JSON healthReport) to
// the other nodes of its cluster. Who may call: a live member of this
// node's own cluster (the verdicts are about that cluster's services);
// any other caller is refused.
const methodHealth = "routing.health"

// Bounds of the health sharing.
const (
	routingRefresh    = time.Second            // route table and checks: re-read every
	healthHeartbeat   = time.Second            // verdicts resent without a change
	healthMinGap      = 100 * time.Millisecond // at most one push per gap
	healthSenderGap   = 50 * time.Millisecond  // a sender's reports closer than this are dropped
	healthCallTimeout = time.Second
	maxHealthReport   = 512 << 10
)

type healthReport struct {
	Obs []upstreams.Observation `json:"obs"`
}

// routing keeps a node's route table and, on a runner, its health checks
// and their sharing.
type routing struct {
	cluster string
	local   string
	state   *stateBackend
	members func(gossip.Filter) []gossip.Member
	rpc     *transport.Transport
	reg     *upstreams.Registry
	checker *upstreams.Checker // nil on a node that is not a runner
	log     zerolog.Logger

	table    atomic.Pointer[upstreams.Table]
	services atomic.Pointer[[]dispatch.Service] // http services, by name
	kick     chan struct{}                      // refresh now (a local write)
	changed  chan struct{}                      // a verdict changed: push now

	mu       sync.Mutex
	lastFrom map[string]time.Time // sender → its last accepted report
}

func newRouting(a *Agent) *routing {
	rt := &routing{cluster: a.cfg.Cluster, local: a.cfg.NodeName, state: a.state, members: a.gossip.Members, rpc: a.rpc,
		reg: a.disp.Upstreams(), log: a.log.With().Str("component", "routing").Logger(),
		kick: make(chan struct{}, 1), changed: make(chan struct{}, 1), lastFrom: map[string]time.Time{}}
	rt.table.Store(upstreams.NewTable(nil))
	if a.exec != nil {
		rt.checker = upstreams.NewChecker(nil, func() { signal(rt.changed) })
	}
	a.rpc.Handle(methodHealth, rt.serveHealth)
	return rt
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// serveHealth takes a peer's verdicts in.
func (rt *routing) serveHealth(_ context.Context, req *transport.Request) ([]byte, error) {
	m, ok := rt.member(req.Peer)
	if !ok || m.Cluster != rt.cluster {
		return nil, transport.Errorf(transport.CodeForbidden, "only nodes of cluster %s share health here", rt.cluster)
	}
	if len(req.Body) > maxHealthReport {
		return nil, transport.Errorf("invalid", "health report larger than %d bytes", maxHealthReport)
	}
	now := time.Now()
	rt.mu.Lock()
	if now.Sub(rt.lastFrom[req.Peer]) < healthSenderGap {
		rt.mu.Unlock()
		return nil, nil // rate-limited: the next report will do
	}
	rt.lastFrom[req.Peer] = now
	rt.mu.Unlock()
	var rep healthReport
	if err := json.Unmarshal(req.Body, &rep); err != nil {
		return nil, transport.Errorf("invalid", "malformed health report: %v", err)
	}
	rt.reg.Health().Observe(req.Peer, rep.Obs)
	return nil, nil
}

func (rt *routing) member(name string) (gossip.Member, bool) {
	for _, m := range rt.members(gossip.Filter{}) {
		if m.Name == name {
			return m, m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect
		}
	}
	return gossip.Member{}, false
}

// run refreshes the table and checks every routingRefresh (or at once
// after a local write) and pushes verdicts, until ctx ends.
func (rt *routing) run(ctx context.Context) {
	refresh := time.NewTicker(routingRefresh)
	defer refresh.Stop()
	beat := time.NewTicker(healthHeartbeat)
	defer beat.Stop()
	rt.refresh(ctx)
	var lastPush time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			rt.refresh(ctx)
		case <-rt.kick:
			rt.refresh(ctx)
		case <-rt.changed:
			if wait := healthMinGap - time.Since(lastPush); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			rt.push(ctx)
			lastPush = time.Now()
		case <-beat.C:
			rt.push(ctx)
			lastPush = time.Now()
		}
	}
}

// refresh reads the cluster's http services: the route table, and the
// checks this runner makes.
func (rt *routing) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	all, err := rt.state.ListServices(rctx, rt.cluster)
	if err != nil {
		if ctx.Err() == nil {
			rt.log.Debug().Err(err).Msg("route table not refreshed")
		}
		return // keep the last table: routes do not vanish with a quorum
	}
	var svcs []dispatch.Service
	var routes []upstreams.Route
	var checks []upstreams.Check
	for _, s := range all {
		if s.Type != dispatch.TypeHTTP {
			continue
		}
		svcs = append(svcs, s)
		for _, r := range s.Routes() {
			routes = append(routes, upstreams.Route{Host: r.Host, Prefix: r.Prefix, Strip: r.Strip, Service: r.Service})
		}
		if h, ok := s.HealthConfig(); ok {
			for _, t := range s.Targets() {
				checks = append(checks, upstreams.Check{Key: upstreams.HealthKey(rt.cluster+"/"+s.Name, t.URL), URL: t.URL,
					Path: h.Path, Interval: h.Interval.Std(), Timeout: h.Timeout.Std(),
					HealthyAfter: h.HealthyAfter, UnhealthyAfter: h.UnhealthyAfter})
			}
		}
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	rt.services.Store(&svcs)
	if t := upstreams.NewTable(routes); t.Revision() != rt.table.Load().Revision() {
		rt.table.Store(t)
		rt.log.Info().Str("revision", t.Revision()).Int("routes", t.Len()).Msg("route table changed")
	}
	if rt.checker != nil {
		rt.checker.Sync(checks)
	}
}

// push sends this runner's verdicts to every live node of its cluster,
// itself included.
func (rt *routing) push(ctx context.Context) {
	if rt.checker == nil {
		return
	}
	obs := rt.checker.Observations()
	rt.reg.Health().Observe(rt.local, obs)
	body, err := json.Marshal(healthReport{Obs: obs})
	if err != nil || len(body) > maxHealthReport {
		rt.log.Warn().Int("verdicts", len(obs)).Msg("health report too large to share")
		return
	}
	var wg sync.WaitGroup
	for _, m := range rt.members(gossip.Filter{Cluster: rt.cluster, Status: gossip.StatusAlive}) {
		if m.Name == rt.local || m.RPCAddr == "" {
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, healthCallTimeout)
			defer cancel()
			_, _ = rt.rpc.Call(cctx, addr, methodHealth, body)
		}(m.RPCAddr)
	}
	wg.Wait()
}

// start runs the loop, owned by the agent (its wg, stopped with stopCtx),
// and makes local writes refresh the table at once.
func (rt *routing) start(a *Agent) {
	prev := a.state.changed
	a.state.changed = func(cluster, name string) {
		if prev != nil {
			prev(cluster, name)
		}
		signal(rt.kick)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		rt.run(a.stopCtx)
	}()
}

func (rt *routing) close() {
	if rt.checker != nil {
		rt.checker.Close()
	}
}

// route is the data plane's Router.
func (rt *routing) route(host, path string) (string, string, bool) {
	r, p, ok := rt.table.Load().Match(host, path)
	return r.Service, p, ok
}

// RouteTable implements httpapi.RoutesBackend.
func (rt *routing) RouteTable(context.Context) (httpapi.RouteTable, error) {
	t := rt.table.Load()
	out := httpapi.RouteTable{Node: rt.local, Cluster: rt.cluster, Revision: t.Revision(), Routes: t.Routes()}
	if p := rt.services.Load(); p != nil {
		for _, s := range *p {
			ts := s.Targets()
			targets := make([]upstreams.Target, len(ts))
			for i, u := range ts {
				targets[i] = upstreams.Target{URL: u.URL, Weight: u.Weight}
			}
			out.Services = append(out.Services, httpapi.ServiceUpstreams{Service: s.Name,
				Upstreams: rt.reg.States(rt.cluster+"/"+s.Name, targets)})
		}
	}
	return out, nil
}

// routeConflict is the 409 of a write whose route another service holds.
func routeConflict(r dispatch.Route, owner string) error {
	return httpapi.Errorf(http.StatusConflict, "route_conflict",
		"route %s%s is claimed by service %q: remove it from %q first, or claim another host or prefix",
		r.Host, r.Prefix, owner, owner)
}
