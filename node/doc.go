// Package node is the composition root of one meshgw agent.
//
// It builds an agent from a config.Runtime: the gossip member, the QUIC RPC
// transport, the consensus manager (one Raft group per cluster ID), the
// dispatcher, the singleton roles (package roles: retention, and the
// scheduler of package schedule, run on the cluster's Raft leader) and the HTTP API, and it owns their start and stop
// order and the graceful leave. The interfaces the other packages declare (membership
// views, stores) are satisfied here by small adapters, so gossip, consensus,
// dispatch and transport never import one another's concrete types.
//
// Only cmd/meshgw and the tests may import node; node imports dispatch,
// consensus, gossip, roles, schedule and transport, never the other way round.
//
// # Who may call which RPC method
//
// The caller of a node-to-node RPC is the common name of its verified
// certificate (transport sets Request.Peer and Stream.Peer from the TLS
// state, never from a body). Every registered method is first gated by
// memberGate (transport Config.Authorize): that name must be a member
// gossip sees alive or suspect. A certificate for a name gossip does not
// know, or for a member that failed or left, calls nothing (403-like code
// "forbidden"). The name also binds the other way: a node starts only with
// a certificate for its own -node name, and the TLS probe
// (transport.ProbeAs) marks a member whose certificate names another node
// refused, like a foreign CA, so nothing is routed to it. Then, per method:
//
//	method                      who may call (C: the request's cluster)
//	consensus.apply             a node of C: any key but the reserved
//	                            \x00meshgw/ ones (never over RPC); a node of
//	                            another cluster: ordinary keys only (service
//	                            writes, runs: its API forwards them after
//	                            C's own ACL check, trust2), never a restore
//	                            nor a key under acl/ (a token of C is minted
//	                            or revoked only through a node of C)
//	consensus.read              any member (the forwarding API checks C's
//	                            ACLs; token records hold hashes, not secrets)
//	consensus.info              any member; a bootstrap proposal only from
//	                            its initiator (From must be the caller), a
//	                            node of C
//	consensus.join[-non-voting] a node of C; a join that would replace (drop)
//	                            a replica this node holds also needs another
//	                            host of C's group to read the membership
//	                            linearizably and find the old replica removed
//	                            and the new one added (else refused; the
//	                            removed replica then finds out by itself)
//	consensus.membership        a node of C (read-only; only they ask)
//	dispatch.exec               any member: a run of C may be dispatched by
//	                            any node serving C's API. The runner serves
//	                            only services of its own cluster and runs
//	                            only what its cluster's state defines: the
//	                            command, env, dir, user, timeout, source and
//	                            secrets list must match its own read of the
//	                            definition, the input its decorator (else
//	                            refused, nothing runs; dispatch/verify.go).
//	                            The request carries the values of the
//	                            service's secrets (secrets.go): only the
//	                            attempt's runner gets them, over this
//	                            mutual-TLS link, from the driving node
//	dispatch.http               any member. Not checked yet: the upstream
//	                            comes from the caller, so a member can make
//	                            a runner send requests where it chooses
//	dispatch.watch              any member (output of a run it names by ID)
//	node.tls-issuers            any member (public certificates)
//	cache.*                     a node of this node's cluster, alive or
//	                            suspect (cache.Config.MayCall): gets, puts,
//	                            purge records, the cleanup pass (fenced by
//	                            the role's term) and figures of the response
//	                            cache; a put stores what a peer says, which a
//	                            member is trusted with as with proxying
//	routing.health              a live member of this node's own cluster
//	                            (health verdicts on its services' upstreams;
//	                            bounded, one report per sender per 50 ms)
//	centrallog.ship, .replica,  a live node of the local cluster (gossip):
//	.member, .query             entries, the log shard's membership and
//	                            queries stay inside the cluster (the
//	                            entries hold client IPs and accessors)
//	throttle.ask, .usage        a node of this node's own cluster (the
//	                            manager's grants are that cluster's budget);
//	                            an ask must name its caller (throttle.Manager)
//
// Why not only nodes of C for consensus.apply: a request for cluster C is
// authorized by C's ACL state on whichever node receives it
// (node/httpapi's package comment), and that node forwards the write. The
// receiving replica cannot re-check the client's token (the secret stays
// with the API node), so it trusts a mesh member for ordinary data and
// keeps to C's own nodes what makes or unmakes authority: the ACL keys and
// a whole-state restore. With a CA derived from -encrypt, the gossip key
// mints any certificate and gossip tag, so the key is the whole secret;
// per-node certificates from -ca-file make the names above meaningful.
package node
