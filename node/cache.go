package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/cache"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/roles"
	"github.com/meshgw/meshgw/transport"
)

// cacheEpochPrefix keys the services' purge records in the cluster's
// group: cache/epoch/<service>.
const cacheEpochPrefix = "cache/epoch/"

// wireCache builds the response cache of the local cluster: its RPC
// methods, its metrics, and the hook around the /svc/ proxy.
func (a *Agent) wireCache() error {
	cluster := a.cfg.Cluster
	ccfg := cache.DefaultConfig()
	ccfg.Node = a.cfg.NodeName
	ccfg.MaxBytes = a.cfg.CacheSize
	ccfg.Members = func() []cache.Member {
		var out []cache.Member
		for _, m := range a.gossip.Members(gossip.Filter{Cluster: cluster}) {
			if m.Status == gossip.StatusLeft {
				continue
			}
			out = append(out, cache.Member{Name: m.Name, RPCAddr: m.RPCAddr, Live: m.Status == gossip.StatusAlive,
				Gateway: slices.Contains(m.Roles, config.RoleGateway)})
		}
		return out
	}
	ccfg.MayCall = func(peer string) bool {
		for _, m := range a.gossip.Members(gossip.Filter{Cluster: cluster}) {
			if m.Name == peer {
				return m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect
			}
		}
		return false
	}
	ccfg.RPC = a.rpc
	ccfg.Epochs = cacheEpochs{kv: a.cons, cluster: cluster}
	c, err := cache.New(ccfg, a.log)
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	a.cache = c
	for _, m := range cache.Methods() {
		a.rpc.Handle(m, func(ctx context.Context, req *transport.Request) ([]byte, error) {
			return c.Handle(ctx, req.Peer, req.Method, req.Body)
		})
	}
	a.reg.MustRegister(newCacheCollector(c))
	a.execB.cache, a.execB.cacheCluster = c, cluster
	return nil
}

// cacheCleanupRole is the cache-cleanup role: the cleanup pass on every
// node, fenced by the role's term.
func (a *Agent) cacheCleanupRole() roles.Role {
	return roles.Role{Name: roles.CacheCleanup, Run: func(ctx context.Context, f *roles.Fence) error {
		if a.cache == nil {
			<-ctx.Done()
			return nil
		}
		return a.cache.RunCleanup(ctx, f.Term)
	}}
}

// proxyCached proxies through the response cache when the service has a
// cache policy and belongs to this node's cluster (whose purge records
// this node follows); otherwise straight through the dispatcher.
func (b *execBackend) proxyCached(w http.ResponseWriter, r *http.Request, cluster string, svc dispatch.Service, path string) error {
	proxy := func(w http.ResponseWriter, r *http.Request) error { return b.d.ProxyHTTP(w, r, cluster, svc, path) }
	t, ok := b.cacheTarget(cluster, svc)
	if !ok {
		return proxy(w, r)
	}
	return b.cache.Serve(w, r, t, path, proxy)
}

// cacheTarget is svc as the response cache sees it; false when its
// responses are not cached here (no policy, or another cluster's).
func (b *execBackend) cacheTarget(cluster string, svc dispatch.Service) (cache.Target, bool) {
	if b.cache == nil || svc.Cache == nil || cluster != b.cacheCluster {
		return cache.Target{}, false
	}
	return cache.Target{Service: svc.Name, Version: svc.Version, PassAuthorization: svc.PassAuthorization,
		Policy: cache.Policy{TTL: svc.Cache.TTL.Std(), Methods: svc.Cache.Methods, Vary: svc.Cache.Vary,
			MaxEntryBytes: svc.Cache.MaxEntryBytes, StaleIfError: svc.Cache.StaleIfError.Std()}}, true
}

// cacheEpochs keeps the purge records in the cluster's group.
type cacheEpochs struct {
	kv      kvStore
	cluster string
}

func (e cacheEpochs) Load(ctx context.Context) (map[string]cache.EpochRecord, error) {
	out := map[string]cache.EpochRecord{}
	after := ""
	for {
		items, err := e.kv.List(ctx, e.cluster, fsm.ListQuery{Prefix: cacheEpochPrefix, After: after})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			var rec cache.EpochRecord
			if err := json.Unmarshal(it.Value, &rec); err != nil {
				return nil, fmt.Errorf("purge record %s: %w", it.Key, err)
			}
			out[strings.TrimPrefix(it.Key, cacheEpochPrefix)] = rec
		}
		if len(items) < fsm.MaxList {
			return out, nil
		}
		after = items[len(items)-1].Key
	}
}

func (e cacheEpochs) Bump(ctx context.Context, service, prefix string) (cache.EpochRecord, error) {
	key := cacheEpochPrefix + service
	for range 16 {
		it, ok, err := e.kv.Get(ctx, e.cluster, key)
		if err != nil {
			return cache.EpochRecord{}, err
		}
		var rec cache.EpochRecord
		var ver uint64
		if ok {
			if err := json.Unmarshal(it.Value, &rec); err != nil {
				return rec, fmt.Errorf("purge record %s: %w", key, err)
			}
			ver = it.Version
		}
		next := rec.Bump(prefix)
		val, _ := json.Marshal(next)
		res, err := e.kv.Apply(ctx, e.cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: val, CAS: &ver}}})
		if err != nil {
			return cache.EpochRecord{}, err
		}
		if !res.Conflict {
			return next, nil
		}
	}
	return cache.EpochRecord{}, errors.New("purge record changed 16 times under this purge; retry")
}

// CacheReport implements httpapi.CacheBackend: every live member's
// figures, summed per service.
func (b *backend) CacheReport(ctx context.Context) (httpapi.CacheReport, error) {
	rep := httpapi.CacheReport{Services: []httpapi.CacheServiceStats{}, Nodes: []httpapi.CacheNodeStatus{}}
	if b.cache == nil {
		return rep, nil
	}
	sum := map[string]*httpapi.CacheServiceStats{}
	for _, n := range b.cache.Report(ctx) {
		rep.Nodes = append(rep.Nodes, httpapi.CacheNodeStatus{Node: n.Node, Error: n.Error, Serving: n.Serving})
		for name, st := range n.Services {
			s := sum[name]
			if s == nil {
				s = &httpapi.CacheServiceStats{Service: name}
				sum[name] = s
			}
			s.Entries += st.Entries
			s.Bytes += st.Bytes
			s.Hits += st.Hits
			s.Misses += st.Misses
		}
	}
	for _, s := range sum {
		if s.Hits+s.Misses > 0 {
			s.HitRatio = float64(s.Hits) / float64(s.Hits+s.Misses)
		}
		rep.Services = append(rep.Services, *s)
	}
	sort.Slice(rep.Services, func(i, j int) bool { return rep.Services[i].Service < rep.Services[j].Service })
	return rep, nil
}

// PurgeCache implements httpapi.CacheBackend.
func (b *backend) PurgeCache(ctx context.Context, service, prefix string) (httpapi.CachePurge, error) {
	if b.cache == nil {
		return httpapi.CachePurge{}, httpapi.Errorf(http.StatusServiceUnavailable, "no_cache", "this node runs no response cache")
	}
	p, err := b.cache.Purge(ctx, service, prefix)
	if err != nil {
		return httpapi.CachePurge{}, apiError("purge cache", err)
	}
	return httpapi.CachePurge{Service: p.Service, Prefix: p.Prefix, Epoch: p.Record.Counter,
		Acknowledged: p.Acknowledged, Waited: p.Waited}, nil
}

// cacheCollector exports this node's cache figures per service.
type cacheCollector struct {
	c                            *cache.Cache
	entries, bytes, hits, misses *prometheus.Desc
}

func newCacheCollector(c *cache.Cache) *cacheCollector {
	l := []string{"service"}
	return &cacheCollector{c: c,
		entries: prometheus.NewDesc("meshgw_cache_entries", "Response-cache entries held on this node, by service.", l, nil),
		bytes:   prometheus.NewDesc("meshgw_cache_bytes", "Bytes of response-cache entries held on this node, by service.", l, nil),
		hits:    prometheus.NewDesc("meshgw_cache_hits_total", "Requests this node answered from the response cache, by service.", l, nil),
		misses:  prometheus.NewDesc("meshgw_cache_misses_total", "Cacheable requests this node sent upstream, by service.", l, nil)}
}

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.bytes
	ch <- c.hits
	ch <- c.misses
}

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for svc, st := range c.c.Stats() {
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.Entries), svc)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(st.Bytes), svc)
		ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(st.Hits), svc)
		ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(st.Misses), svc)
	}
}
