// Package gossip owns cluster membership: a thin, typed layer over
// hashicorp/serf and hashicorp/memberlist.
//
// Every meshgw agent is one member of a single Serf mesh. Tags carry what
// peers need to know about each other (cluster ID, roles, advertised RPC,
// Raft and HTTP addresses, user tags, version). Membership questions are
// answered from the local gossip view, never from a master.
//
// gossip imports neither consensus, dispatch nor transport; node adapts its
// Member type to the small interfaces those packages declare.
package gossip
