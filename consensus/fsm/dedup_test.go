package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

func put(id ProposalID, key, value string, cas *uint64) Command {
	op := Op{Type: OpPut, Key: key, CAS: cas}
	if value != "" {
		op.Value = []byte(value)
	}
	return Command{ID: id, Ops: []Op{op}}
}

// apply runs one batch entry through Update and decodes its results.
func apply(t *testing.T, m *StateMachine, index uint64, cmds ...Command) []Result {
	t.Helper()
	e, err := EncodeBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Update(sm.Entry{Index: index, Cmd: e})
	if err != nil || r.Value != 1 {
		t.Fatalf("entry %d refused: %+v %v", index, r, err)
	}
	rs, err := DecodeResults(r.Data)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func value(t *testing.T, m *StateMachine, key string) string {
	t.Helper()
	it, ok := m.store.Get(key)
	if !ok {
		return "<absent>"
	}
	return string(it.Value)
}

// TestRetriedCommandAppliesOnce: a proposer that re-proposes a command
// (its first proposal timed out but committed) must not overwrite the
// write another client made in between, and gets the first result back.
// Dedup is per command: a batch mixing a duplicate with a new command
// applies the new one.
func TestRetriedCommandAppliesOnce(t *testing.T) {
	m := NewStateMachine(1, 1).(*StateMachine)
	mine, other := NewProposalID(), NewProposalID()
	first := apply(t, m, 1, put(mine, "k", "mine", nil))
	apply(t, m, 2, put(other, "k", "other", nil))
	fresh := NewProposalID()
	again := apply(t, m, 3, put(mine, "k", "mine", nil), put(fresh, "j", "new", nil))
	if got := value(t, m, "k"); got != "other" {
		t.Fatalf("k = %q after the retry: the write made in between was overwritten", got)
	}
	if !reflect.DeepEqual(again[0], first[0]) {
		t.Fatalf("retry answered %+v, first apply %+v", again[0], first[0])
	}
	if got := value(t, m, "j"); got != "new" || again[1].Conflict || again[1].Revision != 3 {
		t.Fatalf("the new command beside the duplicate: j = %q, %+v", got, again[1])
	}

	// A compare-and-set create retried is answered with its own success,
	// not a conflict with itself.
	cas := NewProposalID()
	created := apply(t, m, 4, put(cas, "c", "1", u(0)))
	if created[0].Conflict {
		t.Fatalf("create: %+v", created[0])
	}
	if r := apply(t, m, 5, put(cas, "c", "1", u(0))); !reflect.DeepEqual(r[0], created[0]) {
		t.Fatalf("retried create: %+v, first %+v", r[0], created[0])
	}
	// Without an ID (entries from before IDs) a command applies each time.
	apply(t, m, 6, put(ProposalID{}, "n", "1", nil))
	if r := apply(t, m, 7, put(ProposalID{}, "n", "1", nil)); r[0].Revision != m.store.Revision() || r[0].Versions[0] != r[0].Revision {
		t.Fatalf("ID-less command: %+v", r[0])
	}
}

// TestRetriedRestoreAppliesOnce: a restore re-proposed after later writes
// must not erase them.
func TestRetriedRestoreAppliesOnce(t *testing.T) {
	m := NewStateMachine(1, 1).(*StateMachine)
	apply(t, m, 1, put(NewProposalID(), "old", "x", nil))
	src := NewStore()
	src.Apply(put(ProposalID{}, "restored", "r", nil))
	id := NewProposalID()
	re, err := EncodeRestore(id, src.Export())
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := m.Update(sm.Entry{Index: 2, Cmd: re}); r.Value != 1 {
		t.Fatal("restore refused")
	}
	apply(t, m, 3, put(NewProposalID(), "later", "y", nil))
	rev := m.store.Revision()
	if r, _ := m.Update(sm.Entry{Index: 4, Cmd: re}); r.Value != 1 {
		t.Fatal("retried restore refused")
	}
	if got := value(t, m, "later"); got != "y" || m.store.Revision() != rev {
		t.Fatalf("the retried restore erased a later write: later = %q, rev %d (was %d)", got, m.store.Revision(), rev)
	}
	if got := value(t, m, "old"); got != "<absent>" {
		t.Fatalf("the restore did not replace the state: old = %q", got)
	}
}

// TestDedupTableInSnapshots: the table travels in dragonboat snapshots (a
// replica restored from one still refuses duplicates, and holds exactly
// the table of the replica that saved it), old snapshots still load (with
// an empty table), and a user export carries no table.
func TestDedupTableInSnapshots(t *testing.T) {
	a := NewStateMachine(1, 1).(*StateMachine)
	var cmds []Command
	for i := 0; i < 100; i++ {
		c := put(NewProposalID(), fmt.Sprintf("k%d", i%10), fmt.Sprint(i), nil)
		if i%3 == 0 {
			c.Ops[0].CAS = u(0) // some conflict: their results are remembered too
		}
		cmds = append(cmds, c)
		apply(t, a, uint64(i+1), c)
	}
	var snap bytes.Buffer
	if err := a.SaveSnapshot(&snap, nil, nil); err != nil {
		t.Fatal(err)
	}
	b := NewStateMachine(1, 2).(*StateMachine)
	if err := b.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()), nil, nil); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := b.SaveSnapshot(&again, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap.Bytes(), again.Bytes()) {
		t.Fatal("a snapshot round trip changed the state or the dedup table")
	}
	if b.dedup.len() != 100 {
		t.Fatalf("restored table holds %d IDs, want 100", b.dedup.len())
	}
	apply(t, b, 101, put(NewProposalID(), "k0", "between", nil))
	ra, rb := apply(t, a, 101, cmds[5]), apply(t, b, 102, cmds[5])
	if !reflect.DeepEqual(ra, rb) || value(t, b, "k0") != "between" {
		t.Fatalf("a duplicate after a snapshot restore: %+v vs %+v, k0 = %q", ra, rb, value(t, b, "k0"))
	}
	if _, err := EncodeRestore(ProposalID{}, snap.Bytes()); err != nil {
		t.Fatalf("a version-3 snapshot as a restore blob: %v", err)
	}
	for i := 1; i < snap.Len(); i += 97 {
		if err := NewStateMachine(1, 3).RecoverFromSnapshot(bytes.NewReader(snap.Bytes()[:i]), nil, nil); !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("snapshot cut at %d of %d: %v", i, snap.Len(), err)
		}
	}

	// Snapshots written before the table: version 2 and JSON.
	var v2 bytes.Buffer
	if err := a.store.saveBinary(&v2, nil); err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"v2": v2.Bytes(), "json": a.store.Export()} {
		c := NewStateMachine(1, 4).(*StateMachine)
		if err := c.RecoverFromSnapshot(bytes.NewReader(blob), nil, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(c.store.Export(), a.store.Export()) || c.dedup.len() != 0 {
			t.Fatalf("%s: state differs or table not empty (%d)", name, c.dedup.len())
		}
	}
	if bytes.Contains(a.store.Export(), []byte(cmds[0].ID.String())) {
		t.Fatal("the user export carries proposal IDs")
	}
}

// TestDedupTableBounded: the table always keeps the newest
// dedupGenEntries IDs and at most twice that, forgetting a generation
// whole; results beyond dedupGenBytes start a generation early.
func TestDedupTableBounded(t *testing.T) {
	d := newDedup()
	ids := make([]ProposalID, 2*dedupGenEntries+10)
	for i := range ids {
		ids[i] = NewProposalID()
		d.add(ids[i], Result{Revision: uint64(i + 1), Versions: []uint64{uint64(i + 1)}})
	}
	if d.len() != dedupGenEntries+10 || len(d.cur.byID)+len(d.prev.byID) != d.len() {
		t.Fatalf("table holds %d (maps %d+%d), want %d", d.len(), len(d.cur.byID), len(d.prev.byID), dedupGenEntries+10)
	}
	if _, ok := d.get(ids[dedupGenEntries-1]); ok {
		t.Fatal("an ID older than two generations was kept")
	}
	for _, i := range []int{dedupGenEntries, 2*dedupGenEntries - 1, 2*dedupGenEntries + 9} {
		if r, ok := d.get(ids[i]); !ok || r.Revision != uint64(i+1) || r.Versions[0] != uint64(i+1) {
			t.Fatalf("ID %d: %+v %v", i, r, ok)
		}
	}
	// Large results: the byte bound starts generations early.
	big := Result{Versions: make([]uint64, MaxOps)}
	for i := range big.Versions {
		big.Versions[i] = 1 << 40
	}
	d = newDedup()
	for i := 0; i < 10000; i++ {
		d.add(NewProposalID(), big)
	}
	if n := len(d.cur.results) + len(d.prev.results); n > 2*dedupGenBytes+len(appendResult(nil, big)) {
		t.Fatalf("%d IDs hold %d bytes of results (bound about %d)", d.len(), n, 2*dedupGenBytes)
	}
}

// TestProposalIDCodecs: IDs survive the binary entry, JSON (a forward)
// and a restore entry; format-2 entries decode without IDs.
func TestProposalIDCodecs(t *testing.T) {
	cmds := []Command{put(NewProposalID(), "a", "1", u(3)), put(ProposalID{}, "b", "", nil)}
	e, err := EncodeBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	if _, got, _, err := DecodeEntry(e); err != nil || !reflect.DeepEqual(got, cmds) {
		t.Fatalf("binary: %v\n got %+v\nwant %+v", err, got, cmds)
	}
	js, _ := json.Marshal(cmds)
	var back []Command
	if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(back, cmds) {
		t.Fatalf("JSON %s: %v %+v", js, err, back)
	}
	if bytes.Count(js, []byte(`"id"`)) != 1 {
		t.Fatalf("JSON of a command without ID names one: %s", js)
	}
	if err := json.Unmarshal([]byte(`[{"id":"xyz","ops":[]}]`), &back); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("bad ID: %v", err)
	}
	v2 := appendCommands([]byte{entryFormatV2, kindBatch}, cmds, false)
	if _, got, _, err := DecodeEntry(v2); err != nil || !got[0].ID.IsZero() || got[0].Ops[0].Key != "a" {
		t.Fatalf("format 2: %v %+v", err, got)
	}
	id := NewProposalID()
	re, err := EncodeRestore(id, NewStore().Export())
	if err != nil {
		t.Fatal(err)
	}
	if ent, err := decodeEntry(re); err != nil || ent.restoreID != id || ValidateSnapshot(ent.blob) != nil {
		t.Fatalf("restore entry: %v %+v", err, ent)
	}
	for i := 2; i < 2+1+16; i++ {
		if _, err := decodeEntry(re[:i]); err == nil {
			t.Fatalf("restore entry cut at %d decoded", i)
		}
	}
}
