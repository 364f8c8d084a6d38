package centrallog

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cockroachdb/pebble"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// Keys of the log shard's pebble database.
var (
	keyMeta     = []byte("m")
	prefixEntry = []byte("e") // e + seq (8 bytes, big endian) → entry JSON
	prefixID    = []byte("i") // i + entry id → seq
)

func entryKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = 'e'
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func idKey(id string) []byte { return append([]byte{'i'}, id...) }

// meta is the log shard's bookkeeping, written with every update.
type meta struct {
	Applied uint64 `json:"applied"` // Raft index of the last applied entry
	Next    uint64 `json:"next"`    // seq the next stored entry gets
	Head    uint64 `json:"head"`    // seq of the oldest stored entry
	Count   uint64 `json:"count"`   // entries stored
	Bytes   uint64 `json:"bytes"`   // bytes of entries stored
	// Syslog is the seq of the last entry the syslog forwarder had
	// delivered when it last reported (0: none).
	Syslog uint64 `json:"syslog"`
}

// Commands proposed to the log shard.
const (
	opAppend = "append"
	opTrim   = "trim"
	opSyslog = "syslog"
)

type command struct {
	Op      string            `json:"op"`
	Entries []json.RawMessage `json:"entries,omitempty"`
	// Trim: drop the oldest entries while one is older than Before, or
	// more than MaxCount / MaxBytes are stored (0: no bound).
	Before   time.Time `json:"before,omitzero"`
	MaxCount uint64    `json:"max_count,omitempty"`
	MaxBytes uint64    `json:"max_bytes,omitempty"`
	// Syslog: the forwarder's new position.
	Syslog uint64 `json:"syslog,omitempty"`
}

// entryHead is what the state machine reads of an entry.
type entryHead struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
}

// logSM is the log shard's on-disk state machine: entries in pebble, in
// the order the shard applied them, each ID once.
type logSM struct {
	dir string
	db  *pebble.DB
}

func newLogSM(dir string) *logSM { return &logSM{dir: dir} }

type quietPebble struct{}

func (quietPebble) Infof(string, ...interface{}) {}
func (quietPebble) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("central log store: pebble: "+format, args...))
}

func (s *logSM) Open(<-chan struct{}) (uint64, error) {
	db, err := pebble.Open(s.dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		return 0, fmt.Errorf("central log store: open %s: %w", s.dir, err)
	}
	s.db = db
	m, err := s.meta()
	if err != nil {
		return 0, err
	}
	return m.Applied, nil
}

func (s *logSM) meta() (meta, error) {
	m := meta{Next: 1, Head: 1}
	v, c, err := s.db.Get(keyMeta)
	if errors.Is(err, pebble.ErrNotFound) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("central log store: read meta: %w", err)
	}
	defer c.Close()
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("central log store: decode meta: %w", err)
	}
	return m, nil
}

func (s *logSM) Update(ents []sm.Entry) ([]sm.Entry, error) {
	m, err := s.meta()
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	seen := map[string]bool{}
	for i := range ents {
		var cmd command
		if err := json.Unmarshal(ents[i].Cmd, &cmd); err != nil {
			// A command this version cannot read changes nothing; the
			// proposer sees result 0.
			m.Applied = ents[i].Index
			continue
		}
		var added uint64
		switch cmd.Op {
		case opAppend:
			for _, raw := range cmd.Entries {
				var h entryHead
				if json.Unmarshal(raw, &h) != nil || h.ID == "" || seen[h.ID] {
					continue
				}
				seen[h.ID] = true
				if _, c, err := s.db.Get(idKey(h.ID)); err == nil {
					c.Close()
					continue
				} else if !errors.Is(err, pebble.ErrNotFound) {
					return nil, fmt.Errorf("central log store: %w", err)
				}
				var sv [8]byte
				binary.BigEndian.PutUint64(sv[:], m.Next)
				_ = b.Set(entryKey(m.Next), raw, nil)
				_ = b.Set(idKey(h.ID), sv[:], nil)
				m.Next++
				m.Count++
				m.Bytes += uint64(len(raw))
				added++
			}
		case opTrim:
			n, err := s.trim(b, &m, cmd)
			if err != nil {
				return nil, err
			}
			added = n
		case opSyslog:
			if cmd.Syslog > m.Syslog {
				m.Syslog = cmd.Syslog
			}
		}
		m.Applied = ents[i].Index
		ents[i].Result = sm.Result{Value: added}
	}
	mb, _ := json.Marshal(m)
	_ = b.Set(keyMeta, mb, nil)
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("central log store: commit: %w", err)
	}
	return ents, nil
}

// trim drops entries from the head (within batch b, whose own writes it
// cannot see: it reads the db, which holds everything before this update
// call; entries appended in the same call are never the oldest unless
// the store was empty, and those are trimmed by the next pass).
func (s *logSM) trim(b *pebble.Batch, m *meta, cmd command) (uint64, error) {
	it := s.db.NewIter(&pebble.IterOptions{LowerBound: entryKey(m.Head), UpperBound: entryKey(m.Next)})
	defer it.Close()
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		over := (cmd.MaxCount > 0 && m.Count > cmd.MaxCount) || (cmd.MaxBytes > 0 && m.Bytes > cmd.MaxBytes)
		var h entryHead
		_ = json.Unmarshal(it.Value(), &h)
		old := !cmd.Before.IsZero() && h.Time.Before(cmd.Before)
		if !over && !old {
			break
		}
		seq := binary.BigEndian.Uint64(it.Key()[1:])
		_ = b.Delete(entryKey(seq), nil)
		if h.ID != "" {
			_ = b.Delete(idKey(h.ID), nil)
		}
		m.Count--
		m.Bytes -= min(m.Bytes, uint64(len(it.Value())))
		m.Head = seq + 1
		n++
	}
	return n, it.Error()
}

// Lookup answers a scan (see scan) or a statsQuery.
func (s *logSM) Lookup(q interface{}) (interface{}, error) {
	switch q := q.(type) {
	case statsQuery:
		return s.meta()
	case *scan:
		return s.scan(q)
	}
	return nil, fmt.Errorf("central log store: unknown query %T", q)
}

type statsQuery struct{}

// Stored is an entry with its position in the log.
type Stored struct {
	Seq   uint64 `json:"seq"`
	Entry Entry  `json:"entry"`
}

// scan walks the stored entries from After (exclusive), newest first when
// Reverse, and keeps those Match accepts (nil: all), up to Limit; Stop,
// when set, ends the walk at the first entry it returns true for.
type scan struct {
	After   uint64
	Reverse bool
	Limit   int
	Match   func(Entry) bool
	Stop    func(Entry) bool
}

// scanResult is a scan's answer: the entries, and the seq of the newest
// entry stored when the walk began (a cursor past everything seen).
type scanResult struct {
	Entries []Stored
	Last    uint64
}

func (s *logSM) scan(q *scan) (scanResult, error) {
	m, err := s.meta()
	if err != nil {
		return scanResult{}, err
	}
	lo := entryKey(q.After + 1)
	it := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: []byte{'e' + 1}})
	defer it.Close()
	var out []Stored
	ok := it.First()
	if q.Reverse {
		ok = it.Last()
	}
	for ; ok && (q.Limit <= 0 || len(out) < q.Limit); ok = step(it, q.Reverse) {
		var e Entry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			continue
		}
		if q.Stop != nil && q.Stop(e) {
			break
		}
		if q.Match == nil || q.Match(e) {
			out = append(out, Stored{Seq: binary.BigEndian.Uint64(it.Key()[1:]), Entry: e})
		}
	}
	return scanResult{Entries: out, Last: m.Next - 1}, it.Error()
}

func step(it *pebble.Iterator, reverse bool) bool {
	if reverse {
		return it.Prev()
	}
	return it.Next()
}

func (s *logSM) Sync() error { return s.db.LogData(nil, pebble.Sync) }

func (s *logSM) PrepareSnapshot() (interface{}, error) { return s.db.NewSnapshot(), nil }

// SaveSnapshot writes every key of the snapshot: length-prefixed key and
// value pairs.
func (s *logSM) SaveSnapshot(ctx interface{}, w io.Writer, done <-chan struct{}) error {
	snap := ctx.(*pebble.Snapshot)
	defer snap.Close()
	it := snap.NewIter(nil)
	defer it.Close()
	bw := bufio.NewWriter(w)
	var hdr [8]byte
	for ok := it.First(); ok; ok = it.Next() {
		select {
		case <-done:
			return sm.ErrSnapshotStopped
		default:
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(len(it.Key())))
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(it.Value())))
		if _, err := bw.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := bw.Write(it.Key()); err != nil {
			return err
		}
		if _, err := bw.Write(it.Value()); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	return bw.Flush()
}

// maxSnapshotItem bounds one key or value read from a snapshot.
const maxSnapshotItem = 1 << 20

func (s *logSM) RecoverFromSnapshot(r io.Reader, done <-chan struct{}) error {
	if err := s.db.DeleteRange([]byte{0}, []byte{0xff}, pebble.NoSync); err != nil {
		return fmt.Errorf("central log store: clear for snapshot: %w", err)
	}
	br := bufio.NewReader(r)
	b := s.db.NewBatch()
	var hdr [8]byte
	for {
		select {
		case <-done:
			b.Close()
			return sm.ErrSnapshotStopped
		default:
		}
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			break
		} else if err != nil {
			b.Close()
			return fmt.Errorf("central log store: snapshot: %w", err)
		}
		kl, vl := binary.BigEndian.Uint32(hdr[:]), binary.BigEndian.Uint32(hdr[4:])
		if kl > maxSnapshotItem || vl > maxSnapshotItem {
			b.Close()
			return fmt.Errorf("central log store: snapshot item of %d+%d bytes, more than %d", kl, vl, maxSnapshotItem)
		}
		kv := make([]byte, kl+vl)
		if _, err := io.ReadFull(br, kv); err != nil {
			b.Close()
			return fmt.Errorf("central log store: snapshot: %w", err)
		}
		_ = b.Set(kv[:kl], kv[kl:], nil)
		if b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("central log store: snapshot: %w", err)
			}
			b = s.db.NewBatch()
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("central log store: snapshot: %w", err)
	}
	return nil
}

func (s *logSM) Close() error {
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

var _ sm.IOnDiskStateMachine = (*logSM)(nil)
