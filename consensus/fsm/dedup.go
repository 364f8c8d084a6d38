package fsm

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ProposalID names one proposal (a command, or a restore) for its whole
// life: the proposer draws it once, at the entry point, and every
// re-proposal and forward of it carries the same ID, so the state machine
// applies it at most once however often it reaches the log. The zero ID is
// "none" (entries written before IDs existed): such an entry is applied
// every time it is in the log, and its proposer must never re-propose it.
type ProposalID [16]byte

// NewProposalID draws a random ID (for proposers; Update never draws one).
func NewProposalID() ProposalID {
	var id ProposalID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	return id
}

// IsZero reports whether id is the zero ID (none).
func (id ProposalID) IsZero() bool { return id == ProposalID{} }

func (id ProposalID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText encodes id as 32 hex digits.
func (id ProposalID) MarshalText() ([]byte, error) {
	return []byte(hex.EncodeToString(id[:])), nil
}

// UnmarshalText decodes 32 hex digits.
func (id *ProposalID) UnmarshalText(b []byte) error {
	if len(b) != 2*len(id) {
		return fmt.Errorf("%w: proposal ID of %d hex digits, want %d", ErrBadCommand, len(b), 2*len(id))
	}
	if _, err := hex.Decode(id[:], b); err != nil {
		return fmt.Errorf("%w: proposal ID: %v", ErrBadCommand, err)
	}
	return nil
}

// The dedup table's bounds. A proposer re-proposes within one operation
// (bounded by the caller's context, a few seconds: OpTimeout is 5 s by
// default), so the table must cover the commands applied in that time. It
// is kept in two generations: new IDs go to the current one; once that
// holds dedupGenEntries IDs (or dedupGenBytes of results) it becomes the
// previous one and the one before is dropped whole. So the newest 65,536
// IDs at least are always remembered, about 20 s at this machine's best
// batched write rate (about 3k/s), and at most twice that. Dropping a
// generation whole, rather than one ID per new one, keeps the map free of
// deleted slots, which made every insert probe long chains (3× the cost of
// an apply). Both bounds count only what every replica sees alike, so
// every replica forgets the same IDs at the same entry.
const (
	dedupGenEntries = 1 << 16
	dedupGenBytes   = 8 << 20
)

// dedupGen is one generation: the IDs, in the order they were applied, and
// their results, encoded one after another (no pointers for the GC to
// scan; a result is decoded only for a duplicate, which is rare).
type dedupGen struct {
	byID    map[ProposalID]uint32 // offset of the ID's result in results
	order   []ProposalID
	results []byte
}

func newGen() dedupGen { return dedupGen{byID: map[ProposalID]uint32{}} }

// fullGen is a generation sized for dedupGenEntries at once: one that
// replaces a full one will fill up too, and growing a map is most of the
// cost of filling it.
func fullGen() dedupGen {
	return dedupGen{byID: make(map[ProposalID]uint32, dedupGenEntries), order: make([]ProposalID, 0, dedupGenEntries)}
}

// dedup remembers the IDs of the proposals applied most recently, with
// their results. It is part of the replicated state: it is changed only by
// Update (deterministically, in log order) and travels in dragonboat
// snapshots, so a replica restored from a snapshot decides every later
// duplicate as one that applied the whole log.
type dedup struct {
	cur, prev dedupGen
}

func newDedup() *dedup { return &dedup{cur: newGen(), prev: newGen()} }

func (d *dedup) len() int { return len(d.cur.order) + len(d.prev.order) }

// get returns the result id was first applied with.
func (d *dedup) get(id ProposalID) (Result, bool) {
	g := &d.cur
	off, ok := g.byID[id]
	if !ok {
		g = &d.prev
		if off, ok = g.byID[id]; !ok {
			return Result{}, false
		}
	}
	dec := decoder{b: g.results[off:]}
	return dec.result(), true
}

// add records id (not already present) with its result.
func (d *dedup) add(id ProposalID, res Result) {
	if len(d.cur.order) >= dedupGenEntries || len(d.cur.results) >= dedupGenBytes {
		d.prev, d.cur = d.cur, fullGen()
	}
	d.cur.byID[id] = uint32(len(d.cur.results))
	d.cur.order = append(d.cur.order, id)
	d.cur.results = appendResult(d.cur.results, res)
}
