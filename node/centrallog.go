package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/centrallog"
	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/roles"
)

// newCentralLog wires the central log (off with -central-log=false): its
// RPC handlers now, its role in newRoles, its start after consensus'.
func (a *Agent) newCentralLog() error {
	if !a.cfg.CentralLog {
		return nil
	}
	cfg := centrallog.DefaultConfig()
	cfg.NodeName, cfg.Cluster = a.cfg.NodeName, a.cfg.Cluster
	cfg.Dir = filepath.Join(a.cfg.DataDir, "centrallog")
	cfg.SpoolBytes = a.cfg.LogSpoolBytes
	cfg.Retention = centrallog.Retention{MaxAge: a.cfg.LogRetentionAge,
		MaxCount: uint64(a.cfg.LogRetentionCount), MaxBytes: uint64(a.cfg.LogRetentionBytes)}
	// The log shard's leader heartbeats its followers 4 times less often
	// than the state group's: under load those messages cost the proxy
	// CPU, and a log shard election that takes 4 times longer only
	// delays storing (the entries wait in the spools), never a request.
	election, heartbeat := a.cons.RaftTimings()
	cfg.ElectionRTT, cfg.HeartbeatRTT = logTimingFactor*election, logTimingFactor*heartbeat
	cfg.StateShard = consensus.ShardID(a.cfg.Cluster)
	cfg.Syslog = a.cfg.Syslog
	s, err := centrallog.New(cfg, logMesh{a}, a.rpc, a.log)
	if err != nil {
		return fmt.Errorf("central log: %w", err)
	}
	s.Register(a.rpc)
	a.reg.MustRegister(newClogCollector(s))
	a.clog = s
	return nil
}

// logTimingFactor is how much slower the log shard's Raft timings are
// than the state group's.
const logTimingFactor = 4

// centralLoggerRole is the central-logger role, when the log is on.
func (a *Agent) centralLoggerRole() []roles.Role {
	if a.clog == nil {
		return nil
	}
	return []roles.Role{{Name: roles.CentralLogger, Run: func(ctx context.Context, f *roles.Fence) error {
		return a.clog.RunLogger(ctx, func(ctx context.Context, key string, value []byte) error {
			res, err := applyFenced(ctx, a.cons, f, f.Cluster, []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value}})
			if err == nil && res.Conflict {
				err = errors.New("central log: shard record write conflicted")
			}
			return err
		})
	}}}
}

// logMesh adapts the agent to centrallog.Mesh.
type logMesh struct{ a *Agent }

func (m logMesh) NodeHost() *dragonboat.NodeHost { return m.a.cons.NodeHost() }

func (m logMesh) Voters(ctx context.Context) ([]centrallog.Member, error) {
	var out []centrallog.Member
	for _, g := range m.a.cons.Status(ctx) {
		if g.Cluster != m.a.cfg.Cluster || !g.Local {
			continue
		}
		for _, r := range g.Replicas {
			if r.Node == "" {
				return nil, fmt.Errorf("voter at %s is not known to gossip yet", r.Addr)
			}
			mem, _ := m.member(r.Node, true)
			out = append(out, centrallog.Member{Name: r.Node, RaftAddr: r.Addr, RPCAddr: mem.RPCAddr})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("this node holds no replica of the cluster's state group")
	}
	return out, nil
}

func (m logMesh) member(name string, anyStatus bool) (centrallog.Member, bool) {
	for _, g := range m.a.gossip.Members(gossip.Filter{Cluster: m.a.cfg.Cluster}) {
		if g.Name == name && (anyStatus || g.Status == gossip.StatusAlive || g.Status == gossip.StatusSuspect) {
			return centrallog.Member{Name: g.Name, RaftAddr: g.RaftAddr, RPCAddr: g.RPCAddr}, true
		}
	}
	return centrallog.Member{}, false
}

func (m logMesh) Member(name string) (centrallog.Member, bool) { return m.member(name, false) }

// Logger is the node the central-logger role's fence record names.
func (m logMesh) Logger(ctx context.Context) (centrallog.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	it, ok, err := m.a.cons.Get(ctx, m.a.cfg.Cluster, roles.FenceKey(roles.CentralLogger))
	if err != nil {
		return centrallog.Member{}, err
	}
	if !ok {
		return centrallog.Member{}, errors.New("no central logger has been active yet")
	}
	rec, err := roles.DecodeRecord(it.Value)
	if err != nil {
		return centrallog.Member{}, err
	}
	mem, ok := m.Member(rec.Node)
	if !ok {
		return centrallog.Member{}, fmt.Errorf("the central logger %s is not alive", rec.Node)
	}
	return mem, nil
}

func (m logMesh) GetMeta(ctx context.Context, key string) ([]byte, bool, error) {
	it, ok, err := m.a.cons.Get(ctx, m.a.cfg.Cluster, key)
	if err != nil || !ok {
		return nil, ok, err
	}
	return it.Value, true, nil
}

// clogCollector exports the central log's counters of this node.
type clogCollector struct {
	s                                 *centrallog.Service
	dropped, shipped, pending, active *prometheus.Desc
	replica, voters                   *prometheus.Desc
}

func newClogCollector(s *centrallog.Service) *clogCollector {
	return &clogCollector{s: s,
		dropped: prometheus.NewDesc("meshgw_central_log_dropped_total",
			"Central log entries this node could not spool (spool full or unwritable): they are lost.", nil, nil),
		shipped: prometheus.NewDesc("meshgw_central_log_shipped_total",
			"Central log entries this node shipped and the log shard acknowledged.", nil, nil),
		pending: prometheus.NewDesc("meshgw_central_log_spool_bytes",
			"Bytes of central log entries spooled on this node, not yet acknowledged.", nil, nil),
		active: prometheus.NewDesc("meshgw_central_log_active",
			"1 while this node is the cluster's active central logger.", nil, nil),
		replica: prometheus.NewDesc("meshgw_central_log_replica",
			"1 while this node holds a replica of the cluster's log shard.", nil, nil),
		voters: prometheus.NewDesc("meshgw_central_log_voters",
			"Voters of the log shard as this node's replica knows them (it follows the state group's).", nil, nil)}
}

func (c *clogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dropped
	ch <- c.shipped
	ch <- c.pending
	ch <- c.active
	ch <- c.replica
	ch <- c.voters
}

func (c *clogCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	active := 0.0
	if st.Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(c.shipped, prometheus.CounterValue, float64(st.Shipped))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.SpoolPending))
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, active)
	replica := 0.0
	if st.Replica {
		replica = 1
	}
	ch <- prometheus.MustNewConstMetric(c.replica, prometheus.GaugeValue, replica)
	ch <- prometheus.MustNewConstMetric(c.voters, prometheus.GaugeValue, float64(st.Voters))
}
