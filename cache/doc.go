// Package cache is the replicated response cache of http services: the
// cache agent every node runs, and the cache-cleanup role's pass.
//
// cache imports transport only (for its error codes). It declares what it
// needs: the cluster's members (Config.Members, from gossip), a Caller for
// node-to-node calls (the QUIC transport), and Epochs, the purge records
// in the cluster's Raft group; node adapts gossip, transport and
// consensus to them and hooks Cache.Serve around the /svc/ proxy, so the
// API listener and the -proxy data plane both go through it.
//
// # Keys, freshness, bounds
//
// A key is the service, method, path, query and the values of the
// policy's vary headers (KeyOf); its 128-bit SHA-256 prefix is the entry
// ID. Only the policy's methods are cached (GET and HEAD by default), a
// request with a body, a Range, or (pass_authorization services) an
// Authorization header is not. A response is stored when its status is
// one RFC 9111 lets a cache keep by default (200, 203, 204, 300, 301,
// 404, 410), it carries no Set-Cookie, Cache-Control has none of
// no-store, private, no-cache, its Vary names only headers of the key,
// and its body, complete, fits max_entry_bytes. It is fresh for the
// policy's ttl, shortened by s-maxage (else max-age) when the upstream
// says less: ttl is the operator's upper bound, as in HAProxy's cache.
// With stale_if_error, an expired entry answers (X-Cache: STALE) for that
// long when the upstream fails (a 5xx, or no answer). Each node holds at
// most Config.MaxBytes of copies, least recently used out first.
//
// # Placement: two live owners per key
//
// The owners of an ID are the Replicas (2) live members of the cluster
// with the highest rendezvous score hash(ID, name): every node computes
// the same owners from the same gossip view, and a member's death moves
// only the keys it owned. A fill writes the entry to both owners; a hit
// is served by any node, from its own copy when it holds one (as an
// owner, or kept from before the view changed until the cleanup pass
// moves it), else by asking the owners in order (a call that fails puts that owner in a
// 5 s penalty box, so a killed owner costs one CallTimeout per node, not
// one per request). A hit found at the second owner is written back to
// the first (read repair). When the live members change, the cleanup
// role's next pass makes every node copy each entry it holds to the
// entry's current owners (those that lack it, by a have-check) and drop
// the copies it no longer owns, only once the new owners have them. So a
// kill -9 of one node loses no entry: the other owner still has it, and
// serves it while the role copies it to the new second owner.
//
// A node that is not an owner keeps the copy an owner sent it for a
// second at most (nearTTL), in a small store of its own (a sixteenth of
// MaxBytes): a hot key is then answered there as on an owner, not with a
// call per request. A near copy is checked as any copy (the purge record,
// the definition version, freshness) and dropped by purges, so the purge
// argument below holds for it unchanged; it is not counted in the node's
// entries, nor moved by the cleanup pass.
//
// A hit looks its entry up by the key's text, built on the stack (no
// digest, no allocation), and a writer that is a StoredWriter (the data
// plane's) takes the entry's header fields as the bytes stored with it.
//
// # One miss for the mesh
//
// Misses are coalesced twice. On a node, concurrent requests for one key
// wait for the first (localFlight). Across nodes, the first owner (the
// primary) hands one fill lease per key: the first node that asks for a
// key it lacks gets the lease and goes upstream; a node that asks while
// the lease is held waits at the primary (MethodWait, at most FillWait)
// for the fill's put, and is answered with the entry. A fill that cannot
// be stored gives the lease back (its waiters go upstream themselves); a
// lease not resolved within FillWait lapses. A primary that cannot be
// reached grants nothing: the node goes upstream on its own, so a dead
// owner costs coalescing, never availability.
//
// # Purge that means it
//
// Each service has an EpochRecord in the group: a counter raised by one
// per purge, a base and the purged prefixes with the counter they were
// purged at. A fill is stamped with the counter its node knew when it
// started; an entry is served only if its stamp survives the record
// (Valid: at least the base, and at least each purged prefix of its path)
// and its definition version is the one the serving node has (so a
// changed definition purges its entries too).
//
// Every node reads the records linearizably every Refresh and remembers
// the start time s of its last successful read. It serves hits (and
// fills) only while now - s < Confirm; otherwise it proxies every request
// (X-Cache: MISS). A purge (Purge) commits the raised record at some time
// T, then sends it to every live member, which applies it (drops what it
// purges) and acknowledges. It returns at once when every member gossip
// knows acknowledged; otherwise (a member suspect, failed or silent) it
// also waits until Tr + 1.1 × Confirm, Tr >= T being when the commit was
// acknowledged to it. Why no node serves a purged entry after that:
//
//   - A node that acknowledged holds the new record: stamps under it are
//     refused, and it dropped its purged copies.
//   - Any other node N serving at time t >= Tr + Confirm has a read that
//     started at s > t - Confirm >= Tr >= T. A linearizable read started
//     after the commit returns the new record, so N refuses the old
//     stamps as well.
//   - A fill that started before N learned the record carries the old
//     counter, and is refused wherever it lands; copies fetched from an
//     owner are checked against the serving node's own record.
//
// The argument assumes clocks that advance at about the same rate and a
// node not paused between its check and its write longer than the margin
// (0.1 × Confirm), as the roles lease does. A node that cannot reach a
// quorum stops serving hits within Confirm: hits are worth less than a
// purge that lies.
//
// # Who may call the RPC methods
//
// Every method (Methods) is for members of this node's cluster only
// (Config.MayCall, over the transport's member gate): a put stores what a
// peer says, which a mesh member is trusted with as it is trusted with
// proxying. The cleanup pass carries the role's fence (its Raft term): a
// node refuses a pass of an older fence than one it has seen.
package cache
