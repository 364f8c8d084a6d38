package centrallog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func TestSpoolAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := s.Append([]byte(fmt.Sprintf(`{"id":"%d"}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	recs, next, err := s.Read(4, 1<<20)
	if err != nil || len(recs) != 4 || string(recs[0]) != `{"id":"0"}` {
		t.Fatalf("read: %d %q %v", len(recs), recs, err)
	}
	if err := s.Ack(next); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A torn record at the tail (a crash mid-write) is cut off on open.
	f, _ := os.OpenFile(filepath.Join(dir, segName(1)), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte{0, 0, 0, 50, 1, 2})
	f.Close()
	s, err = openSpool(dir, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs, _, err = s.Read(100, 1<<20)
	if err != nil || len(recs) != 6 || string(recs[0]) != `{"id":"4"}` {
		t.Fatalf("after reopen: %d %q %v", len(recs), recs, err)
	}
	if err := s.Append([]byte(`{"id":"10"}`)); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = s.Read(100, 1<<20)
	if len(recs) != 7 || string(recs[6]) != `{"id":"10"}` {
		t.Fatalf("append after a torn tail: %q", recs)
	}
}

func TestSpoolRotatesBoundsAndDeletes(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 12<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	payload := bytes.Repeat([]byte("x"), 4000)
	n := 0
	for {
		err := s.Append(payload)
		if errors.Is(err, ErrSpoolFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n < 2900 || n > 3200 {
		t.Fatalf("%d records of 4000 bytes fit a 12 MiB bound", n)
	}
	got := 0
	for {
		recs, next, err := s.Read(1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		got += len(recs)
		if err := s.Ack(next); err != nil {
			t.Fatal(err)
		}
	}
	if got != n {
		t.Fatalf("read back %d of %d", got, n)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*"))
	if len(segs) != 1 {
		t.Fatalf("acknowledged segments kept: %v", segs)
	}
	if s.Pending() != 0 {
		t.Fatalf("pending %d after everything was acknowledged", s.Pending())
	}
	if err := s.Append(payload); err != nil {
		t.Fatalf("append after the spool drained: %v", err)
	}
}

func appendCmd(t *testing.T, ids ...string) []byte {
	var raw []json.RawMessage
	for _, id := range ids {
		b, _ := encode(Entry{ID: id, Time: time.Unix(1000, 0).UTC(), Kind: KindHTTP, Service: "s", Status: 200})
		raw = append(raw, b)
	}
	b, _ := json.Marshal(command{Op: opAppend, Entries: raw})
	return b
}

func TestStateMachineDedupTrimSnapshot(t *testing.T) {
	s := newLogSM(t.TempDir())
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res, err := s.Update([]sm.Entry{{Index: 1, Cmd: appendCmd(t, "a", "b", "a")}, {Index: 2, Cmd: appendCmd(t, "b", "c")}})
	if err != nil || res[0].Result.Value != 2 || res[1].Result.Value != 1 {
		t.Fatalf("appends: %+v %v", res, err)
	}
	m, _ := s.meta()
	if m.Applied != 2 || m.Count != 3 {
		t.Fatalf("meta %+v", m)
	}
	trim, _ := json.Marshal(command{Op: opTrim, MaxCount: 2})
	if res, err := s.Update([]sm.Entry{{Index: 3, Cmd: trim}}); err != nil || res[0].Result.Value != 1 {
		t.Fatalf("trim: %+v %v", res, err)
	}
	v, err := s.Lookup(&scan{})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.(scanResult).Entries; len(got) != 2 || got[0].Entry.ID != "b" || got[1].Entry.ID != "c" || got[0].Seq != 2 {
		t.Fatalf("after trim: %+v", got)
	}
	// "a" was trimmed, so its ID may come back; "b" is still deduplicated.
	if res, _ := s.Update([]sm.Entry{{Index: 4, Cmd: appendCmd(t, "b", "d")}}); res[0].Result.Value != 1 {
		t.Fatalf("dedup after trim: %+v", res)
	}
	ctx, _ := s.PrepareSnapshot()
	var buf bytes.Buffer
	if err := s.SaveSnapshot(ctx, &buf, nil); err != nil {
		t.Fatal(err)
	}
	r := newLogSM(t.TempDir())
	if _, err := r.Open(nil); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Update([]sm.Entry{{Index: 1, Cmd: appendCmd(t, "zzz")}})
	if err := r.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	v, _ = r.Lookup(&scan{Reverse: true, Limit: 2})
	if got := v.(scanResult).Entries; len(got) != 2 || got[0].Entry.ID != "d" || got[1].Entry.ID != "c" {
		t.Fatalf("restored: %+v", got)
	}
	rm, _ := r.meta()
	if rm != (meta{Applied: 4, Next: 5, Head: 2, Count: 3, Bytes: rm.Bytes}) {
		t.Fatalf("restored meta %+v", rm)
	}
}

func TestQueryMatchAndKPIs(t *testing.T) {
	q := Query{Status: "5xx", Service: "s"}
	if err := q.Validate(); err != nil || q.Limit != 100 {
		t.Fatal(err, q.Limit)
	}
	m := q.match()
	if !m(Entry{Service: "s", Status: 503}) || m(Entry{Service: "s", Status: 200}) || m(Entry{Service: "t", Status: 500}) {
		t.Fatal("status class filter")
	}
	for _, bad := range []Query{{Kind: "x"}, {Status: "5x"}, {Limit: MaxLimit + 1}} {
		if err := bad.Validate(); err == nil {
			t.Fatalf("%+v accepted", bad)
		}
	}
	base := time.Unix(6000, 0).UTC()
	var st []Stored
	for i := range 100 {
		e := Entry{Service: "s", Time: base.Add(time.Duration(i) * time.Second), DurationMS: float64(i + 1), Status: 200}
		if i%10 == 0 {
			e.Status = 502
		}
		st = append(st, Stored{Entry: e})
	}
	k := computeKPIs(st, time.Minute)
	if len(k) != 2 || k[0].Count != 60 || k[1].Count != 40 || k[0].Errors != 6 || k[0].P50MS != 30 || k[0].P99MS != 60 {
		t.Fatalf("kpis %+v", k)
	}
}
