package centrallog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	if err != nil || len(recs) != 4 || string(recs[0].Data) != `{"id":"0"}` {
		t.Fatalf("read: %d %v %v", len(recs), recs, err)
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
	if err != nil || len(recs) != 6 || string(recs[0].Data) != `{"id":"4"}` {
		t.Fatalf("after reopen: %d %v %v", len(recs), recs, err)
	}
	if err := s.Append([]byte(`{"id":"10"}`)); err != nil {
		t.Fatal(err)
	}
	recs, _, _ = s.Read(100, 1<<20)
	if len(recs) != 7 || string(recs[6].Data) != `{"id":"10"}` {
		t.Fatalf("append after a torn tail: %v", recs)
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

// appendCmd is a batch from spool src with records at the given positions
// (entry id = src + position).
func appendCmd(src string, at ...uint64) []byte {
	var recs []record
	for _, p := range at {
		b, _ := encode(Entry{ID: fmt.Sprintf("%s%d", src, p), Time: time.Unix(1000+int64(p), 0).UTC(), Kind: KindHTTP, Service: "s", Status: 200})
		recs = append(recs, record{Pos: p, Data: b})
	}
	return encodeBatch("c", src, recs)
}

func ids(t *testing.T, v interface{}) string {
	t.Helper()
	var out []string
	for _, st := range v.(scanResult).Entries {
		out = append(out, fmt.Sprintf("%d:%s", st.Seq, st.Entry.ID))
	}
	return strings.Join(out, " ")
}

func TestStateMachineDedupTrimSnapshot(t *testing.T) {
	s := newLogSM(t.TempDir())
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A resent batch (positions 1, 2 again, with 3 new) adds only 3; the
	// same position from another spool is another entry.
	res, err := s.Update([]sm.Entry{{Index: 1, Cmd: appendCmd("a", 1, 2)}, {Index: 2, Cmd: appendCmd("a", 1, 2, 3)},
		{Index: 3, Cmd: appendCmd("b", 1)}, {Index: 4, Cmd: []byte("Agarbage")}})
	if err != nil || res[0].Result.Value != 2 || res[1].Result.Value != 1 || res[2].Result.Value != 1 || res[3].Result.Value != 0 {
		t.Fatalf("appends: %+v %v", res, err)
	}
	if res, _ := s.Update([]sm.Entry{{Index: 5, Cmd: appendCmd("a", 3)}}); res[0].Result.Value != 0 {
		t.Fatalf("a resend in a later update: %+v", res)
	}
	m, _ := s.meta()
	if m.Applied != 5 || m.Count != 4 || m.Next != 5 {
		t.Fatalf("meta %+v", m)
	}
	v, _ := s.Lookup(&scan{})
	if got := ids(t, v); got != "1:a1 2:a2 3:a3 4:b1" {
		t.Fatalf("scan: %s", got)
	}
	v, _ = s.Lookup(&scan{After: 1, Limit: 2})
	if got := ids(t, v); got != "2:a2 3:a3" {
		t.Fatalf("scan after 1: %s", got)
	}
	v, _ = s.Lookup(&scan{After: 2, Reverse: true, Limit: 5})
	if got := ids(t, v); got != "4:b1 3:a3" {
		t.Fatalf("reverse scan after 2: %s", got)
	}
	// Retention drops whole chunks from the head: a1 a2 go (count 4 > 3).
	if res, err := s.Update([]sm.Entry{{Index: 6, Cmd: encodeCommand(cmdTrim, command{MaxCount: 3})}}); err != nil || res[0].Result.Value != 2 {
		t.Fatalf("trim: %+v %v", res, err)
	}
	if res, _ := s.Update([]sm.Entry{{Index: 7, Cmd: encodeCommand(cmdTrim, command{Before: time.Unix(1002, 0)})}}); res[0].Result.Value != 0 {
		t.Fatalf("age trim of newer chunks: %+v", res)
	}
	if res, _ := s.Update([]sm.Entry{{Index: 8, Cmd: encodeCommand(cmdSyslog, command{Syslog: 3})}}); res[0].Result.Value != 0 {
		t.Fatalf("syslog: %+v", res)
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
	r.Update([]sm.Entry{{Index: 1, Cmd: appendCmd("zzz", 1)}})
	if err := r.RecoverFromSnapshot(&buf, nil); err != nil {
		t.Fatal(err)
	}
	v, _ = r.Lookup(&scan{Reverse: true, Limit: 5})
	if got := ids(t, v); got != "4:b1 3:a3" {
		t.Fatalf("restored: %s", got)
	}
	rm, _ := r.meta()
	if rm != (meta{Applied: 8, Next: 5, Head: 3, Count: 2, Bytes: rm.Bytes, Syslog: 3}) || rm.Bytes == 0 {
		t.Fatalf("restored meta %+v", rm)
	}
	// The restored source positions still deduplicate.
	if res, _ := r.Update([]sm.Entry{{Index: 9, Cmd: appendCmd("a", 3, 4)}}); res[0].Result.Value != 1 {
		t.Fatalf("dedup after restore: %+v", res)
	}
}

func TestBatchDecodingIsBounded(t *testing.T) {
	b := appendCmd("src", 1, 2)
	if c, src, recs, err := decodeBatch(b); err != nil || c != "c" || src != "src" || len(recs) != 2 || recs[1].Pos != 2 {
		t.Fatalf("decode: %q %q %v %v", c, src, recs, err)
	}
	for i := 0; i < len(b); i++ {
		if _, _, _, err := decodeBatch(b[:i]); err == nil {
			t.Fatalf("a batch cut at %d decoded", i)
		}
	}
	if _, err := decodeChunk([]byte{0, 0, 0, 9, 0}); err == nil {
		t.Fatal("corrupt chunk decoded")
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

// encode's hand-written JSON decodes to the same entry encoding/json's
// does, control characters, quotes and invalid UTF-8 included.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	e := Entry{ID: "x", Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC), Node: "n\"1\\", Cluster: "c", Kind: KindHTTP,
		Service: "s", Method: "GET", Path: "/svc/s/a b\t\n\x01\u2028é\xff<&>", Status: 502, DurationMS: 1.25,
		BytesIn: 3, BytesOut: 1 << 40, ClientIP: "::1", TokenAccessor: "acc", ExecutionID: "e"}
	b, err := encode(e)
	if err != nil {
		t.Fatal(err)
	}
	var got, want Entry
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	std, _ := json.Marshal(e)
	json.Unmarshal(std, &want)
	if got != want {
		t.Fatalf("hand-written %+v\nencoding/json %+v", got, want)
	}
}

// Without a WAL, what the store keeps across a restart is the state at
// some applied index, consistent with its entries; after Sync, all of it.
func TestStateMachineRestartKeepsAConsistentPrefix(t *testing.T) {
	dir := t.TempDir()
	s := newLogSM(dir)
	if _, err := s.Open(nil); err != nil {
		t.Fatal(err)
	}
	s.Update([]sm.Entry{{Index: 1, Cmd: appendCmd("a", 1, 2)}})
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Update([]sm.Entry{{Index: 2, Cmd: appendCmd("a", 3)}})
	s.Close()
	r := newLogSM(dir)
	applied, err := r.Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v, _ := r.Lookup(&scan{})
	got := ids(t, v)
	switch {
	case applied == 1 && got == "1:a1 2:a2", applied == 2 && got == "1:a1 2:a2 3:a3":
	default:
		t.Fatalf("reopened at applied %d with %s", applied, got)
	}
	// dragonboat replays from the applied index: the replay lands once.
	if applied == 1 {
		r.Update([]sm.Entry{{Index: 2, Cmd: appendCmd("a", 3)}})
	}
	v, _ = r.Lookup(&scan{})
	if got := ids(t, v); got != "1:a1 2:a2 3:a3" {
		t.Fatalf("after the replay: %s", got)
	}
}

// Reads bounded by count and bytes resume exactly where the last one
// stopped: every record once, in order, whatever the sizes.
func TestSpoolBoundedReadsResumeExactly(t *testing.T) {
	s, err := openSpool(t.TempDir(), 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want []string
	for i := range 3000 {
		p := fmt.Sprintf(`{"id":"%d","pad":"%s"}`, i, strings.Repeat("x", (i*7919)%(MaxEntryBytes-64)))
		want = append(want, p)
		if err := s.Append([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for round := 0; len(got) < len(want); round++ {
		if round > len(want) {
			t.Fatalf("no progress after %d of %d records", len(got), len(want))
		}
		recs, next, err := s.Read(1+round%13, MaxEntryBytes+round%3*MaxEntryBytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got = append(got, string(r.Data))
		}
		if err := s.Ack(next); err != nil {
			t.Fatal(err)
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d: got %.40q, want %.40q", i, got[i], want[i])
		}
	}
	if recs, _, _ := s.Read(10, 1<<20); len(recs) != 0 {
		t.Fatalf("%d records after all were read", len(recs))
	}
}
