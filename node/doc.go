// Package node is the composition root of one meshgw agent.
//
// It builds an agent from a config.Runtime: the gossip member, the QUIC RPC
// transport, the consensus manager (one Raft group per cluster ID), the
// dispatcher, the singleton roles (package roles: retention, run on the
// cluster's Raft leader) and the HTTP API, and it owns their start and stop
// order and the graceful leave. The interfaces the other packages declare (membership
// views, stores) are satisfied here by small adapters, so gossip, consensus,
// dispatch and transport never import one another's concrete types.
//
// Only cmd/meshgw and the tests may import node; node imports dispatch,
// consensus, gossip, roles and transport, never the other way round.
package node
