package consensus

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/logger"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
)

// GroupStatus is one Raft group as this node sees it.
type GroupStatus struct {
	Cluster         string
	ShardID         uint64
	Leader          string // node name, when known
	LeaderReplicaID uint64
	Term            uint64
	AppliedIndex    uint64
	Local           bool // this node holds a replica
	Replicas        []Replica
	// HeartbeatInterval and ElectionTimeout are this node's Raft timings
	// (elections start after 1-2 ElectionTimeouts of silence).
	HeartbeatInterval, ElectionTimeout time.Duration
}

// Replica is one voter of a group.
type Replica struct {
	ID   uint64
	Node string
	Addr string
}

// Status reports every group this node hosts.
func (m *Manager) Status(ctx context.Context) []GroupStatus {
	if m.nh == nil {
		return nil
	}
	names := map[string]string{}
	for _, p := range m.members.Peers() {
		if p.RaftAddr != "" {
			names[p.RaftAddr] = p.Name
		}
	}
	byShard := map[uint64]string{}
	m.mu.Lock()
	for c, h := range m.shards {
		byShard[h.Shard] = c
	}
	m.mu.Unlock()
	info := m.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	rtt := time.Duration(m.cfg.RTTMillisecond) * time.Millisecond
	var out []GroupStatus
	for _, si := range info.ShardInfoList {
		c, ok := byShard[si.ShardID]
		if !ok {
			continue
		}
		g := GroupStatus{Cluster: c, ShardID: si.ShardID, LeaderReplicaID: si.LeaderID, Term: si.Term, Local: true,
			HeartbeatInterval: time.Duration(m.cfg.HeartbeatRTT) * rtt, ElectionTimeout: time.Duration(m.cfg.ElectionRTT) * rtt}
		for id, addr := range si.Replicas {
			g.Replicas = append(g.Replicas, Replica{ID: id, Node: names[addr], Addr: addr})
			if id == si.LeaderID {
				g.Leader = names[addr]
			}
		}
		sort.Slice(g.Replicas, func(i, j int) bool { return g.Replicas[i].Node < g.Replicas[j].Node })
		if v, err := m.nh.StaleRead(si.ShardID, fsm.AppliedQuery{}); err == nil {
			g.AppliedIndex, _ = v.(uint64)
		}
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

var loggerOnce sync.Once

// InstallLogger routes dragonboat's (and pebble's) logging into log. It
// takes effect once per process: dragonboat panics on a second factory.
// Routine Raft chatter (elections, snapshots) goes to debug; dragonboat's
// errors become warnings, its panics errors.
func InstallLogger(log zerolog.Logger) {
	loggerOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			return &dbLogger{log: log.With().Str("component", "raft").Str("pkg", pkg).Logger()}
		})
	})
}

type dbLogger struct{ log zerolog.Logger }

// errLimit keeps a dead peer from filling the log: dragonboat reports every
// failed reconnect. The first report of a given message format in a window
// is a warning; repeats within errWindow go to debug.
var errLimit = struct {
	sync.Mutex
	last map[string]time.Time
}{last: map[string]time.Time{}}

const errWindow = time.Minute

func warnOnce(format string) bool {
	errLimit.Lock()
	defer errLimit.Unlock()
	now := time.Now()
	if t, ok := errLimit.last[format]; ok && now.Sub(t) < errWindow {
		return false
	}
	if len(errLimit.last) > 1024 {
		errLimit.last = map[string]time.Time{}
	}
	errLimit.last[format] = now
	return true
}

func (l *dbLogger) SetLevel(logger.LogLevel)                    {}
func (l *dbLogger) Debugf(format string, args ...interface{})   { l.log.Trace().Msgf(format, args...) }
func (l *dbLogger) Infof(format string, args ...interface{})    { l.log.Debug().Msgf(format, args...) }
func (l *dbLogger) Warningf(format string, args ...interface{}) { l.log.Debug().Msgf(format, args...) }
func (l *dbLogger) Errorf(format string, args ...interface{}) {
	if quietError(format) {
		l.log.Debug().Msgf(format, args...)
		return
	}
	if warnOnce(format) {
		l.log.Warn().Msgf(format, args...)
		return
	}
	l.log.Debug().Msgf(format, args...)
}
func (l *dbLogger) Panicf(format string, args ...interface{}) {
	l.log.Error().Msgf(format, args...)
	panic(fmt.Sprintf(format, args...))
}

// quietErrors are dragonboat error reports that tell an operator nothing
// the agent does not say better: a Raft port in use is the start error
// (startError), a peer that died mid-send or mid-close is reported by
// gossip and the quorum watch. They go to debug.
var quietErrors = []string{"transport failed to start", "failed to close the connection", "send batch failed"}

func quietError(format string) bool {
	for _, q := range quietErrors {
		if strings.HasPrefix(format, q) {
			return true
		}
	}
	return false
}
