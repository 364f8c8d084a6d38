package node

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/gossip"
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
	// The agent is stopped: its keyring file holds the keys it would use.
	keys, err := gossip.ReadKeyringFile(filepath.Join(cfg.DataDir, "serf", "keyring"))
	if err != nil {
		return consensus.RecoverReport{}, err
	}
	if len(keys) == 0 && cfg.Encrypt != "" {
		key, err := gossip.DecodeKey(cfg.Encrypt)
		if err != nil {
			return consensus.RecoverReport{}, fmt.Errorf("-encrypt: %w", err)
		}
		keys = [][]byte{key}
	}
	tm, _, err := resolveTLS(cfg, hosts, keys, zerolog.Nop())
	if err != nil {
		return consensus.RecoverReport{}, err
	}
	ccfg := consensusConfig(cfg, adv, tm)
	return consensus.Recover(ctx, ccfg, cfg.Cluster)
}
