// Package fsm is the deterministic state machine replicated by each Raft
// group: an ordered, versioned key/value map with atomic multi-op commands
// and compare-and-set, plus its command codec and snapshot format.
//
// Update reads nothing but the entry it is given: no clock, no randomness,
// no I/O. Proposers stamp times and IDs into the values they write. User
// errors (a failed compare-and-set) are results, not errors.
package fsm
