package node

import (
	"fmt"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
)

// peerView adapts gossip to consensus.Membership.
type peerView struct{ g *gossip.Gossip }

var _ consensus.Membership = peerView{}

func (v peerView) Peers() []consensus.Peer {
	ms := v.g.Members(gossip.Filter{})
	out := make([]consensus.Peer, 0, len(ms))
	for _, m := range ms {
		out = append(out, consensus.Peer{Name: m.Name, Cluster: m.Cluster, RaftAddr: m.RaftAddr, RPCAddr: m.RPCAddr, Status: string(m.Status)})
	}
	return out
}

// consensusConfig is the consensus configuration of an agent.
func consensusConfig(cfg config.Runtime, adv advertised, tm tlsMaterial) consensus.Config {
	ccfg := consensus.DefaultConfig()
	ccfg.NodeName = cfg.NodeName
	ccfg.DataDir = cfg.DataDir
	ccfg.RaftBindAddr = cfg.RaftAddr
	ccfg.RaftAdvertiseAddr = adv.raft
	ccfg.LocalCluster = cfg.Cluster
	ccfg.BootstrapExpect = cfg.BootstrapExpect
	ccfg.Voters = cfg.RaftVoters
	ccfg.DeadVoterTimeout = cfg.AutopilotDeadAfter
	ccfg.SetRTT(cfg.RaftRTT)
	ccfg.MutualTLS = true
	ccfg.CAFile, ccfg.CertFile, ccfg.KeyFile = tm.caFile, tm.certFile, tm.keyFile
	return ccfg
}

// wireState builds the consensus manager and the dispatcher. Both register
// their RPC handlers, so this runs before the transport starts.
func (a *Agent) wireState() error {
	cfg := a.cfg
	ccfg := consensusConfig(cfg, a.adv, a.tls)
	cons, err := consensus.New(ccfg, peerView{a.gossip}, a.rpc, a.log)
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	a.cons = cons

	var exec *runner.Executor
	if cfg.HasRole("runner") {
		rcfg := runner.DefaultConfig()
		rcfg.MaxConcurrent = cfg.MaxConcurrentExecs
		if exec, err = runner.New(rcfg, a.log); err != nil {
			return fmt.Errorf("runner: %w", err)
		}
	}
	a.exec = exec
	dcfg := dispatch.DefaultConfig()
	// Recovery and retention run as the retention role (a.roles), not
	// on the dispatcher's own leader check.
	dcfg.Clusters = nil
	dcfg.RetentionCount = cfg.RetentionCount
	dcfg.RetentionBytes = cfg.RetentionBytes
	dcfg.RetentionAge = cfg.RetentionAge
	store := dispatchStore{kv: cons}
	if a.disp, err = dispatch.New(dcfg, newRunnerView(a.gossip), store, a.rpc, exec, cfg.NodeName, a.log); err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	a.state = &stateBackend{kv: cons, gossip: a.gossip, cons: cons}
	if a.roles, err = a.newRoles(); err != nil {
		return fmt.Errorf("roles: %w", err)
	}
	return nil
}
