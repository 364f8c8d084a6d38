package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/meshgw/meshgw/dispatch/runner"
)

// Issue 12, defect 6: an async /bin/cat of 600 KiB of `<`. With HTML
// escaping the record (whole input + 256 KiB of stdout) took about 5 MiB,
// the store refused its terminal write, and recovery ran it again and again
// until it ended lost. It must run once and end succeeded, truncated.
func TestRecordEscapedOutputRunsOnceAndEnds(t *testing.T) {
	e := newLocal(t, nil)
	e.store.setLeader(testCluster, true) // recovery runs, as on the real leader
	runs := filepath.Join(t.TempDir(), "runs")
	svc := execSvc("sh", "-c", `echo run >> "$1"; exec /bin/cat`, "sh", runs)
	svc.Retries = 2
	input := []byte(`"` + strings.Repeat("<", 600<<10) + `"`)
	ex, err := e.d.Run(context.Background(), testCluster, svc, input, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a terminal record", func() bool {
		rec, err := e.d.Get(context.Background(), testCluster, ex.ID)
		return err == nil && rec.Status.Terminal()
	})
	// Recovery would take over a run whose terminal write failed within a
	// few of its 50 ms passes: give it the time to show a re-run.
	time.Sleep(500 * time.Millisecond)
	rec := e.record(t, ex.ID)
	b, _ := os.ReadFile(runs)
	if n := bytes.Count(b, []byte("run\n")); n != 1 {
		t.Fatalf("ran %d times; record %s attempts=%d error=%q", n, rec.Status, rec.Attempts, rec.Error)
	}
	if rec.Status != StatusSucceeded || !rec.Truncated || rec.Attempts != 1 {
		t.Fatalf("status %s truncated=%v attempts=%d error=%q", rec.Status, rec.Truncated, rec.Attempts, rec.Error)
	}
	if !strings.HasPrefix(rec.Stdout, `"<<<`) || !strings.HasSuffix(rec.Stdout, runner.TruncationMarker) {
		t.Fatalf("stdout %.40q…", rec.Stdout)
	}
	if rec.Input != string(input) || rec.InputTruncated {
		t.Fatalf("input kept %d of %d bytes, truncated=%v", len(rec.Input), len(input), rec.InputTruncated)
	}
	v, _, _, _ := e.store.Get(context.Background(), testCluster, ExecKey(ex.ID))
	if len(v) > MaxRecordSize {
		t.Fatalf("record of %d bytes", len(v))
	}
}

// A record that cannot fit even cut (the store refuses it) must still end
// in a terminal record, written once, not retried as an unknown outcome.
func TestRecordTooLargeForStoreIsPermanent(t *testing.T) {
	e := newLocal(t, nil)
	big := strings.Repeat("x", MaxRecordSize+1)
	rec := &Execution{ID: NewID(time.Now()), Service: "svc", Cluster: testCluster, Status: StatusQueued}
	ver, err := e.d.create(context.Background(), rec, 0)
	if err != nil {
		t.Fatal(err)
	}
	writes := e.store.writes
	// Straight to the store: the fake refuses it like consensus does.
	_, err = e.store.Put(context.Background(), testCluster, ExecKey(rec.ID), []byte(big), &ver)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("store: %v, want ErrTooLarge", err)
	}
	start := time.Now()
	_, err = e.d.writeRecord(context.Background(), rec, []byte(big), func(ctx context.Context) (uint64, error) {
		return e.store.Put(ctx, testCluster, ExecKey(rec.ID), []byte(big), &ver)
	})
	if !errors.Is(err, ErrTooLarge) || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("writeRecord: %v after %v: a refused size must not be retried", err, time.Since(start))
	}
	if e.store.writes != writes {
		t.Fatalf("%d writes applied", e.store.writes-writes)
	}
}

func decodeRecordT(t *testing.T, b []byte) Execution {
	t.Helper()
	var ex Execution
	if err := json.Unmarshal(b, &ex); err != nil {
		t.Fatalf("%v: %.80q", err, b)
	}
	return ex
}

// shown is s as a JSON reader sees it (each invalid byte as U+FFFD).
func shown(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

func TestEncodedLenMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "<>&", `"\`, "\n\t\r\b\f", "\x00\x01\x1f\x7f",
		"é€😀", "\xff\xfe", "a\xe2\x82", "\u2028\u2029", strings.Repeat("<&\xff€\n", 50)} {
		b, _ := marshalRecord(&Execution{Stdout: s})
		full, _ := marshalRecord(&Execution{})
		// The two encodings differ only by the stdout string's content.
		if got, want := encodedLen(s), len(b)-len(full); got != want {
			t.Errorf("encodedLen(%q) = %d, encoding/json wrote %d", s, got, want)
		}
	}
}

func TestCutEncodedKeepsRunesWhole(t *testing.T) {
	cases := []struct {
		s      string
		budget int
		want   string
	}{
		{"<<<<", 2, "<<"},        // no HTML escaping: 1 byte each
		{"&&&&", 3, "&&&"},       // likewise
		{`a"b`, 2, "a"},          // `\"` takes 2: does not fit after "a"
		{"é€", 4, "é"},           // 2 + 3 bytes: € does not fit, is not split
		{"€€", 5, "€"},           // a rune is never cut in half
		{"ab\xffc", 7, "ab"},     // an invalid byte costs 6 (\ufffd)
		{"ab\xffc", 8, "ab\xff"}, // ...and is kept whole when it fits
		{"\x01x", 5, ""},         // \u0001
		{"😀", 3, ""},
	}
	for _, c := range cases {
		got, n := cutEncoded(c.s, c.budget)
		if got != c.want || n > c.budget || n != encodedLen(got) {
			t.Errorf("cutEncoded(%q, %d) = %q (%d), want %q", c.s, c.budget, got, n, c.want)
		}
	}
}

// encodeRecord's budget: every mix of escaping-heavy output fits the
// limit, is cut at a rune boundary with the marker, and keeps what fits.
func TestEncodeRecordBudget(t *testing.T) {
	const limit = 64 << 10
	base := Execution{ID: NewID(time.Now()), Service: "svc", Cluster: testCluster, Status: StatusSucceeded,
		History: []Attempt{{N: 1, Runner: "r1", Outcome: "succeeded"}}}
	pieces := map[string]string{"lt": "<", "amp": "&", "invalid": "\xff", "euro": "€", "emoji": "😀",
		"ctl": "\x01", "nl": "\n", "mix": "a<é\xff&😀\"\n"}
	for name, p := range pieces {
		t.Run(name, func(t *testing.T) {
			c := base
			c.Stdout = strings.Repeat(p, limit/len(p)) // raw size alone near the limit
			c.Stderr = strings.Repeat(p, 100)
			b, err := encodeRecord(c, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > limit {
				t.Fatalf("%d bytes > %d", len(b), limit)
			}
			got := decodeRecordT(t, b)
			if !got.Truncated || !strings.HasSuffix(got.Stdout, runner.TruncationMarker) {
				t.Fatalf("truncated=%v stdout ends %q", got.Truncated, got.Stdout[max(0, len(got.Stdout)-40):])
			}
			// The short stream is kept whole; the long one gets the rest.
			if want := shown(c.Stderr); got.Stderr != want {
				t.Fatalf("stderr %q…, want it whole", got.Stderr[:min(20, len(got.Stderr))])
			}
			kept := strings.TrimSuffix(got.Stdout, runner.TruncationMarker)
			if !utf8.ValidString(kept) || len(b) < limit-limit/8 {
				t.Fatalf("kept %d bytes (record %d of %d): valid UTF-8 %v", len(kept), len(b), limit, utf8.ValidString(kept))
			}
			// A cut at a rune boundary: what is kept is a prefix of the
			// original as JSON shows it.
			if !strings.HasPrefix(shown(c.Stdout), shown(kept)) {
				t.Fatal("kept stdout is not a prefix of the output")
			}
		})
	}
}

// The input comes first (a re-run needs it), exactly, even when it is not
// valid UTF-8; output shares what is left.
func TestEncodeRecordInput(t *testing.T) {
	const limit = 16 << 10
	in := []byte("\"\xff\xfe<&\x00" + strings.Repeat("é", 2000) + "\"")
	c := Execution{ID: NewID(time.Now()), Status: StatusQueued, Async: true}
	c.setInput(in)
	c.Stdout = strings.Repeat("&", limit)
	b, err := encodeRecord(c, limit)
	if err != nil || len(b) > limit {
		t.Fatalf("%v, %d bytes", err, len(b))
	}
	got := decodeRecordT(t, b)
	if !bytes.Equal(got.input(), in) || got.InputTruncated || got.Input != "" {
		t.Fatalf("input %q (truncated %v), want %q as base64", got.input()[:10], got.InputTruncated, in[:10])
	}
	if !got.Truncated || got.Stdout == "" {
		t.Fatalf("stdout %d bytes truncated=%v", len(got.Stdout), got.Truncated)
	}
	// Valid UTF-8 stays a string.
	c.setInput([]byte(`{"a":"<é>"}`))
	if c.Input != `{"a":"<é>"}` || c.InputB64 != nil {
		t.Fatalf("%q %q", c.Input, c.InputB64)
	}
	// An input bigger than the limit is cut and marked (recovery will not
	// re-run it), at a rune boundary.
	c.setInput([]byte(strings.Repeat("é", limit)))
	b, err = encodeRecord(c, limit)
	if err != nil || len(b) > limit {
		t.Fatalf("%v, %d bytes", err, len(b))
	}
	got = decodeRecordT(t, b)
	if !got.InputTruncated || !utf8.ValidString(got.Input) || got.Input == "" {
		t.Fatalf("input %d bytes truncated=%v", len(got.Input), got.InputTruncated)
	}
	if !utf8.Valid(cutInput([]byte("aé"), 2)) || len(cutInput([]byte("aé"), 2)) != 1 {
		t.Fatal("cutInput split a rune")
	}
}

// When the rest of the record leaves no room, the minimal record (no
// input or output, a marker and the reason) is written; only when not even
// that fits is it ErrTooLarge.
func TestEncodeRecordMinimal(t *testing.T) {
	c := Execution{ID: NewID(time.Now()), Status: StatusSucceeded, Stdout: "out", Input: "in",
		Error: strings.Repeat("e", 20000)}
	b, err := encodeRecord(c, 8<<10)
	if err != nil || len(b) > 8<<10 {
		t.Fatalf("%v, %d bytes", err, len(b))
	}
	got := decodeRecordT(t, b)
	if got.Status != StatusSucceeded || !got.Truncated || !got.InputTruncated || got.Stdout != "" ||
		!strings.Contains(got.Error, "record too large") {
		t.Fatalf("%+v", got)
	}
	if _, err := encodeRecord(c, 100); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("limit 100: %v, want ErrTooLarge", err)
	}
}

// Retention bounds the bytes of the records kept, not only their number:
// the oldest beyond RetentionBytes go, in full walks and incremental
// passes alike, and a record counted small while in flight is counted
// again when it ends bigger.
func TestRetentionBytes(t *testing.T) {
	e := newLocal(t, func(c *Config) {
		c.RetentionCount = 1000
		c.RetentionBytes = MaxRecordSize // the least allowed: 4 MiB
		c.RetentionBatch = 100
	})
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	var ids []string
	put := func(id string, st Status, out int) {
		t.Helper()
		ex := Execution{ID: id, Service: "svc", Cluster: testCluster, Status: st, Stdout: strings.Repeat("x", out)}
		b, _ := json.Marshal(ex)
		if _, err := e.store.Put(ctx, testCluster, ExecKey(id), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	add := func(n int, st Status, out int) {
		for range n {
			id := NewID(base.Add(time.Duration(len(ids)) * time.Second))
			ids = append(ids, id)
			put(id, st, out)
		}
	}
	retain := func(want int, kept ...string) {
		t.Helper()
		n, err := e.d.Retain(testCluster)
		if err != nil || n != want {
			t.Fatalf("deleted %d (%v), want %d", n, err, want)
		}
		es, _ := e.store.List(ctx, testCluster, "exec/", ListOptions{})
		var got []string
		for _, x := range es {
			got = append(got, strings.TrimPrefix(x.Key, "exec/"))
		}
		if strings.Join(got, ",") != strings.Join(kept, ",") {
			t.Fatalf("kept %d records %v, want %v", len(got), got, kept)
		}
	}
	const mib = 1 << 20
	add(10, StatusSucceeded, mib) // 10 MiB: only the newest 3 fit in 4 MiB
	retain(7, ids[7:]...)
	add(2, StatusSucceeded, mib) // incremental: 2 in, 2 out
	retain(2, ids[9:]...)
	if st := e.d.retention(testCluster); st == nil || st.passes != 1 {
		t.Fatalf("pass was not incremental: %+v", st)
	}
	add(1, StatusRunning, 10) // in flight, small: nothing to delete
	retain(0, ids[9:]...)
	put(ids[len(ids)-1], StatusSucceeded, mib) // it ends with 1 MiB of output
	retain(1, ids[10:]...)
	if err := (func() Config { c := testConfig(); c.RetentionBytes = MaxRecordSize - 1; return c }()).Validate(); err == nil ||
		!strings.Contains(err.Error(), "RetentionBytes") {
		t.Fatalf("RetentionBytes below MaxRecordSize: %v", err)
	}
}

// Pages are bounded in bytes as well as count: the API's list answers
// fewer big records (it fits one transport frame when forwarded), and the
// leader's scans page on past a page the byte bound cut short.
func TestListPagesBoundedByBytes(t *testing.T) {
	const n, size = 20, 16 << 10 // 320 KiB in all: more than one scan page
	e := newLocal(t, func(c *Config) { c.listBytes, c.scanBytes = 3*size+1024, 8*size })
	ctx := context.Background()
	base := time.Now().Add(-time.Minute)
	for i := range n {
		ex := Execution{ID: NewID(base.Add(time.Duration(i) * time.Millisecond)), Service: "svc", Cluster: testCluster,
			Status: StatusRunning, Owner: "ghost", Stdout: strings.Repeat("x", size)}
		b, _ := json.Marshal(ex)
		if _, err := e.store.Put(ctx, testCluster, ExecKey(ex.ID), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	es, err := e.d.List(ctx, testCluster, ListFilter{Limit: 100})
	if err != nil || len(es) != 3 {
		t.Fatalf("list: %d records (%v), want the 3 that fit", len(es), err)
	}
	taken, err := e.d.Recover(testCluster)
	if err != nil || taken != n {
		t.Fatalf("recovery took over %d of %d (%v): it stopped at a page cut short by bytes", taken, n, err)
	}
}

// When the store refuses a terminal record that encodeRecord sized, the
// execution still ends: the minimal record (marker, no output) is written.
func TestRecordRefusedTerminalWritesMinimal(t *testing.T) {
	e := newLocal(t, nil)
	e.store.mu.Lock()
	e.store.maxValue = 4 << 10
	e.store.mu.Unlock()
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("head", "-c", "20000", "/dev/zero"), nil, RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || len(ex.Stdout) != 20000 {
		t.Fatalf("%v %s stdout %d", err, ex.Status, len(ex.Stdout))
	}
	rec := e.record(t, ex.ID)
	if rec.Status != StatusSucceeded || !rec.Truncated || rec.Stdout != "" || !strings.Contains(rec.Error, "record too large") {
		t.Fatalf("record %s truncated=%v stdout %d error %q", rec.Status, rec.Truncated, len(rec.Stdout), rec.Error)
	}
}
