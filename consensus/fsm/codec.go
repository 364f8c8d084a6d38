package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Entry encoding: one format byte, one kind byte, then the payload: JSON in
// format 1 (still read, so old logs replay), binary (binary.go) in format 2.
const (
	entryFormatJSON byte = 1
	entryFormat     byte = 2

	kindBatch   byte = 1 // []Command, each applied on its own, results in order
	kindRestore byte = 2 // a snapshot blob replacing the whole state
)

// EncodeBatch encodes commands as one Raft entry.
func EncodeBatch(cmds []Command) ([]byte, error) {
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			return nil, err
		}
	}
	return appendCommands([]byte{entryFormat, kindBatch}, cmds), nil
}

// EncodeRestore encodes a restore of a snapshot blob as one Raft entry.
func EncodeRestore(blob []byte) ([]byte, error) {
	if err := ValidateSnapshot(blob); err != nil {
		return nil, err
	}
	return append([]byte{entryFormat, kindRestore}, blob...), nil
}

// DecodeEntry splits an entry; for a batch it returns the commands.
func DecodeEntry(data []byte) (kind byte, cmds []Command, blob []byte, err error) {
	if len(data) < 2 || (data[0] != entryFormat && data[0] != entryFormatJSON) {
		return 0, nil, nil, fmt.Errorf("%w: entry header", ErrBadCommand)
	}
	switch data[1] {
	case kindBatch:
		var err error
		if data[0] == entryFormatJSON {
			err = json.Unmarshal(data[2:], &cmds)
		} else {
			cmds, err = decodeCommands(data[2:])
		}
		if err != nil {
			return 0, nil, nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
		}
		for _, c := range cmds {
			if err := c.Validate(); err != nil {
				return 0, nil, nil, err
			}
		}
		return kindBatch, cmds, nil, nil
	case kindRestore:
		return kindRestore, nil, data[2:], nil
	}
	return 0, nil, nil, fmt.Errorf("%w: entry kind %d", ErrBadCommand, data[1])
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

// StateMachine is the dragonboat state machine of one group.
type StateMachine struct {
	store   *Store
	applied uint64
}

// AppliedQuery asks a StateMachine (through a stale read) for the index of
// the last entry it applied.
type AppliedQuery struct{}

var _ sm.IStateMachine = (*StateMachine)(nil)

// NewStateMachine is a dragonboat CreateStateMachineFunc.
func NewStateMachine(shardID, replicaID uint64) sm.IStateMachine {
	return &StateMachine{store: NewStore()}
}

// Update applies one entry. A malformed entry is answered with an empty
// result (and changes nothing) rather than failing the replica: the
// proposer validated it, so only a bug or corruption can get here.
func (m *StateMachine) Update(e sm.Entry) (sm.Result, error) {
	m.applied = e.Index
	kind, cmds, blob, err := DecodeEntry(e.Cmd)
	if err != nil {
		return sm.Result{Value: 0}, nil
	}
	switch kind {
	case kindRestore:
		st := NewStore()
		if err := st.Load(bytes.NewReader(blob)); err != nil {
			return sm.Result{Value: 0}, nil
		}
		st.rev = max(st.rev, m.store.rev) + 1
		m.store = st
		return sm.Result{Value: 1}, nil
	}
	results := make([]Result, len(cmds))
	for i, c := range cmds {
		results[i] = m.store.Apply(c)
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

// SaveSnapshot writes the state (binary; RecoverFromSnapshot reads JSON too).
func (m *StateMachine) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return m.store.saveBinary(w)
}

// RecoverFromSnapshot replaces the state.
func (m *StateMachine) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	st := NewStore()
	if err := st.Load(r); err != nil {
		return err
	}
	m.store = st
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
