// Package fsm is the deterministic state machine replicated by each Raft
// group: an ordered, versioned key/value map with atomic multi-op commands
// and compare-and-set, plus its command codec and snapshot format.
//
// Update reads nothing but the entry it is given: no clock, no randomness,
// no I/O. Proposers stamp times and IDs into the values they write. User
// errors (a failed compare-and-set) are results, not errors.
//
// Every command and restore may carry a proposal ID drawn by its proposer.
// The state machine remembers the IDs it applied recently with their
// results (the newest 65,536 at least, twice that at most, bounded in bytes
// too; forgotten in log order, so every replica keeps the same ones; saved
// in its snapshots): an ID seen again is answered with its first result and
// changes nothing. That is what makes it safe for a proposer to re-propose
// an entry whose outcome it does not know, or to forward it to another
// replica. Changing the bounds changes what replicas decide, so it needs a
// new entry format.
package fsm
