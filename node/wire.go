package node

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
	meshdns "github.com/meshgw/meshgw/node/dns"
)

// peerView adapts gossip to consensus.Membership; a peer whose TLS is
// refused is not "alive" to consensus (peerTrust).
type peerView struct {
	g     *gossip.Gossip
	trust *peerTrust
}

var _ consensus.Membership = peerView{}

func (v peerView) Peers() []consensus.Peer {
	ms := v.g.Members(gossip.Filter{})
	out := make([]consensus.Peer, 0, len(ms))
	for _, m := range ms {
		out = append(out, consensus.Peer{Name: m.Name, Cluster: m.Cluster, RaftAddr: m.RaftAddr, RPCAddr: m.RPCAddr,
			Status: v.trust.status(m), Hosting: m.Hosting})
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
	// A cluster's tokens are its own: no node of another cluster writes
	// them, whatever ACL check it claims to have made.
	ccfg.LocalOnlyPrefixes = []string{"acl/"}
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
	ccfg.OnHosting = a.noteHosting
	cons, err := consensus.New(ccfg, peerView{a.gossip, a.trust}, a.rpc, a.log)
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	a.cons = cons

	var exec *runner.Executor
	if cfg.HasRole("runner") {
		rcfg := runner.DefaultConfig()
		rcfg.MaxConcurrent = cfg.MaxConcurrentExecs
		rcfg.DefaultUser = cfg.ExecUser
		if exec, err = runner.New(rcfg, a.log); err != nil {
			return fmt.Errorf("runner: %w", err)
		}
	}
	a.exec = exec
	dcfg := dispatch.DefaultConfig()
	// Recovery and retention run as the retention role (a.roles), not
	// on the dispatcher's own leader check.
	dcfg.Clusters = nil
	dcfg.Cluster = cfg.Cluster // a runner runs only its own cluster's services
	// and proxies to their upstreams, checked without quorum for as long
	// as a gateway serves /svc/ so (dispatch/verifyhttp.go)
	dcfg.StaleServeFor, dcfg.StaleDefinitions = cfg.StaleServeFor, staleDefinitions(cons)
	dcfg.RetentionCount = cfg.RetentionCount
	dcfg.RetentionBytes = cfg.RetentionBytes
	dcfg.RetentionAge = cfg.RetentionAge
	dcfg.MaxInput = cfg.MaxInputBytes
	dcfg.SourceDir = filepath.Join(cfg.DataDir, "sources") // repository checkouts, venvs (dispatch/gitsrc)
	kv := knownClusters{kvStore: cons, known: func(cluster string) bool {
		return len(a.gossip.Members(gossip.Filter{Cluster: cluster})) > 0
	}}
	store := dispatchStore{kv: kv}
	if a.disp, err = dispatch.New(dcfg, newRunnerView(a.gossip, a.trust), store, a.rpc, exec, cfg.NodeName, a.log); err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	a.state = &stateBackend{kv: kv, gossip: a.gossip, cons: cons}
	if err := a.newCentralLog(); err != nil { // centrallog.go; before the roles
		return err
	}
	if a.roles, err = a.newRoles(); err != nil {
		return fmt.Errorf("roles: %w", err)
	}
	return nil
}

// dnsView adapts gossip to the DNS interface's member view: alive members
// only (a suspect one is left out at once), addressed by the host of their
// advertised HTTP address, else of their gossip address.
type dnsView struct{ g *gossip.Gossip }

var _ meshdns.View = dnsView{}

func (v dnsView) LiveMembers() []meshdns.Member {
	ms := v.g.Members(gossip.Filter{Status: gossip.StatusAlive})
	out := make([]meshdns.Member, 0, len(ms))
	for _, m := range ms {
		h, p, err := net.SplitHostPort(m.HTTPAddr)
		port, perr := strconv.ParseUint(p, 10, 16)
		if err != nil || perr != nil {
			continue // no API to point at
		}
		ip := net.ParseIP(h)
		if ip == nil || ip.IsUnspecified() {
			gh, _, _ := net.SplitHostPort(m.Addr)
			if ip = net.ParseIP(gh); ip == nil {
				continue
			}
		}
		dm := meshdns.Member{Name: m.Name, Cluster: m.Cluster, IP: ip, HTTPPort: uint16(port)}
		for _, r := range m.Roles {
			dm.Gateway = dm.Gateway || r == "gateway"
			dm.Runner = dm.Runner || r == "runner"
		}
		out = append(out, dm)
	}
	return out
}

// noteHosting is consensus's OnHosting: it must not block (consensus may
// hold its bootstrap lock), and gossip's SetHosting may wait for a
// broadcast, so it records the latest value for hostingLoop.
func (a *Agent) noteHosting(hosting bool) {
	a.hosting.Store(hosting)
	select {
	case a.hostingSig <- struct{}{}:
	default: // a signal is pending: the loop reads the latest value
	}
}

// hostingLoop sets the gossip hosting tag to the latest value consensus
// reported, until the agent shuts down.
func (a *Agent) hostingLoop() {
	defer a.wg.Done()
	for {
		select {
		case <-a.done:
			return
		case <-a.hostingSig:
			if err := a.gossip.SetHosting(a.hosting.Load()); err != nil {
				a.log.Warn().Err(err).Msg("gossip hosting tag")
			}
		}
	}
}
