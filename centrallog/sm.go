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
	keyMeta = []byte("m")
	// c + seq (8 bytes, big endian) → a chunk: the entries one append
	// stored, the first of them numbered seq.
	prefixChunk = byte('c')
	// h + source → the highest spool position stored from that spool.
	prefixSource = byte('h')
)

func chunkKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixChunk
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

func sourceKey(src string) []byte { return append([]byte{prefixSource}, src...) }

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

// command is a trim or syslog proposal (after its kind byte).
type command struct {
	// Trim: drop the oldest chunks while the newest entry of one is
	// older than Before, or more than MaxCount / MaxBytes are stored
	// (0: no bound).
	Before   time.Time `json:"before,omitzero"`
	MaxCount uint64    `json:"max_count,omitempty"`
	MaxBytes uint64    `json:"max_bytes,omitempty"`
	// Syslog: the forwarder's new position.
	Syslog uint64 `json:"syslog,omitempty"`
}

func encodeCommand(kind byte, c command) []byte {
	b, _ := json.Marshal(c)
	return append([]byte{kind}, b...)
}

// entryTime is what the state machine reads of an entry (for trims).
type entryTime struct {
	Time time.Time `json:"time"`
}

// logSM is the log shard's on-disk state machine: entries in pebble, in
// the order the shard applied them, in chunks of one shipped batch each;
// a record a spool had already shipped (its position at or below the
// highest stored from that spool) is skipped, so a resent batch adds only
// what is new.
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
	// No write-ahead log: the Raft log is one. Applied index and entries
	// go in the same batches, and pebble flushes memtables whole and in
	// order, so what survives a crash is the state at some applied index,
	// and dragonboat replays its log from there. It compacts its log only
	// after a snapshot, and calls Sync (a flush) before every snapshot, so
	// the entries it drops are durable here.
	db, err := pebble.Open(s.dir, &pebble.Options{Logger: quietPebble{}, DisableWAL: true, MemTableSize: 16 << 20})
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

func (s *logSM) sourcePos(src string) (uint64, error) {
	v, c, err := s.db.Get(sourceKey(src))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("central log store: %w", err)
	}
	defer c.Close()
	if len(v) != 8 {
		return 0, errors.New("central log store: corrupt source position")
	}
	return binary.BigEndian.Uint64(v), nil
}

func (s *logSM) Update(ents []sm.Entry) ([]sm.Entry, error) {
	m, err := s.meta()
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	sources := map[string]uint64{} // positions written in this call
	for i := range ents {
		var added uint64
		cmd := ents[i].Cmd
		if len(cmd) == 0 {
			m.Applied = ents[i].Index
			continue
		}
		switch cmd[0] {
		case cmdAppend:
			_, src, recs, err := decodeBatch(cmd)
			if err != nil {
				break // changes nothing; the proposer sees 0
			}
			hw, ok := sources[src]
			if !ok {
				if hw, err = s.sourcePos(src); err != nil {
					return nil, err
				}
			}
			fresh := recs[:0:0]
			for _, r := range recs {
				if r.Pos > hw {
					fresh = append(fresh, r)
					hw = r.Pos
				}
			}
			if len(fresh) == 0 {
				break
			}
			_ = b.Set(chunkKey(m.Next), encodeChunk(fresh), nil)
			var pv [8]byte
			binary.BigEndian.PutUint64(pv[:], hw)
			_ = b.Set(sourceKey(src), pv[:], nil)
			sources[src] = hw
			for _, r := range fresh {
				m.Bytes += uint64(len(r.Data))
			}
			added = uint64(len(fresh))
			m.Next += added
			m.Count += added
		case cmdTrim:
			var c command
			if json.Unmarshal(cmd[1:], &c) != nil {
				break
			}
			n, err := s.trim(b, &m, c)
			if err != nil {
				return nil, err
			}
			added = n
		case cmdSyslog:
			var c command
			if json.Unmarshal(cmd[1:], &c) == nil && c.Syslog > m.Syslog {
				m.Syslog = c.Syslog
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

// trim drops chunks from the head. It reads the db, which holds
// everything before this update call (chunks appended in the same call
// are trimmed by the next pass).
func (s *logSM) trim(b *pebble.Batch, m *meta, cmd command) (uint64, error) {
	it := s.db.NewIter(&pebble.IterOptions{LowerBound: chunkKey(0), UpperBound: []byte{prefixChunk + 1}})
	defer it.Close()
	var dropped uint64
	for ok := it.First(); ok; ok = it.Next() {
		ents, err := decodeChunk(it.Value())
		if err != nil || len(ents) == 0 {
			return dropped, err
		}
		over := (cmd.MaxCount > 0 && m.Count > cmd.MaxCount) || (cmd.MaxBytes > 0 && m.Bytes > cmd.MaxBytes)
		var t entryTime
		_ = json.Unmarshal(ents[len(ents)-1], &t)
		old := !cmd.Before.IsZero() && t.Time.Before(cmd.Before)
		if !over && !old {
			break
		}
		first := binary.BigEndian.Uint64(it.Key()[1:])
		_ = b.Delete(chunkKey(first), nil)
		for _, e := range ents {
			m.Bytes -= min(m.Bytes, uint64(len(e)))
		}
		n := uint64(len(ents))
		m.Count -= min(m.Count, n)
		m.Head = first + n
		dropped += n
	}
	return dropped, it.Error()
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
	// Begin, when set, is called as the walk starts (a retried read
	// walks again).
	Begin func()
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
	if q.Begin != nil {
		q.Begin()
	}
	it := s.db.NewIter(&pebble.IterOptions{LowerBound: chunkKey(0), UpperBound: []byte{prefixChunk + 1}})
	defer it.Close()
	var ok bool
	if q.Reverse {
		ok = it.Last()
	} else if ok = it.SeekLT(chunkKey(q.After + 2)); !ok {
		ok = it.First() // every chunk starts after the cursor
	}
	var out []Stored
	full := func() bool { return q.Limit > 0 && len(out) >= q.Limit }
	// visit reports false to end the walk.
	visit := func(seq uint64, raw []byte) bool {
		if seq <= q.After {
			return !q.Reverse // forward: not there yet; reverse: done
		}
		var e Entry
		if json.Unmarshal(raw, &e) != nil {
			return true
		}
		if q.Stop != nil && q.Stop(e) {
			return false
		}
		if q.Match == nil || q.Match(e) {
			out = append(out, Stored{Seq: seq, Entry: e})
		}
		return !full()
	}
walk:
	for ; ok; ok = step(it, q.Reverse) {
		ents, err := decodeChunk(it.Value())
		if err != nil {
			return scanResult{}, err
		}
		first := binary.BigEndian.Uint64(it.Key()[1:])
		if q.Reverse {
			for i := len(ents) - 1; i >= 0; i-- {
				if !visit(first+uint64(i), ents[i]) {
					break walk
				}
			}
		} else {
			for i := range ents {
				if !visit(first+uint64(i), ents[i]) {
					break walk
				}
			}
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

func (s *logSM) Sync() error { return s.db.Flush() }

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

// maxSnapshotItem bounds one key or value read from a snapshot: a chunk
// holds up to maxBatchBytes of entries, one more entry and the framing.
const maxSnapshotItem = 4 << 20

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
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("central log store: snapshot: %w", err)
	}
	return s.db.Flush() // no WAL: make the restored state durable now
}

func (s *logSM) Close() error {
	if s.db == nil {
		return nil
	}
	return s.db.Close()
}

var _ sm.IOnDiskStateMachine = (*logSM)(nil)
