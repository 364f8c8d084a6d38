// Package centrallog is the cluster's central log: one entry per proxied
// /svc/ request, per run and per administrative change, recorded without
// a Raft write or a network round trip on the request's path, stored once
// for the cluster, queryable from any node.
//
// It imports transport and third-party packages only (dragonboat, pebble);
// node adapts consensus and gossip to the Mesh interface declared here and
// runs RunLogger as the body of the central-logger role (package roles).
//
// # Design
//
// Spool (every node). Record encodes the entry and appends it to a local
// spool: segment files of length+CRC-32C framed records, preallocated and
// mapped (MAP_SHARED), so an append is a copy into the page cache with no
// system call (pwrite where a platform maps none), msynced and fsynced
// every Config.SpoolSync. The request's handler records before it
// returns, so by the time a client has its answer the entry is in the
// kernel: a kill -9 of the serving node loses nothing (a power cut loses
// at most SpoolSync). On open the log ends at the first record whose
// header or CRC does not check (a torn record, a preallocated file's
// zeros), and everything after it is cut.
// The spool is bounded (Config.SpoolBytes of entries not yet
// acknowledged): past it new entries are dropped and counted, never
// blocking a request.
//
// Shipper (every node). One goroutine reads the spool from its
// acknowledged position and sends batches (BatchEntries, BatchBytes) over
// RPC (centrallog.ship) to the active logger, found through the role's
// fence record. A batch that is not full waits until ShipDelay has passed
// since the previous one (the first after a quiet spell goes at once):
// a proposal costs every replica far more than the entries in it. It
// waits on the spool's byte count, not on reads: one read (a copy out of
// the mapping) per batch, at most one wake-up by appends. The
// acknowledged position is advanced (and fully acknowledged segments
// deleted) only after the logger answered that the log shard committed
// the batch; any error means "send it again", to
// whichever node is active by then.
//
// Store (the log shard). Entries live in a Raft shard of their own per
// cluster, on the same dragonboat NodeHost as the state group but with
// its own log, elections and on-disk state machine (logSM, pebble in
// Dir/store-<replica>, without a write-ahead log of its own: the Raft log
// is one, see logSM.Open). Its ID (ShardID) puts it on other dragonboat
// step, commit and apply workers and another log DB partition than the
// state group, so the state group's writes never queue behind log
// traffic or share its fsyncs. A shipped batch is binary (encodeBatch:
// the spool's records with their positions) and the logger proposes it
// as it is, snappy-compressed by dragonboat; the state
// machine stores the new records of one batch as one chunk (key c+seq of
// its first entry), so storing costs one pebble write per batch, and it
// keeps per spool (node and spool incarnation) the highest position
// stored: a resent record is skipped, so the shipper's retries (at least
// once) never show as duplicates. Queries are linearizable reads
// (ReadIndex) of a local replica, or go to the active logger from a node
// without one.
//
// Membership. The active logger (RunLogger, on the state group's leader)
// creates the shard once: it writes a creation record (the initial member
// map: the state group's voters then) into the state group through its
// fence, then tells every initial member to start its replica with that
// same map. A logger that takes over mid-way reads the record and
// finishes the same creation, so no second shard can be born. After that
// it keeps the shard's voters equal to the state group's voters, one
// change per tick: a voter missing from the shard is added (fresh replica
// ID) and told to join; a shard member whose node is no longer a voter is
// removed. Each node records its replica in Dir/replica.json and restarts
// it from there.
//
// # Why nothing answered is lost
//
//   - An entry leaves the spool only after a logger replied that the
//     proposal holding it committed, that is, reached a majority of the
//     log shard's voters' Raft logs (fsynced by dragonboat). Killing the
//     logger at any point before that reply leaves the entry in the
//     spool; the shipper resends it to the next logger. Killing it after
//     the commit but before the reply also resends it: its spool
//     position is at or below the one stored for its spool, so the copy
//     is dropped.
//   - Killing the serving node after it answered: the entry is in its
//     spool file's pages in the kernel (the copy into the mapping ended
//     before the handler did); on restart
//     the spool is reopened at its acknowledged position and shipped.
//   - A committed entry survives the loss of any minority of the log
//     shard, like any Raft write; the shard's voters are the state
//     group's, so the two groups lose quorum together, not separately.
//   - A deposed logger cannot store anything the new one misses: both
//     propose to the same shard, whose log orders everything.
//
// Bounded memory: the spool and the store are on disk; a batch is at most
// BatchBytes; a query returns at most MaxLimit entries (KPIs walk at most
// the window's entries).
//
// # Retention
//
// The active logger proposes a trim every RetentionEvery: the oldest
// chunks go while the newest entry of one is older than Retention.MaxAge
// or more than MaxCount / MaxBytes are stored (a chunk is one shipped
// batch, at most BatchEntries). The trim runs in the state machine, so
// every replica drops the same entries.
//
// # Syslog
//
// With Config.Syslog (tcp://host:port) the active logger forwards stored
// entries in store order as RFC 5424 messages with octet-counting framing
// (RFC 6587). Its position (the seq of the last entry written to the
// socket) is proposed to the log shard after each written batch; a new
// logger resumes from the stored position, so nothing is skipped across a
// failover (entries of the last unreported batch may be sent twice).
package centrallog
