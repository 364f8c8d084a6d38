// Package roles runs singleton management roles (retention, the scheduler,
// and next the throttle manager, central logger, cache cleanup): one active instance per
// cluster, the other voters of the cluster's Raft group standing by.
//
// roles imports no other meshgw package. It declares what it needs:
// Leadership (does this node lead a cluster's group, in which Raft term,
// and a channel closed at the next change) and Store (a versioned get and
// a compare-and-set put on the group); node adapts consensus to both.
//
// # Who is active
//
// The active instance of every role of a cluster runs on the leader of the
// cluster's group. Its fence is the leader's term. Role.Run gets a context
// that ends the moment this node sees that it no longer leads in that term
// (the leader-change notification, and a poll every Config.Poll as a net
// under it), and the Fence.
//
// # No overlap: the lease
//
// A new leader starts its roles only Config.Lease (by default three
// election timeouts) after it saw itself elected. The old leader cannot
// act that long:
//
//   - The new leader B was elected at tB by a quorum Q of voters, each of
//     which had moved to the new term before tB. From then on a voter of Q
//     answers the old leader A only with the higher term, which makes A step
//     down at once, so after tB at most a minority keeps A's term alive.
//   - A runs CheckQuorum every election timeout ET and steps down when fewer
//     than a quorum were heard from in the last ET. The first check after
//     tB may still count messages from before tB; the second, by tB + 2ET,
//     looks only at time after tB and fails. So A steps down by tB + 2ET,
//     and its leader-change notification cancels its roles' contexts.
//   - B saw itself elected at or after tB and waits Lease >= 2ET plus a
//     margin (the notification, the role's own return) before it starts.
//
// The argument rests on time passing at about the same rate on every node
// and on A not being paused (SIGSTOP, a long GC) past the margin. The
// fence covers that case for writes: before it starts, each activation
// writes the role's fence key, FenceKey(role), with its term, node and
// start time, by compare-and-set (refused when the key holds a higher
// term). Writes a role makes through Fence.Guard carry a compare-and-set
// on that key's version in the same command, so once B has claimed the
// key, every guarded write of A's conflicts and A's role is cancelled with
// ErrFenced, however late A wakes up.
//
// An activation re-reads its fence key every Config.Verify as well, and
// one fenced out while its node still leads claims the role again: a
// snapshot restore replaces the key (node drops the restored records,
// whose terms belong to another mesh), and the role must come back in the
// same term. A record of a later term is never overwritten.
//
// Decisions a role hands to other nodes rather than writes to the group
// (the throttle manager's grants, next) carry Fence.Term: a receiver keeps
// the highest fence it has seen and refuses anything under it.
//
// # What is shown
//
// Manager.Active reports the roles active here (term, since: the time the
// fence key was written, after the lease). The fence key is readable from
// any node, so a node that does not lead (or holds no replica) shows the
// active instance from it and the current leader's term from its own Raft
// status: a key older than the leader's term means the hand-over is under
// way (the new leader is waiting out its lease).
package roles
