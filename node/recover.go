package node

import (
	"context"
	"net"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/node/config"
)

// RecoverWarning is what an operator must read before RecoverRaft.
const RecoverWarning = consensus.RecoverWarning

// RecoverRaft repairs the node's cluster group after a permanent loss of
// quorum, from this node's data dir (the agent must be stopped). cfg is the
// agent's own configuration, so the Raft addresses and TLS material match.
func RecoverRaft(ctx context.Context, cfg config.Runtime) (consensus.RecoverReport, error) {
	adv, err := advertise(cfg)
	if err != nil {
		return consensus.RecoverReport{}, err
	}
	hosts := []string{adv.host}
	if h, _, _ := net.SplitHostPort(cfg.RPCAddr); h != "" {
		hosts = append(hosts, h)
	}
	tm, err := resolveTLS(cfg, hosts)
	if err != nil {
		return consensus.RecoverReport{}, err
	}
	ccfg := consensusConfig(cfg, adv, tm)
	return consensus.Recover(ctx, ccfg, cfg.Cluster)
}
