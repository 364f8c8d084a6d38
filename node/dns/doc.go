// Package dns serves meshgw's DNS interface: plain clients and load
// balancers find a live node by name, without a meshgw client.
//
// The zone is meshgw. and every name in it is computed from a member view
// (View), read at most every 200 ms, so an answer is as fresh as this
// node's gossip:
//
//	gateway.meshgw.             live gateway nodes of every cluster
//	CLUSTER.gateway.meshgw.     live gateway nodes of cluster CLUSTER
//	CLUSTER.runner.meshgw.      live runner nodes of cluster CLUSTER
//	NODE.node.meshgw.           one live node (the target of SRV records)
//
// A and AAAA carry the nodes' IP addresses, SRV (also asked as
// _http._tcp.NAME) their HTTP API port with NODE.node.meshgw. as the
// target, its addresses in the additional section. Answers have a short
// TTL (TTL) and are shuffled per query. A name in the zone that matches no
// pattern, or a cluster with no such live node, is NXDOMAIN; a known name
// asked for another type is an empty answer (NODATA); both carry the
// zone's SOA for negative caching. Names outside the zone are REFUSED: the
// server is no recursive resolver.
//
// Bounds: UDP answers fit the client's EDNS0 buffer (512 bytes without
// EDNS0, at most MaxUDPSize) and are truncated with TC set beyond it, so
// the client retries over TCP; TCP connections have read, write and idle
// timeouts and a cap on queries per connection. Only standard queries with
// one question are answered (FORMERR, NOTIMP otherwise).
//
// The package imports no other meshgw package: node adapts gossip to View.
package dns
