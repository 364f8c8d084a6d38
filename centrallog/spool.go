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

// segmentCap is a mapped segment's preallocated size: a segment takes
// records while its end is below segmentBytes, so the last one may pass
// it by one whole record.
const segmentCap = segmentBytes + recHeader + MaxEntryBytes

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

// segment is one open segment file. data is its MAP_SHARED mapping
// (segmentCap bytes, the file preallocated to that size); nil when the
// platform or the file system gave none, and records are written with
// pwrite instead (segWrite).
type segment struct {
	n    uint64
	f    *os.File
	data []byte
}

// spool is the serving node's durable buffer of entries not yet
// acknowledged by the central store: append-only segment files of
// length- and CRC-framed records, plus the acknowledged position.
//
// The segment being written is mapped: Append copies the record into the
// mapping, that is into the page cache, which a kill -9 of the process
// leaves to the kernel exactly as it does write(2)'s data, without a
// system call. The record counts (Read sees it) once wpos moved past it,
// under mu. A preallocated segment ends in zeros, so the log ends at the
// first record whose header or CRC does not check (on open, that tail is
// cut off). fsync (msync) runs every SpoolSync, see Config.
//
// Locks: mu guards the positions and the segment list; mapMu guards the
// mappings against being unmapped while Read copies from one or Sync
// msyncs one outside mu. Order: mu before mapMu.
type spool struct {
	// id names this spool's incarnation (a fresh one for a fresh
	// directory): positions are unique within it.
	id       string
	dir      string
	maxBytes int64

	mu      sync.Mutex
	cur     *segment // the segment being written
	wpos    pos      // end of the last whole record
	acked   pos      // everything before it is acknowledged
	pending int64    // bytes between acked and wpos (approximately, per segment)
	segs    map[uint64]int64
	notify  chan struct{}
	dirty   bool
	closed  bool
	// finished are rotated-away segments Sync still has to msync, fsync,
	// unmap and close.
	finished []*segment

	mapMu  sync.RWMutex
	syncMu sync.Mutex // one Sync at a time
}

func segName(n uint64) string { return fmt.Sprintf("seg-%016x.log", n) }

// openSpool opens (or creates) the spool in dir. A torn record at the end
// of the newest segment (a crash mid-write) and a preallocated segment's
// zero tail are cut off.
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
	for _, n := range nums[:max(len(nums)-1, 0)] {
		path := filepath.Join(dir, segName(n))
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("central log spool: %w", err)
		}
		size := fi.Size()
		if size == segmentCap {
			// Rotated away but not yet cut to its length (a crash
			// during the rotation): it ends where its records do.
			if size, err = scanValid(path); err != nil {
				return nil, err
			}
			if err := os.Truncate(path, size); err != nil {
				return nil, fmt.Errorf("central log spool: cut a finished segment: %w", err)
			}
		}
		s.segs[n] = size
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
	seg, err := openSegment(dir, last, good, false)
	if err != nil {
		return nil, err
	}
	s.cur, s.wpos = seg, pos{Seg: last, Off: good}
	s.segs[last] = good
	if s.wpos.less(s.acked) { // acked beyond what survived: nothing pending
		s.acked = s.wpos
	}
	s.recount()
	return s, nil
}

// mapSegments is false in tests of the pwrite path.
var mapSegments = true

// openSegment opens segment n, keeping its first keep bytes: whatever
// follows (a torn record, zeros) is cut, and the file is preallocated to
// segmentCap and mapped. Without a mapping (mapSegment failed: another
// platform, a file system without it, no space to preallocate) the file
// is left at keep bytes and written with pwrite.
func openSegment(dir string, n uint64, keep int64, fresh bool) (*segment, error) {
	flags := os.O_CREATE | os.O_RDWR
	if fresh {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(filepath.Join(dir, segName(n)), flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("central log spool: open segment: %w", err)
	}
	// Cutting to keep first zeroes everything after it once the file
	// grows again, so no bytes of a torn record survive past the end.
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, fmt.Errorf("central log spool: cut torn record: %w", err)
	}
	seg := &segment{n: n, f: f}
	if !mapSegments {
		return seg, nil
	}
	if data, err := mapSegment(f, segmentCap); err == nil {
		seg.data = data
	} else if err := f.Truncate(keep); err != nil { // undo a partial preallocation
		f.Close()
		return nil, fmt.Errorf("central log spool: %w", err)
	}
	return seg, nil
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

// Append writes one record (1 to MaxEntryBytes bytes: an empty one would
// read as the log's end). It returns ErrSpoolFull when the bytes not yet
// acknowledged reach the bound. The payload is not retained.
func (s *spool) Append(payload []byte) error {
	if len(payload) == 0 || len(payload) > MaxEntryBytes {
		return fmt.Errorf("central log spool: a record of %d bytes (1 to %d)", len(payload), MaxEntryBytes)
	}
	size := int64(recHeader + len(payload))
	sum := crc32.Checksum(payload, crcTable)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("central log spool: closed")
	}
	if s.pending+size > s.maxBytes {
		return ErrSpoolFull
	}
	if s.wpos.Off >= segmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if d := s.cur.data; d != nil {
		rec := d[s.wpos.Off : s.wpos.Off+size]
		binary.BigEndian.PutUint32(rec, uint32(len(payload)))
		binary.BigEndian.PutUint32(rec[4:], sum)
		copy(rec[recHeader:], payload)
	} else if err := s.segWrite(payload, sum); err != nil {
		return err
	}
	s.wpos.Off += size
	s.segs[s.wpos.Seg] = s.wpos.Off
	s.pending += size
	s.dirty = true
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return nil
}

// segWrite appends a record to an unmapped segment with one pwrite
// (caller holds mu).
func (s *spool) segWrite(payload []byte, sum uint32) error {
	rec := make([]byte, recHeader+len(payload))
	binary.BigEndian.PutUint32(rec, uint32(len(payload)))
	binary.BigEndian.PutUint32(rec[4:], sum)
	copy(rec[recHeader:], payload)
	if _, err := s.cur.f.WriteAt(rec, s.wpos.Off); err != nil {
		// A short write leaves a torn record: cut it so the next
		// append starts on a boundary.
		_ = s.cur.f.Truncate(s.wpos.Off)
		return fmt.Errorf("central log spool: write: %w", err)
	}
	return nil
}

// rotate starts the next segment (caller holds mu). The finished one is
// cut to its records' length, so readers and a reopen find its end at
// the file's; the next Sync msyncs, unmaps and closes it, outside mu.
func (s *spool) rotate() error {
	next, err := openSegment(s.dir, s.wpos.Seg+1, 0, true)
	if err != nil {
		return fmt.Errorf("central log spool: new segment: %w", err)
	}
	// A failed cut leaves zeros after the records, where readers stop
	// too; a reopen cuts it again.
	_ = s.cur.f.Truncate(s.wpos.Off)
	s.finished = append(s.finished, s.cur)
	s.cur, s.wpos = next, pos{Seg: next.n}
	s.segs[next.n] = 0
	s.dirty = true
	return nil
}

// Sync makes everything appended so far durable (msync and fsync) if
// anything was appended since the last Sync. It runs outside mu, so
// appends (requests) never wait for the disk.
func (s *spool) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if !s.dirty || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.dirty = false
	cur, done := s.cur, s.finished
	s.finished = nil
	s.mu.Unlock()
	var err error
	for _, old := range done {
		if serr := s.release(old, true); serr != nil && err == nil {
			err = serr
		}
	}
	s.mapMu.RLock()
	serr := syncSegment(cur)
	s.mapMu.RUnlock()
	if serr != nil && !errors.Is(serr, os.ErrClosed) && err == nil {
		err = serr
	}
	return err
}

// syncSegment msyncs and fsyncs seg (caller holds mapMu).
func syncSegment(seg *segment) error {
	var err error
	if seg.data != nil {
		err = msyncSegment(seg.data)
	}
	if serr := seg.f.Sync(); err == nil {
		err = serr
	}
	return err
}

// release syncs (if asked), unmaps and closes a segment no longer written.
func (s *spool) release(seg *segment, sync bool) error {
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	var err error
	if sync {
		err = syncSegment(seg)
	}
	if seg.data != nil {
		if uerr := unmapSegment(seg.data); err == nil {
			err = uerr
		}
		seg.data = nil
	}
	if cerr := seg.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Read returns up to max records (and about maxBytes) from the
// acknowledged position, and the position after the last one. The
// records are a copy, theirs to keep.
func (s *spool) Read(max int, maxBytes int) ([]record, pos, error) {
	s.mu.Lock()
	from, end, cur := s.acked, s.wpos, s.cur
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
		var recs []record
		var next int64
		var err error
		if from.Seg == end.Seg {
			recs, next, err = s.readCur(cur, from, end.Off, max-len(out), maxBytes-size)
		} else { // a finished segment: read to its end
			recs, next, err = readSeg(filepath.Join(s.dir, segName(from.Seg)), from, -1, max-len(out), maxBytes-size)
		}
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

// readBufSize is what one read copies: enough for maxBytes of payloads
// and their headers, and always for one whole record.
func readBufSize(maxRecs, maxBytes int) int64 {
	want := int64(maxBytes) + int64(min(maxRecs, maxBatchRecords))*recHeader
	return max(want, recHeader+MaxEntryBytes)
}

// readCur reads the records of the segment being written between at and
// stop (the published end) with one copy out of its mapping; an
// unmapped segment (or one rotated away and released meanwhile) is read
// from its file.
func (s *spool) readCur(cur *segment, at pos, stop int64, maxRecs, maxBytes int) ([]record, int64, error) {
	s.mapMu.RLock()
	if cur.n != at.Seg || cur.data == nil {
		s.mapMu.RUnlock()
		return readSeg(filepath.Join(s.dir, segName(at.Seg)), at, stop, maxRecs, maxBytes)
	}
	n := min(stop-at.Off, readBufSize(maxRecs, maxBytes))
	if n < recHeader {
		s.mapMu.RUnlock()
		return nil, at.Off, nil
	}
	buf := make([]byte, n)
	copy(buf, cur.data[at.Off:at.Off+n])
	s.mapMu.RUnlock()
	return parseRecs(buf, at, maxRecs, maxBytes, cur.f.Name())
}

// readSeg reads records of one segment file from off, not past stop (-1:
// the file's end). The range is read with one pread into one buffer the
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
	n := min(limit-off, readBufSize(maxRecs, maxBytes))
	if n < recHeader {
		return nil, off, nil
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return nil, off, fmt.Errorf("central log spool: read: %w", err)
	}
	return parseRecs(buf, at, maxRecs, maxBytes, path)
}

// parseRecs splits buf, read from at, into records (aliasing it): whole
// ones only, at most maxRecs and about maxBytes, stopping at a zero
// length (a preallocated segment's end). It returns the offset after the
// last record.
func parseRecs(buf []byte, at pos, maxRecs, maxBytes int, path string) ([]record, int64, error) {
	off := at.Off
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

// Close syncs and closes every segment; the one being written is cut to
// its records' length.
func (s *spool) Close() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, old := range s.finished {
		_ = s.release(old, true)
	}
	s.finished = nil
	err := s.release(s.cur, true)
	// After the unmap: a mapped file shrunk under its mapping would fault.
	if terr := os.Truncate(s.cur.f.Name(), s.wpos.Off); err == nil {
		err = terr
	}
	return err
}
