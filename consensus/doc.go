// Package consensus owns replicated state: one dragonboat v4 NodeHost per
// agent hosting one Raft group (shard) per cluster ID.
//
// It bootstraps groups from gossip membership (bootstrap-expect), places and
// replaces voters (autopilot), forwards reads and writes from nodes that hold
// no replica of a group to one that does over the transport package, and
// exposes a small versioned key/value API with compare-and-set. What the keys
// mean (services, executions, tokens) belongs to the callers; the state
// machine itself lives in consensus/fsm and is pure.
//
// consensus imports transport, never gossip or dispatch: membership reaches
// it through the Membership interface it declares.
package consensus
