package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Entry encoding: one format byte, one kind byte, then the payload: JSON in
// format 1 and binary (binary.go) without proposal IDs in format 2, both
// still read so old logs replay; format 3 is binary with a proposal ID per
// command and per restore.
const (
	entryFormatJSON byte = 1
	entryFormatV2   byte = 2
	entryFormat     byte = 3

	kindBatch   byte = 1 // []Command, each applied on its own, results in order
	kindRestore byte = 2 // a snapshot blob replacing the whole state
)

// EncodeBatch encodes commands, with their proposal IDs, as one Raft entry.
func EncodeBatch(cmds []Command) ([]byte, error) {
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	return appendCommands([]byte{entryFormat, kindBatch}, cmds, true), nil
}

// EncodeRestore encodes a restore of a snapshot blob as one Raft entry;
// id (zero: none) makes a re-proposal of it apply once.
func EncodeRestore(id ProposalID, blob []byte) ([]byte, error) {
	if err := ValidateSnapshot(blob); err != nil {
		return nil, err
	}
	return append(appendID([]byte{entryFormat, kindRestore}, id), blob...), nil
}

// entry is a decoded Raft entry.
type entry struct {
	kind      byte
	cmds      []Command // kindBatch
	blob      []byte    // kindRestore
	restoreID ProposalID
}

// DecodeEntry splits an entry; for a batch it returns the commands.
func DecodeEntry(data []byte) (kind byte, cmds []Command, blob []byte, err error) {
	e, err := decodeEntry(data)
	return e.kind, e.cmds, e.blob, err
}

func decodeEntry(data []byte) (entry, error) {
	if len(data) < 2 || (data[0] != entryFormat && data[0] != entryFormatV2 && data[0] != entryFormatJSON) {
		return entry{}, fmt.Errorf("%w: entry header", ErrBadCommand)
	}
	switch data[1] {
	case kindBatch:
		var cmds []Command
		var err error
		if data[0] == entryFormatJSON {
			err = json.Unmarshal(data[2:], &cmds)
		} else {
			cmds, err = decodeCommands(data[2:], data[0] == entryFormat)
		}
		if err != nil {
			return entry{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		for _, c := range cmds {
			if err := c.Validate(); err != nil {
				return entry{}, err
			}
		}
		return entry{kind: kindBatch, cmds: cmds}, nil
	case kindRestore:
		e := entry{kind: kindRestore, blob: data[2:]}
		if data[0] == entryFormat {
			d := decoder{b: data[2:]}
			e.restoreID = d.id()
			if d.err != nil {
				return entry{}, fmt.Errorf("%w: restore entry: %v", ErrBadCommand, d.err)
			}
			e.blob = d.b
		}
		return e, nil
	}
	return entry{}, fmt.Errorf("%w: entry kind %d", ErrBadCommand, data[1])
}

// Query is a read through the state machine.
type Query struct {
	Get    string     `json:"get,omitempty"`
	List   *ListQuery `json:"list,omitempty"`
	Export bool       `json:"export,omitempty"`
}

// QueryResult answers a Query.
type QueryResult struct {
	Item   *Item  `json:"item,omitempty"`
	Items  []Item `json:"items,omitempty"`
	Export []byte `json:"export,omitempty"`
}

// Lookup answers q.
func (s *Store) Lookup(q Query) QueryResult {
	switch {
	case q.Export:
		return QueryResult{Export: s.Export()}
	case q.List != nil:
		return QueryResult{Items: s.List(*q.List)}
	default:
		if it, ok := s.Get(q.Get); ok {
			return QueryResult{Item: &it}
		}
		return QueryResult{}
	}
}

// StateMachine is the dragonboat state machine of one group: the store
// and the table of proposal IDs applied recently (dedup.go).
type StateMachine struct {
	store   *Store
	dedup   *dedup
	applied uint64
}

// AppliedQuery asks a StateMachine (through a stale read) for the index of
// the last entry it applied.
type AppliedQuery struct{}

var _ sm.IStateMachine = (*StateMachine)(nil)

// NewStateMachine is a dragonboat CreateStateMachineFunc.
func NewStateMachine(shardID, replicaID uint64) sm.IStateMachine {
	return &StateMachine{store: NewStore(), dedup: newDedup()}
}

// Update applies one entry. A malformed entry is answered with an empty
// result (and changes nothing) rather than failing the replica: the
// proposer validated it, so only a bug or corruption can get here.
//
// A command or restore whose proposal ID was applied before is not
// applied again: it is answered with its first result. A proposer
// re-proposes an entry whose outcome it does not know (a timeout, a leader
// change) and a forwarding node may send it to another replica, so the
// same command can reach the log twice with other writes in between.
func (m *StateMachine) Update(e sm.Entry) (sm.Result, error) {
	m.applied = e.Index
	ent, err := decodeEntry(e.Cmd)
	if err != nil {
		return sm.Result{Value: 0}, nil
	}
	if m.dedup == nil {
		m.dedup = newDedup()
	}
	switch ent.kind {
	case kindRestore:
		if id := ent.restoreID; !id.IsZero() {
			if _, dup := m.dedup.get(id); dup {
				return sm.Result{Value: 1}, nil
			}
		}
		st := NewStore()
		if err := st.Load(bytes.NewReader(ent.blob)); err != nil {
			return sm.Result{Value: 0}, nil
		}
		st.rev = max(st.rev, m.store.rev) + 1
		m.store = st
		if id := ent.restoreID; !id.IsZero() {
			m.dedup.add(id, Result{Revision: st.rev})
		}
		return sm.Result{Value: 1}, nil
	}
	results := make([]Result, len(ent.cmds))
	for i, c := range ent.cmds {
		if c.ID.IsZero() {
			results[i] = m.store.Apply(c)
			continue
		}
		if r, dup := m.dedup.get(c.ID); dup {
			results[i] = r
			continue
		}
		results[i] = m.store.Apply(c)
		m.dedup.add(c.ID, results[i])
	}
	return sm.Result{Value: 1, Data: encodeResults(results)}, nil
}

// Lookup answers a Query.
func (m *StateMachine) Lookup(q interface{}) (interface{}, error) {
	if _, ok := q.(AppliedQuery); ok {
		return m.applied, nil
	}
	qq, ok := q.(Query)
	if !ok {
		return nil, fmt.Errorf("fsm: unknown query %T", q)
	}
	return m.store.Lookup(qq), nil
}

// SaveSnapshot writes the state and the dedup table (binary, version 3;
// RecoverFromSnapshot reads version 2 and JSON too).
func (m *StateMachine) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	if m.dedup == nil {
		m.dedup = newDedup()
	}
	return m.store.saveBinary(w, m.dedup)
}

// RecoverFromSnapshot replaces the state and the dedup table; a snapshot
// from before the table existed restores an empty one.
func (m *StateMachine) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	st := NewStore()
	d, err := st.load(r)
	if err != nil {
		return err
	}
	if d == nil {
		d = newDedup()
	}
	m.store, m.dedup = st, d
	return nil
}

// Close releases nothing.
func (m *StateMachine) Close() error { return nil }

// DecodeResults decodes a batch's results.
func DecodeResults(data []byte) ([]Result, error) {
	if len(data) > 0 && data[0] == resultsFormat {
		rs, err := decodeResults(data[1:])
		if err != nil {
			return nil, fmt.Errorf("fsm: decode results: %w", err)
		}
		return rs, nil
	}
	var rs []Result
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("fsm: decode results: %w", err)
	}
	return rs, nil
}
