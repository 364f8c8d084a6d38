package centrallog

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// ErrSpoolFull: the spool holds its byte bound of entries not yet
// acknowledged by the store; the entry was not kept.
var ErrSpoolFull = errors.New("central log spool full")

// segmentBytes is the size at which the spool starts a new segment file.
const segmentBytes = 4 << 20

// recHeader is a record's header: payload length and CRC-32C.
const recHeader = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// pos is a position in the spool: a segment number and an offset in it.
type pos struct {
	Seg uint64 `json:"seg"`
	Off int64  `json:"off"`
}

func (p pos) less(q pos) bool { return p.Seg < q.Seg || (p.Seg == q.Seg && p.Off < q.Off) }

// key is the position as one number that grows with it (offsets stay
// below 2^32: a segment ends past segmentBytes by at most one record).
func (p pos) key() uint64 { return p.Seg<<32 | uint64(p.Off) }

// record is one spooled entry and its position.
type record struct {
	Pos  uint64 // pos.key()
	Data []byte
}

// spool is the serving node's durable buffer of entries not yet
// acknowledged by the central store: append-only segment files of
// length- and CRC-framed records, plus the acknowledged position. One
// Append is one write(2) of one whole record, so a record is in the
// kernel (and survives a kill -9 of the process) when Append returns;
// fsync runs every syncEvery appends' worth of time, see Config.
type spool struct {
	// id names this spool's incarnation (a fresh one for a fresh
	// directory): positions are unique within it.
	id       string
	dir      string
	maxBytes int64

	mu      sync.Mutex
	f       *os.File // the segment being written
	wpos    pos      // end of the last whole record
	acked   pos      // everything before it is acknowledged
	pending int64    // bytes between acked and wpos (approximately, per segment)
	segs    map[uint64]int64
	notify  chan struct{}
	dirty   bool
	closed  bool
	// finished are rotated-away segment files Sync still has to fsync
	// and close.
	finished []*os.File
}

func segName(n uint64) string { return fmt.Sprintf("seg-%016x.log", n) }

// openSpool opens (or creates) the spool in dir. A torn record at the end
// of the newest segment (a crash mid-write) is cut off.
func openSpool(dir string, maxBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, segs: map[uint64]int64{}, notify: make(chan struct{}, 1)}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	var nums []uint64
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), "seg-")
		if !ok || !strings.HasSuffix(n, ".log") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSuffix(n, ".log"), 16, 64)
		if err == nil {
			nums = append(nums, v)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	if b, err := os.ReadFile(filepath.Join(dir, "incarnation")); err == nil && len(b) > 0 {
		s.id = strings.TrimSpace(string(b))
	} else {
		s.id = NewID()[:16]
		if err := os.WriteFile(filepath.Join(dir, "incarnation"), []byte(s.id+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("central log spool: %w", err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "acked")); err == nil {
		if err := json.Unmarshal(b, &s.acked); err != nil {
			return nil, fmt.Errorf("central log spool: %s: %w", filepath.Join(dir, "acked"), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	last := uint64(1)
	if len(nums) > 0 {
		last = nums[len(nums)-1]
	}
	for _, n := range nums {
		fi, err := os.Stat(filepath.Join(dir, segName(n)))
		if err != nil {
			return nil, fmt.Errorf("central log spool: %w", err)
		}
		s.segs[n] = fi.Size()
	}
	if s.acked.Seg == 0 {
		s.acked = pos{Seg: 1}
		if len(nums) > 0 {
			s.acked.Seg = nums[0]
		}
	}
	// Scan the newest segment for its last whole record.
	good, err := scanValid(filepath.Join(dir, segName(last)))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, segName(last)), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("central log spool: cut torn record: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	s.f, s.wpos = f, pos{Seg: last, Off: good}
	s.segs[last] = good
	if s.wpos.less(s.acked) { // acked beyond what survived: nothing pending
		s.acked = s.wpos
	}
	s.recount()
	return s, nil
}

// scanValid returns the length of the prefix of whole, intact records.
func scanValid(path string) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("central log spool: %w", err)
	}
	defer f.Close()
	var off int64
	hdr := make([]byte, recHeader)
	buf := make([]byte, 0, MaxEntryBytes)
	for {
		if _, err := io.ReadFull(f, hdr); err != nil {
			return off, nil
		}
		n := binary.BigEndian.Uint32(hdr)
		if n == 0 || n > MaxEntryBytes {
			return off, nil
		}
		buf = buf[:n]
		if _, err := io.ReadFull(f, buf); err != nil {
			return off, nil
		}
		if crc32.Checksum(buf, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return off, nil
		}
		off += recHeader + int64(n)
	}
}

// recount recomputes pending (caller holds mu or owns s).
func (s *spool) recount() {
	s.pending = 0
	for n, size := range s.segs {
		switch {
		case n > s.acked.Seg:
			s.pending += size
		case n == s.acked.Seg:
			s.pending += size - s.acked.Off
		}
	}
}

// Append writes one record. It returns ErrSpoolFull when the bytes not
// yet acknowledged reach the bound.
func (s *spool) Append(payload []byte) error {
	rec := make([]byte, recHeader+len(payload))
	binary.BigEndian.PutUint32(rec, uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(payload, crcTable))
	copy(rec[recHeader:], payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("central log spool: closed")
	}
	if s.pending+int64(len(rec)) > s.maxBytes {
		return ErrSpoolFull
	}
	if s.wpos.Off >= segmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if _, err := s.f.Write(rec); err != nil {
		// A short write leaves a torn record: cut it so the next
		// append starts on a boundary.
		_ = s.f.Truncate(s.wpos.Off)
		_, _ = s.f.Seek(s.wpos.Off, io.SeekStart)
		return fmt.Errorf("central log spool: write: %w", err)
	}
	s.wpos.Off += int64(len(rec))
	s.segs[s.wpos.Seg] = s.wpos.Off
	s.pending += int64(len(rec))
	s.dirty = true
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

func (s *spool) rotate() error {
	// The finished segment is fsynced and closed by the next Sync,
	// outside the lock.
	s.finished = append(s.finished, s.f)
	next := s.wpos.Seg + 1
	f, err := os.OpenFile(filepath.Join(s.dir, segName(next)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("central log spool: new segment: %w", err)
	}
	s.f, s.wpos = f, pos{Seg: next}
	s.segs[next] = 0
	return nil
}

// Sync fsyncs the segment being written if anything was appended since
// the last Sync. The fsync runs outside the lock, so appends (requests)
// never wait for the disk; a segment rotated away meanwhile was synced by
// the rotation.
func (s *spool) Sync() error {
	s.mu.Lock()
	if !s.dirty || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	f, done := s.f, s.finished
	s.finished = nil
	s.mu.Unlock()
	var err error
	for _, old := range done {
		if serr := old.Sync(); serr != nil && err == nil {
			err = serr
		}
		old.Close()
	}
	if serr := f.Sync(); serr != nil && !errors.Is(serr, os.ErrClosed) && err == nil {
		err = serr
	}
	return err
}

// Read returns up to max records (and about maxBytes) from the
// acknowledged position, and the position after the last one.
func (s *spool) Read(max int, maxBytes int) ([]record, pos, error) {
	s.mu.Lock()
	from, end := s.acked, s.wpos
	s.mu.Unlock()
	var out []record
	size := 0
	for len(out) < max && size < maxBytes && from.less(end) {
		if from.Seg < end.Seg {
			s.mu.Lock()
			segLen, ok := s.segs[from.Seg]
			s.mu.Unlock()
			if !ok || from.Off >= segLen {
				from = pos{Seg: from.Seg + 1}
				continue
			}
		}
		stop := int64(-1) // the whole (finished) segment
		if from.Seg == end.Seg {
			stop = end.Off
		}
		recs, next, err := readSeg(filepath.Join(s.dir, segName(from.Seg)), from, stop, max-len(out), maxBytes-size)
		if err != nil {
			return nil, from, err
		}
		for _, r := range recs {
			size += len(r.Data)
		}
		out = append(out, recs...)
		if next == from.Off { // nothing more in this segment
			if from.Seg == end.Seg {
				break
			}
			from = pos{Seg: from.Seg + 1}
			continue
		}
		from.Off = next
	}
	return out, from, nil
}

// readSeg reads records of one segment from off, not past stop (-1: the
// file's end). The range is read with one pread into one buffer the
// records alias: the shipper reads thousands of records a second.
func readSeg(path string, at pos, stop int64, maxRecs, maxBytes int) ([]record, int64, error) {
	off := at.Off
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, off, nil
	}
	if err != nil {
		return nil, off, fmt.Errorf("central log spool: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, off, fmt.Errorf("central log spool: %w", err)
	}
	limit := fi.Size()
	if stop >= 0 {
		limit = min(limit, stop)
	}
	// Enough for maxBytes of payloads and their headers, and always for
	// one whole record.
	want := int64(maxBytes) + int64(min(maxRecs, maxBatchRecords))*recHeader
	want = max(want, recHeader+MaxEntryBytes)
	n := min(limit-off, want)
	if n < recHeader {
		return nil, off, nil
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return nil, off, fmt.Errorf("central log spool: read: %w", err)
	}
	var out []record
	size := 0
	for i := 0; i+recHeader <= len(buf) && len(out) < maxRecs && size < maxBytes; {
		l := int(binary.BigEndian.Uint32(buf[i:]))
		if l == 0 || l > MaxEntryBytes || i+recHeader+l > len(buf) {
			break
		}
		data := buf[i+recHeader : i+recHeader+l : i+recHeader+l]
		if crc32.Checksum(data, crcTable) != binary.BigEndian.Uint32(buf[i+4:]) {
			return nil, off, fmt.Errorf("central log spool: %s: bad checksum at offset %d", path, off+int64(i))
		}
		out = append(out, record{Pos: pos{Seg: at.Seg, Off: off + int64(i)}.key(), Data: data})
		size += l
		i += recHeader + l
	}
	if len(out) > 0 {
		last := out[len(out)-1]
		off = int64(uint32(last.Pos)) + recHeader + int64(len(last.Data))
	}
	return out, off, nil
}

// Ack records that everything before p is stored, and deletes the
// segments wholly before it.
// Only one goroutine (the shipper) acknowledges; the file work runs
// outside the lock, so appends never wait for it.
func (s *spool) Ack(p pos) error {
	s.mu.Lock()
	ahead := s.acked.less(p)
	s.mu.Unlock()
	if !ahead {
		return nil
	}
	b, _ := json.Marshal(p)
	tmp := filepath.Join(s.dir, "acked.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("central log spool: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "acked")); err != nil {
		return fmt.Errorf("central log spool: %w", err)
	}
	var drop []uint64
	s.mu.Lock()
	s.acked = p
	for n := range s.segs {
		if n < p.Seg {
			drop = append(drop, n)
			delete(s.segs, n)
		}
	}
	s.recount()
	s.mu.Unlock()
	for _, n := range drop {
		_ = os.Remove(filepath.Join(s.dir, segName(n)))
	}
	return nil
}

// Pending is how many bytes of records wait for an acknowledgement.
func (s *spool) Pending() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// Notify is signalled after an append.
func (s *spool) Notify() <-chan struct{} { return s.notify }

func (s *spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, old := range s.finished {
		_ = old.Sync()
		old.Close()
	}
	s.finished = nil
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}
