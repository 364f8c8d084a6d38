package centrallog

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// shardRecord is the log shard's creation record, kept in the state group
// (written once, by the active logger, through its fence): the member map
// every initial replica starts with, so a logger taking over half-way
// through the creation starts the same shard, never a second one.
type shardRecord struct {
	Shard   uint64            `json:"shard"`
	Initial map[uint64]string `json:"initial"` // replica → Raft address
	Nodes   map[uint64]string `json:"nodes"`   // replica → node name
	Created time.Time         `json:"created"`
}

// Put writes a key of the state group through the role's fence (node:
// applyFenced): refused once another activation claimed the role.
type Put func(ctx context.Context, key string, value []byte) error

// RunLogger is the body of the central-logger role: it runs while this
// node is the active logger and returns when ctx ends. It creates the log
// shard if the cluster has none, keeps its membership following the state
// group's voters, accepts batches from the shippers (serveShip), enforces
// the retention and forwards to syslog.
func (s *Service) RunLogger(ctx context.Context, put Put) error {
	defer s.active.Store(false)
	s.log.Info().Msg("central logger active")
	defer s.log.Info().Msg("central logger stopped")
	var fwd *forwarder
	if s.cfg.Syslog != "" {
		fwd = newForwarder(s)
		done := make(chan struct{})
		go func() { defer close(done); fwd.run(ctx) }()
		defer func() { <-done }()
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastTrim := time.Now()
	for {
		if err := s.reconcile(ctx, put); err != nil && ctx.Err() == nil {
			s.log.Debug().Err(err).Msg("log shard reconcile")
		}
		if s.localReplica() != 0 {
			s.active.Store(true)
		}
		if time.Since(lastTrim) >= s.cfg.RetentionEvery && s.localReplica() != 0 {
			lastTrim = time.Now()
			if err := s.trim(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("central log retention pass failed")
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *Service) trim(ctx context.Context) error {
	r := s.cfg.Retention
	cmd := command{MaxCount: r.MaxCount, MaxBytes: r.MaxBytes}
	if r.MaxAge > 0 {
		cmd.Before = time.Now().Add(-r.MaxAge).UTC()
	}
	n, err := s.propose(ctx, encodeCommand(cmdTrim, cmd))
	if err == nil && n > 0 {
		s.log.Debug().Uint64("entries", n).Msg("central log retention dropped entries")
	}
	return err
}

// reconcile does at most one step towards a log shard whose voters are
// the state group's voters.
func (s *Service) reconcile(ctx context.Context, put Put) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	voters, err := s.mesh.Voters(ctx)
	if err != nil || len(voters) == 0 {
		return fmt.Errorf("state group voters: %v", err)
	}
	var rec shardRecord
	raw, found, err := s.mesh.GetMeta(ctx, metaKey)
	if err != nil {
		return fmt.Errorf("read the log shard record: %w", err)
	}
	if found {
		if err := json.Unmarshal(raw, &rec); err != nil {
			return fmt.Errorf("decode the log shard record: %w", err)
		}
		if !s.knownShard(rec.Shard) {
			return fmt.Errorf("the log shard record names shard %d, not one of cluster %s's", rec.Shard, s.cfg.Cluster)
		}
	} else {
		rec = shardRecord{Shard: s.shardID(), Initial: map[uint64]string{}, Nodes: map[uint64]string{}, Created: time.Now().UTC()}
		for _, v := range voters {
			rid := replicaID(v.Name, 0)
			rec.Initial[rid], rec.Nodes[rid] = v.RaftAddr, v.Name
		}
		b, _ := json.Marshal(rec)
		if err := put(ctx, metaKey, b); err != nil {
			return fmt.Errorf("write the log shard record: %w", err)
		}
		s.log.Info().Int("replicas", len(rec.Initial)).Msg("log shard created")
	}
	byAddr := map[string]Member{}
	for _, v := range voters {
		byAddr[v.RaftAddr] = v
	}
	if s.localReplica() == 0 {
		for rid, name := range rec.Nodes {
			if name == s.cfg.NodeName {
				return s.startReplica(rec.Shard, rid, rec.Initial, false)
			}
		}
		return s.joinSelf(ctx, rec.Shard, voters)
	}
	if shard := s.shardID(); shard != rec.Shard {
		return fmt.Errorf("this node's log shard replica is of shard %d, the record names %d", shard, rec.Shard)
	}
	nh := s.mesh.NodeHost()
	m, err := nh.SyncGetShardMembership(ctx, rec.Shard)
	if err != nil {
		// No quorum yet: the initial replicas may not all have started.
		for rid, addr := range rec.Initial {
			if v, ok := byAddr[addr]; ok && v.Name != s.cfg.NodeName {
				s.tell(ctx, v, replicaReq{Shard: rec.Shard, Replica: rid, Initial: rec.Initial})
			}
		}
		return fmt.Errorf("log shard membership: %w", err)
	}
	members := map[string]uint64{}
	for rid, addr := range m.Nodes {
		members[addr] = rid
		if v, ok := byAddr[addr]; ok && v.Name != s.cfg.NodeName {
			req := replicaReq{Shard: rec.Shard, Replica: rid, Join: true}
			if _, ok := rec.Initial[rid]; ok {
				req.Initial, req.Join = rec.Initial, false
			}
			s.tell(ctx, v, req)
		}
	}
	for _, v := range voters {
		if _, ok := members[v.RaftAddr]; !ok {
			rid := replicaID(v.Name, m.ConfigChangeID+1)
			if err := nh.SyncRequestAddReplica(ctx, rec.Shard, rid, v.RaftAddr, m.ConfigChangeID); err != nil {
				return fmt.Errorf("add %s to the log shard: %w", v.Name, err)
			}
			s.log.Info().Str("member", v.Name).Uint64("replica", rid).Msg("log shard replica added")
			s.tell(ctx, v, replicaReq{Shard: rec.Shard, Replica: rid, Join: true})
			return nil
		}
	}
	for addr, rid := range members {
		if _, ok := byAddr[addr]; !ok && len(members) > 1 {
			if err := nh.SyncRequestDeleteReplica(ctx, rec.Shard, rid, m.ConfigChangeID); err != nil {
				return fmt.Errorf("remove replica %d from the log shard: %w", rid, err)
			}
			s.log.Info().Str("addr", addr).Uint64("replica", rid).Msg("log shard replica removed")
			return nil
		}
	}
	return nil
}

// tell asks v to start its log shard replica (idempotent).
func (s *Service) tell(ctx context.Context, v Member, req replicaReq) {
	if v.RPCAddr == "" {
		return
	}
	b, _ := json.Marshal(req)
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := s.rpc.Call(cctx, v.RPCAddr, MethodReplica, b); err != nil {
		s.log.Debug().Err(err).Str("member", v.Name).Msg("log shard replica start not confirmed")
	}
}

// joinSelf has a member add this node (the active logger, a state voter
// the log shard does not have yet) to the log shard, then starts the
// replica as a joining one.
func (s *Service) joinSelf(ctx context.Context, shard uint64, voters []Member) error {
	var self Member
	for _, v := range voters {
		if v.Name == s.cfg.NodeName {
			self = v
		}
	}
	if self.RaftAddr == "" {
		return fmt.Errorf("%s is not a voter of the state group", s.cfg.NodeName)
	}
	rid := replicaID(s.cfg.NodeName, uint64(time.Now().UnixNano()))
	b, _ := json.Marshal(memberReq{Shard: shard, Replica: rid, Addr: self.RaftAddr})
	for _, v := range voters {
		if v.Name == s.cfg.NodeName || v.RPCAddr == "" {
			continue
		}
		if _, err := s.rpc.Call(ctx, v.RPCAddr, MethodMember, b); err == nil {
			return s.startReplica(shard, rid, nil, true)
		}
	}
	return fmt.Errorf("no member of the log shard added %s", s.cfg.NodeName)
}
