package centrallog

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// mapped skips a test of the mapped spool where segments are written
// with pwrite.
func mapped(t *testing.T, s *spool) {
	t.Helper()
	if s.cur.data == nil {
		t.Skip("segments are not mapped on this platform")
	}
}

// readAll reads every record from the acknowledged position.
func readAll(t *testing.T, s *spool) []string {
	t.Helper()
	recs, _, err := s.Read(1<<16, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Data))
	}
	return out
}

func appendN(t *testing.T, s *spool, from, to int, pad int) []string {
	t.Helper()
	var out []string
	for i := from; i < to; i++ {
		p := fmt.Sprintf(`{"id":"%d","pad":"%s"}`, i, bytes.Repeat([]byte("x"), pad))
		if err := s.Append([]byte(p)); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func same(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: record %d is %.40q, want %.40q", what, i, got[i], want[i])
		}
	}
}

// A process killed after Append returned, without Sync or Close: the
// records are in the page cache through the mapping, and a spool opened
// on the same directory (the restarted process) reads every one.
func TestSpoolReopenAfterKill(t *testing.T) {
	dir := t.TempDir()
	s1, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	mapped(t, s1)
	want := appendN(t, s1, 0, 100, 10)
	// s1 is abandoned, as a killed process would leave it: no Sync, no
	// Close (its Close would cut the file to its own end).
	s2, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	mapped(t, s2)
	same(t, "after the kill", readAll(t, s2), want)
	want = append(want, appendN(t, s2, 100, 110, 10)...)
	same(t, "appended after the restart", readAll(t, s2), want)
	if s2.Pending() != int64(len(bytes.Join(toBytes(want), nil)))+int64(len(want))*recHeader {
		t.Fatalf("pending %d after the restart", s2.Pending())
	}
}

func toBytes(ss []string) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, []byte(s))
	}
	return out
}

// A record torn inside a mapped segment (the process died mid-copy: a
// header and part of its payload, or a whole header whose CRC the
// payload does not match) ends the log on open; the bytes after the end
// are zeroed, so nothing of the torn record can be read as a record once
// shorter ones overwrite part of it.
func TestSpoolMappedTornTailIsCut(t *testing.T) {
	for name, torn := range map[string]func(good []byte) []byte{
		"partial payload": func(good []byte) []byte {
			return good[:recHeader+len(good[recHeader:])/2]
		},
		"bad checksum": func(good []byte) []byte {
			b := bytes.Clone(good)
			b[len(b)-1] ^= 0xff
			return b
		},
		"header only": func(good []byte) []byte { return good[:recHeader] },
		// A whole record behind the torn one: it is not resurrected.
		"torn then whole": func(good []byte) []byte {
			b := bytes.Clone(good[:recHeader+3])
			b = append(b, bytes.Repeat([]byte{0}, len(good)-len(b))...)
			return append(b, good...)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s1, err := openSpool(dir, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			mapped(t, s1)
			want := appendN(t, s1, 0, 5, 100)
			payload := []byte(`{"id":"torn","pad":"` + string(bytes.Repeat([]byte("y"), 300)) + `"}`)
			rec := make([]byte, recHeader+len(payload))
			binary.BigEndian.PutUint32(rec, uint32(len(payload)))
			binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(payload, crcTable))
			copy(rec[recHeader:], payload)
			end := s1.wpos.Off
			copy(s1.cur.data[end:], torn(rec)) // the killed process's last copy

			s2, err := openSpool(dir, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			mapped(t, s2)
			if s2.wpos.Off != end {
				t.Fatalf("the log ends at %d after the reopen, want %d", s2.wpos.Off, end)
			}
			if tail := s2.cur.data[end : end+int64(3*len(rec))]; !bytes.Equal(tail, make([]byte, len(tail))) {
				t.Fatalf("the torn record's bytes survived the cut: %q", tail[:32])
			}
			same(t, "after the cut", readAll(t, s2), want)
			want = append(want, appendN(t, s2, 5, 7, 0)...) // shorter than the torn one
			// Killed again: the third opening sees exactly the whole records.
			s3, err := openSpool(dir, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			same(t, "after a second kill", readAll(t, s3), want)
		})
	}
}

// Rotation: a finished segment is cut to its records' length; records
// read across segments in order; a finished segment left at its
// preallocated size (killed mid-rotation) is cut on open; acknowledged
// segments go.
func TestSpoolMappedRotation(t *testing.T) {
	dir := t.TempDir()
	s1, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	mapped(t, s1)
	per := segmentBytes / 4000
	want := appendN(t, s1, 0, 2*per+per/2, 4000) // two and a half segments
	if s1.wpos.Seg != 3 {
		t.Fatalf("writing segment %d, want 3", s1.wpos.Seg)
	}
	for n := uint64(1); n <= 2; n++ {
		fi, err := os.Stat(filepath.Join(dir, segName(n)))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != s1.segs[n] || fi.Size() < segmentBytes || fi.Size() >= segmentCap {
			t.Fatalf("finished segment %d is %d bytes, its records %d", n, fi.Size(), s1.segs[n])
		}
	}
	same(t, "across segments", readAll(t, s1), want)
	if err := s1.Sync(); err != nil { // releases the finished segments
		t.Fatal(err)
	}
	if len(s1.finished) != 0 {
		t.Fatalf("%d finished segments kept after Sync", len(s1.finished))
	}
	same(t, "after Sync", readAll(t, s1), want)

	// Killed mid-rotation: segment 2 still at its preallocated size.
	if err := os.Truncate(filepath.Join(dir, segName(2)), segmentCap); err != nil {
		t.Fatal(err)
	}
	s2, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	same(t, "reopened", readAll(t, s2), want)
	if fi, _ := os.Stat(filepath.Join(dir, segName(2))); fi.Size() != s2.segs[2] || fi.Size() == segmentCap {
		t.Fatalf("segment 2 is %d bytes after the reopen, its records %d", fi.Size(), s2.segs[2])
	}
	// Acknowledge the first two segments: their files go.
	recs, next, err := s2.Read(2*per, 64<<20)
	if err != nil || len(recs) != 2*per {
		t.Fatalf("read %d: %v", len(recs), err)
	}
	if err := s2.Ack(next); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	if len(segs) != 1 {
		t.Fatalf("segments after the acknowledgement: %v", segs)
	}
	same(t, "after the acknowledgement", readAll(t, s2), want[2*per:])
}

// Record's IDs: 32 hex digits, unique, and the JSON the same as with a
// given ID; the request path allocates nothing.
func TestRecordIDsAndAllocations(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Cluster, cfg.Dir = "n1", "c1", dir
	s, err := New(cfg, nil, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if s.spool, err = openSpool(filepath.Join(dir, "spool"), cfg.SpoolBytes); err != nil {
		t.Fatal(err)
	}
	defer s.spool.Close()
	e := Entry{Time: time.Date(2026, 12, 4, 1, 2, 3, 4, time.UTC), Kind: KindHTTP, Method: "GET",
		Path: "/svc/echo/x", Service: "echo", Status: 200, ClientIP: "127.0.0.1"}
	for range 3 {
		s.Record(e)
	}
	allocs := testing.AllocsPerRun(200, func() { s.Record(e) }) // and one warm-up run
	recs, _, err := s.spool.Read(1000, 1<<20)
	if err != nil || len(recs) != 3+1+200 {
		t.Fatalf("%d records: %v", len(recs), err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		var got Entry
		if err := json.Unmarshal(r.Data, &got); err != nil {
			t.Fatalf("%s: %v", r.Data, err)
		}
		if len(got.ID) != 32 || strings.Trim(got.ID, "0123456789abcdef") != "" || seen[got.ID] {
			t.Fatalf("entry id %q (seen before: %v)", got.ID, seen[got.ID])
		}
		seen[got.ID] = true
		want := e
		want.ID, want.Node, want.Cluster = got.ID, "n1", "c1"
		if std, _ := encode(want); !bytes.Equal(std, r.Data) {
			t.Fatalf("recorded %s\nencoded  %s", r.Data, std)
		}
	}
	if allocs != 0 {
		t.Fatalf("Record allocates %.1f times per entry", allocs)
	}
}

// The shipper decides from the spool's byte count whether to read: a
// batch that is not full waits for ShipDelay since the last one, the
// first after a quiet spell, a full one and one behind a full one go at
// once.
func TestShipWait(t *testing.T) {
	cfg := DefaultConfig()
	now := time.Now()
	for _, c := range []struct {
		name    string
		pending int64
		more    bool
		last    time.Time
		want    time.Duration
	}{
		{"quiet spell", 100, false, time.Time{}, 0},
		{"gathering", 100, false, now.Add(-50 * time.Millisecond), cfg.ShipDelay - 50*time.Millisecond},
		{"delay passed", 100, false, now.Add(-cfg.ShipDelay), 0},
		{"full by bytes", int64(cfg.BatchBytes), false, now, 0},
		{"behind a full batch", 100, true, now, 0},
	} {
		if got := shipWait(cfg, c.pending, c.more, c.last, now); got != c.want {
			t.Errorf("%s: wait %v, want %v", c.name, got, c.want)
		}
	}
}

// Where segments cannot be mapped they are written with pwrite: the
// spool's tests hold for that path too, and it reopens a mapped spool's
// directory (and the other way round).
func TestSpoolPwriteFallback(t *testing.T) {
	mapSegments = false
	defer func() { mapSegments = true }()
	t.Run("append read ack reopen", TestSpoolAppendReadAckReopen)
	t.Run("rotates bounds deletes", TestSpoolRotatesBoundsAndDeletes)
	t.Run("bounded reads", TestSpoolBoundedReadsResumeExactly)
	t.Run("switching", func(t *testing.T) {
		dir := t.TempDir()
		s, err := openSpool(dir, 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		want := appendN(t, s, 0, 10, 50)
		s.Close()
		mapSegments = true
		if s, err = openSpool(dir, 64<<20); err != nil {
			t.Fatal(err)
		}
		mapped(t, s)
		want = append(want, appendN(t, s, 10, 20, 50)...)
		s.Close()
		mapSegments = false
		if s, err = openSpool(dir, 64<<20); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.cur.data != nil {
			t.Fatal("a segment was mapped with mapping off")
		}
		want = append(want, appendN(t, s, 20, 30, 50)...)
		same(t, "across the switches", readAll(t, s), want)
	})
}
