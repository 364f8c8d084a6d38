package throttle

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cutAndRestart: with 60 per minute on a, b and c, c is cut and spends
// fallback, then its process restarts within the window and its lease;
// after the heal, the three pumped to the limit admit at most the cap.
func cutAndRestart(t *testing.T, spendC int) int {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Minute, 60, true)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) - 5*time.Second)
	r.pump(8)
	for _, n := range []string{"a", "b", "c"} {
		if st := r.nodes[n].Status(); st.Share != 3 {
			t.Fatalf("%s told roster %d, want 3", n, st.Share)
		}
	}
	r.setCut("c", true)
	r.pump(2)
	now = r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + time.Second) // c never committed
	win := Window(r.clk.now(), s.Per)
	total := r.admitN("c", s, "", spendC)
	if total != spendC {
		t.Fatalf("the cut node admitted %d of %d, within its share 20", total, spendC)
	}
	r.clk.add(2 * time.Second)
	r.restart("c") // same name, same data dir, same window, lease still running
	r.setCut("c", false)
	r.pump(4)
	for round := 0; round < 40; round++ {
		for _, n := range []string{"a", "b", "c"} {
			total += r.admitN(n, s, "", 5)
		}
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if w := Window(r.clk.now(), s.Per); w != win {
		t.Fatalf("the test left its window (%d, %d)", win, w)
	}
	return total
}

func TestRestartedNodeReportsItsFallback(t *testing.T) {
	if got := cutAndRestart(t, 20); got > 60 || got < 55 {
		t.Fatalf("%d admitted in one window across c's restart, want 55..60 (cap 60)", got)
	}
}

// A restart between two records of the spend file (mid-chunk): what was
// spent since the last record is covered by it.
func TestRestartMidChunk(t *testing.T) {
	for _, spent := range []int{1, 3, 7} { // chunk = max(1, 20/8) = 2
		if got := cutAndRestart(t, spent); got > 60 || got < 55 {
			t.Fatalf("c spent %d: %d admitted across its restart, want 55..60", spent, got)
		}
	}
}

func TestSpendFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SpendFileName)
	s := spec(time.Minute, 60, true).Prepare()
	h := spec(time.Hour, 600, true).Prepare()
	now := time.Unix(1_700_000_000, 0)
	if recs, err := readSpend(path, now); err != nil || len(recs) != 0 {
		t.Fatalf("missing file: %v %v, want nothing", recs, err)
	}
	w, wh := Window(now, s.Per), Window(now, h.Per)
	in := []spendRec{{Spec: s, Window: w, Key: "", Upto: 4},
		{Spec: s, Window: w - 1, Key: "x", Upto: 2},
		{Spec: h, Window: wh, Key: "tok", Upto: 9}}
	if err := writeSpend(path, in, now); err != nil {
		t.Fatal(err)
	}
	recs, err := readSpend(path, now)
	if err != nil || len(recs) != 2 {
		t.Fatalf("round trip: %+v %v, want the 2 entries of windows not over", recs, err)
	}
	for i, r := range recs {
		want := []spendRec{in[0], in[2]}[i]
		if r.Spec.id() != want.Spec.id() || r.Window != want.Window || r.Key != want.Key ||
			r.Upto != want.Upto {
			t.Fatalf("entry %d: %+v, want %+v", i, r, want)
		}
	}
	// A minute on, the minute's entry is pruned, the hour's kept.
	recs, err = readSpend(path, now.Add(time.Minute))
	if err != nil || len(recs) != 1 || recs[0].Key != "tok" {
		t.Fatalf("a minute on: %+v %v, want the hour's entry only", recs, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": b[:len(b)/2], "garbage": []byte("\x00\xffnot json"), "empty": nil,
		"bad entry": []byte(`{"version":1,"spent":[{"spec":{"service":"","rate":1,` +
			`"per":60000000000},"upto":1}]}`),
		"version": []byte(`{"version":7,"spent":[]}`),
		"huge":    make([]byte, maxSpendFile+1),
	} {
		if err := os.WriteFile(path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readSpend(path, now); err == nil {
			t.Fatalf("%s file read without error", name)
		}
	}
}

// A node whose spend file is corrupt commits to no durable window begun
// before its start: the manager keeps its share there, so the cap holds.
func TestCorruptSpendFileHoldsBack(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Minute, 60, true)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) - 5*time.Second)
	r.pump(8)
	r.setCut("c", true)
	r.pump(2)
	now = r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + time.Second)
	total := r.admitN("c", s, "", 20)
	bad := filepath.Join(r.dir, "c-"+SpendFileName)
	if err := os.WriteFile(bad, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.restart("c")
	r.setCut("c", false)
	r.pump(4)
	c := 0
	for round := 0; round < 40; round++ {
		c += r.admitN("c", s, "", 5)
		total += r.admitN("a", s, "", 5) + r.admitN("b", s, "", 5)
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if total+c > 60 || c != 0 {
		t.Fatalf("%d admitted (%d by the restarted c), want at most 60 and none by c", total+c, c)
	}
	// The next window, c commits and is served again.
	now = r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + time.Second)
	r.pump(4)
	if got := r.admitN("c", s, "", 5); got == 0 {
		t.Fatal("c admits nothing in the window after its start")
	}
}

// Under a minute nothing is recorded: the restarted process commits to no
// window begun before its start, so the manager keeps its share there.
func TestRestartInsideAShortWindow(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Second, 60, true)
	r.clk.add(3 * time.Second)
	r.pump(8)
	r.setCut("c", true)
	r.pump(2)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + 10*time.Millisecond)
	win := Window(r.clk.now(), s.Per)
	total := r.admitN("c", s, "", 20)
	if total != 20 {
		t.Fatalf("the cut node admitted %d of its share 20", total)
	}
	r.clk.add(10 * time.Millisecond)
	r.restart("c")
	r.setCut("c", false)
	r.pump(4)
	for round := 0; round < 20; round++ {
		for _, n := range []string{"a", "b", "c"} {
			total += r.admitN(n, s, "", 5)
		}
		r.pump(1)
		r.clk.add(10 * time.Millisecond)
	}
	if w := Window(r.clk.now(), s.Per); w != win {
		t.Fatalf("the test left its window (%d, %d)", win, w)
	}
	if total > 60 || total < 55 {
		t.Fatalf("%d admitted in one 1s window across c's restart, want 55..60", total)
	}
}

// A fallback token that cannot be recorded is not spent.
func TestUnrecordedFallbackIsRefused(t *testing.T) {
	r := newRig(t, "a", "b", "c")
	r.activate(1)
	s := spec(time.Minute, 60, true)
	now := r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) - 5*time.Second)
	r.pump(8)
	r.setCut("c", true)
	r.pump(2)
	now = r.clk.now()
	r.clk.add(WindowStart(Window(now, s.Per)+1, s.Per).Sub(now) + time.Second)
	// A directory where the file goes: the rename onto it fails.
	if err := os.Mkdir(filepath.Join(r.dir, "c-"+SpendFileName), 0o700); err != nil {
		t.Fatal(err)
	}
	if got := r.admitN("c", s, "", 5); got != 0 {
		t.Fatalf("c admitted %d with its spend file unwritable, want 0", got)
	}
}
