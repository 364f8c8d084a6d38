package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// OpType is what an Op does.
type OpType string

// Op types.
const (
	OpPut    OpType = "put"
	OpDelete OpType = "delete"
)

// Op is one write. CAS nil: unconditional; 0: the key must not exist; N: the
// key's version must be N.
type Op struct {
	Type  OpType  `json:"t"`
	Key   string  `json:"k"`
	Value []byte  `json:"v,omitempty"`
	CAS   *uint64 `json:"c,omitempty"`
}

// Command is applied atomically: every CAS is checked before any write.
// ID (zero: none) names the proposal: a command whose ID was applied
// recently is answered with its first result instead (StateMachine.Update).
type Command struct {
	ID  ProposalID `json:"id,omitzero"`
	Ops []Op       `json:"ops"`
}

// Result is a command's outcome. A failed CAS is a Result (Conflict), not
// an error: user errors are data.
type Result struct {
	Revision    uint64   `json:"rev"`
	Conflict    bool     `json:"conflict,omitempty"`
	ConflictKey string   `json:"conflict_key,omitempty"`
	Versions    []uint64 `json:"versions,omitempty"` // new version per op (0 for deletes)
}

// Item is one stored key.
type Item struct {
	Key           string `json:"k"`
	Value         []byte `json:"v"`
	Version       uint64 `json:"ver"`
	CreateVersion uint64 `json:"cver"`
}

// ListQuery selects keys.
type ListQuery struct {
	Prefix  string            `json:"prefix,omitempty"`
	After   string            `json:"after,omitempty"` // exclusive, in iteration order
	Limit   int               `json:"limit,omitempty"` // 0: MaxList
	Reverse bool              `json:"reverse,omitempty"`
	Match   map[string]string `json:"match,omitempty"` // equality on top-level JSON string fields
	// MaxBytes, when positive, ends the answer before the item that would
	// take its values past this many bytes (the first item always comes),
	// so a page's memory and a forwarded answer's frame stay bounded.
	MaxBytes int `json:"max_bytes,omitempty"`
}

// Bounds the state machine enforces on what it is given.
const (
	MaxKeyLen   = 512
	MaxValueLen = 4 << 20
	MaxOps      = 1024
	MaxList     = 10000
)

// Errors.
var (
	// ErrBadSnapshot: a snapshot blob that cannot be restored.
	ErrBadSnapshot = errors.New("fsm: bad snapshot")
	// ErrBadCommand: an entry that does not decode or breaks the bounds.
	ErrBadCommand = errors.New("fsm: bad command")
)

// Store is the replicated key/value state: a sorted key list and a map.
// It is not safe for concurrent use; dragonboat serializes Update and
// Lookup for a regular state machine.
type Store struct {
	rev   uint64
	items map[string]*Item
	keys  []string // sorted
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{items: map[string]*Item{}} }

// Revision is the store's revision counter.
func (s *Store) Revision() uint64 { return s.rev }

// Len is the number of keys.
func (s *Store) Len() int { return len(s.keys) }

// Get returns a copy of key's item.
func (s *Store) Get(key string) (Item, bool) {
	it, ok := s.items[key]
	if !ok {
		return Item{}, false
	}
	return *it, true
}

// Validate checks a command's bounds.
func (c Command) Validate() error {
	if len(c.Ops) == 0 || len(c.Ops) > MaxOps {
		return fmt.Errorf("%w: %d ops (want 1-%d)", ErrBadCommand, len(c.Ops), MaxOps)
	}
	for _, op := range c.Ops {
		if op.Type != OpPut && op.Type != OpDelete {
			return fmt.Errorf("%w: op type %q", ErrBadCommand, op.Type)
		}
		if op.Key == "" || len(op.Key) > MaxKeyLen {
			return fmt.Errorf("%w: key of %d bytes", ErrBadCommand, len(op.Key))
		}
		if len(op.Value) > MaxValueLen {
			return fmt.Errorf("%w: value of %d bytes", ErrBadCommand, len(op.Value))
		}
	}
	return nil
}

// Apply applies cmd atomically. It is deterministic: it reads nothing but
// the store and cmd.
func (s *Store) Apply(cmd Command) Result {
	for _, op := range cmd.Ops {
		if op.CAS == nil {
			continue
		}
		it, ok := s.items[op.Key]
		if (*op.CAS == 0 && ok) || (*op.CAS != 0 && (!ok || it.Version != *op.CAS)) {
			return Result{Revision: s.rev, Conflict: true, ConflictKey: op.Key}
		}
	}
	res := Result{Versions: make([]uint64, len(cmd.Ops))}
	for i, op := range cmd.Ops {
		switch op.Type {
		case OpPut:
			s.rev++
			if it, ok := s.items[op.Key]; ok {
				it.Value = append([]byte(nil), op.Value...)
				it.Version = s.rev
			} else {
				s.items[op.Key] = &Item{Key: op.Key, Value: append([]byte(nil), op.Value...), Version: s.rev, CreateVersion: s.rev}
				s.insertKey(op.Key)
			}
			res.Versions[i] = s.rev
		case OpDelete:
			if _, ok := s.items[op.Key]; ok {
				s.rev++
				delete(s.items, op.Key)
				s.removeKey(op.Key)
			}
		}
	}
	res.Revision = s.rev
	return res
}

func (s *Store) insertKey(k string) {
	i := sort.SearchStrings(s.keys, k)
	s.keys = append(s.keys, "")
	copy(s.keys[i+1:], s.keys[i:])
	s.keys[i] = k
}

func (s *Store) removeKey(k string) {
	i := sort.SearchStrings(s.keys, k)
	if i < len(s.keys) && s.keys[i] == k {
		s.keys = append(s.keys[:i], s.keys[i+1:]...)
	}
}

// List returns copies of the items q selects.
func (s *Store) List(q ListQuery) []Item {
	limit := q.Limit
	if limit <= 0 || limit > MaxList {
		limit = MaxList
	}
	lo := sort.SearchStrings(s.keys, q.Prefix)
	hi := len(s.keys)
	if q.Prefix != "" {
		hi = lo + sort.Search(len(s.keys)-lo, func(i int) bool { return !strings.HasPrefix(s.keys[lo+i], q.Prefix) && s.keys[lo+i] > q.Prefix })
	}
	var out []Item
	size := 0
	visit := func(k string) bool {
		it := s.items[k]
		if len(q.Match) > 0 && !matches(it.Value, q.Match) {
			return true
		}
		if q.MaxBytes > 0 && len(out) > 0 && size+len(it.Value) > q.MaxBytes {
			return false
		}
		out = append(out, *it)
		size += len(it.Value)
		return len(out) < limit
	}
	if !q.Reverse {
		start := lo
		if q.After != "" {
			start = max(lo, sort.Search(len(s.keys), func(i int) bool { return s.keys[i] > q.After }))
		}
		for i := start; i < hi; i++ {
			if !visit(s.keys[i]) {
				break
			}
		}
	} else {
		end := hi - 1
		if q.After != "" {
			end = min(hi-1, sort.SearchStrings(s.keys, q.After)-1)
		}
		for i := end; i >= lo; i-- {
			if !visit(s.keys[i]) {
				break
			}
		}
	}
	return out
}

// matches reports whether value is a JSON object whose top-level string
// fields equal every entry of want.
func matches(value []byte, want map[string]string) bool {
	var obj map[string]json.RawMessage
	if json.Unmarshal(value, &obj) != nil {
		return false
	}
	for k, v := range want {
		raw, ok := obj[k]
		if !ok {
			return false
		}
		var s string
		if json.Unmarshal(raw, &s) != nil || s != v {
			return false
		}
	}
	return true
}

// snapshot format: a version line, then the revision and the items.
const snapshotVersion = 1

type snapshot struct {
	Version  int    `json:"format"`
	Revision uint64 `json:"revision"`
	Items    []Item `json:"items"`
}

// Save writes the whole state.
func (s *Store) Save(w io.Writer) error {
	snap := snapshot{Version: snapshotVersion, Revision: s.rev, Items: make([]Item, 0, len(s.keys))}
	for _, k := range s.keys {
		snap.Items = append(snap.Items, *s.items[k])
	}
	return json.NewEncoder(w).Encode(snap)
}

// Export returns the whole state as a snapshot blob.
func (s *Store) Export() []byte {
	var b bytes.Buffer
	_ = s.Save(&b)
	return b.Bytes()
}

// Load replaces the state with a snapshot, binary or JSON. The dedup
// table of a version-3 binary snapshot is not the store's and is dropped.
func (s *Store) Load(r io.Reader) error {
	_, err := s.load(r)
	return err
}

// load replaces the state with a snapshot and returns its dedup table
// (nil unless it is a version-3 binary snapshot).
func (s *Store) load(r io.Reader) (*dedup, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	var snap snapshot
	var d *dedup
	if rest, ok := bytes.CutPrefix(data, snapshotMagicV3); ok {
		if snap, d, err = decodeBinarySnapshot(rest, true); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
	} else if rest, ok := bytes.CutPrefix(data, snapshotMagic); ok {
		if snap, _, err = decodeBinarySnapshot(rest, false); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
	} else if err := json.Unmarshal(data, &snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return d, s.setSnapshot(snap)
}

func (s *Store) setSnapshot(snap snapshot) error {
	if snap.Version != snapshotVersion {
		return fmt.Errorf("%w: format %d, want %d", ErrBadSnapshot, snap.Version, snapshotVersion)
	}
	items := make(map[string]*Item, len(snap.Items))
	keys := make([]string, 0, len(snap.Items))
	for i := range snap.Items {
		it := snap.Items[i]
		if it.Key == "" || it.Version > snap.Revision {
			return fmt.Errorf("%w: item %q at version %d > revision %d", ErrBadSnapshot, it.Key, it.Version, snap.Revision)
		}
		if _, dup := items[it.Key]; dup {
			return fmt.Errorf("%w: duplicate key %q", ErrBadSnapshot, it.Key)
		}
		items[it.Key] = &it
		keys = append(keys, it.Key)
	}
	sort.Strings(keys)
	s.rev, s.items, s.keys = snap.Revision, items, keys
	return nil
}

// ValidateSnapshot checks that blob can be restored.
func ValidateSnapshot(blob []byte) error {
	return NewStore().Load(bytes.NewReader(blob))
}
