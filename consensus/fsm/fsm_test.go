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

func u(v uint64) *uint64 { return &v }

func TestCASAndVersions(t *testing.T) {
	s := NewStore()
	r := s.Apply(Command{Ops: []Op{{Type: OpPut, Key: "a", Value: []byte("1"), CAS: u(0)}}})
	if r.Conflict || r.Versions[0] != 1 || r.Revision != 1 {
		t.Fatalf("create: %+v", r)
	}
	cases := []struct {
		name     string
		cmd      Command
		conflict bool
	}{
		{"create again with cas 0", Command{Ops: []Op{{Type: OpPut, Key: "a", CAS: u(0)}}}, true},
		{"stale cas", Command{Ops: []Op{{Type: OpPut, Key: "a", CAS: u(7)}}}, true},
		{"cas on absent key", Command{Ops: []Op{{Type: OpPut, Key: "zz", CAS: u(1)}}}, true},
		{"matching cas", Command{Ops: []Op{{Type: OpPut, Key: "a", Value: []byte("2"), CAS: u(1)}}}, false},
		{"atomic: second op conflicts, first must not apply", Command{Ops: []Op{{Type: OpPut, Key: "b", Value: []byte("x")}, {Type: OpPut, Key: "a", CAS: u(1)}}}, true},
	}
	for _, c := range cases {
		if r := s.Apply(c.cmd); r.Conflict != c.conflict {
			t.Errorf("%s: conflict=%v want %v", c.name, r.Conflict, c.conflict)
		}
	}
	if _, ok := s.Get("b"); ok {
		t.Error("a conflicting command wrote part of itself")
	}
	it, _ := s.Get("a")
	if string(it.Value) != "2" || it.Version != 2 || it.CreateVersion != 1 {
		t.Errorf("a = %+v", it)
	}
	r = s.Apply(Command{Ops: []Op{{Type: OpDelete, Key: "a", CAS: u(2)}}})
	if r.Conflict {
		t.Fatal("delete with matching cas conflicted")
	}
	if _, ok := s.Get("a"); ok {
		t.Fatal("deleted key still there")
	}
}

func TestListPrefixAfterReverseMatch(t *testing.T) {
	s := NewStore()
	for i := 0; i < 10; i++ {
		status := "ok"
		if i%2 == 1 {
			status = "bad"
		}
		s.Apply(Command{Ops: []Op{{Type: OpPut, Key: fmt.Sprintf("exec/%02d", i), Value: []byte(`{"status":"` + status + `"}`)}}})
	}
	s.Apply(Command{Ops: []Op{{Type: OpPut, Key: "svc/x", Value: []byte("{}")}}})
	keys := func(items []Item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Key)
		}
		return out
	}
	if got := keys(s.List(ListQuery{Prefix: "exec/", Limit: 3})); !reflect.DeepEqual(got, []string{"exec/00", "exec/01", "exec/02"}) {
		t.Errorf("forward: %v", got)
	}
	if got := keys(s.List(ListQuery{Prefix: "exec/", Limit: 2, Reverse: true})); !reflect.DeepEqual(got, []string{"exec/09", "exec/08"}) {
		t.Errorf("reverse: %v", got)
	}
	if got := keys(s.List(ListQuery{Prefix: "exec/", After: "exec/07"})); !reflect.DeepEqual(got, []string{"exec/08", "exec/09"}) {
		t.Errorf("after: %v", got)
	}
	if got := keys(s.List(ListQuery{Prefix: "exec/", After: "exec/02", Reverse: true})); !reflect.DeepEqual(got, []string{"exec/01", "exec/00"}) {
		t.Errorf("reverse after: %v", got)
	}
	if got := keys(s.List(ListQuery{Prefix: "exec/", Match: map[string]string{"status": "bad"}, Limit: 2, Reverse: true})); !reflect.DeepEqual(got, []string{"exec/09", "exec/07"}) {
		t.Errorf("match: %v", got)
	}
	if got := keys(s.List(ListQuery{Prefix: "svc/"})); !reflect.DeepEqual(got, []string{"svc/x"}) {
		t.Errorf("prefix: %v", got)
	}
}

// MaxBytes ends a page before the value that would take it past the
// bound; the first item always comes, so paging always moves on.
func TestListMaxBytes(t *testing.T) {
	s := NewStore()
	for i := 0; i < 5; i++ {
		s.Apply(Command{Ops: []Op{{Type: OpPut, Key: fmt.Sprintf("k%d", i), Value: make([]byte, 100*(i+1))}}})
	}
	keys := func(items []Item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Key)
		}
		return out
	}
	if got := keys(s.List(ListQuery{MaxBytes: 600})); !reflect.DeepEqual(got, []string{"k0", "k1", "k2"}) {
		t.Errorf("forward: %v", got) // 100+200+300; k3 would make 1000
	}
	if got := keys(s.List(ListQuery{MaxBytes: 600, Reverse: true})); !reflect.DeepEqual(got, []string{"k4"}) {
		t.Errorf("reverse: %v", got) // 500; k3 would make 900
	}
	if got := keys(s.List(ListQuery{MaxBytes: 10, After: "k3"})); !reflect.DeepEqual(got, []string{"k4"}) {
		t.Errorf("first item over the bound: %v", got)
	}
}

func TestSnapshotRoundTripAndDeterminism(t *testing.T) {
	a, b := &StateMachine{store: NewStore()}, &StateMachine{store: NewStore()}
	var entries [][]byte
	for i := 0; i < 50; i++ {
		e, err := EncodeBatch([]Command{{Ops: []Op{{Type: OpPut, Key: fmt.Sprintf("k%d", i%7), Value: []byte(fmt.Sprint(i))}}}, {Ops: []Op{{Type: OpDelete, Key: fmt.Sprintf("k%d", i%5)}}}})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	for i, e := range entries {
		ra, _ := a.Update(sm.Entry{Index: uint64(i + 1), Cmd: e})
		rb, _ := b.Update(sm.Entry{Index: uint64(i + 1), Cmd: e})
		if !bytes.Equal(ra.Data, rb.Data) {
			t.Fatal("two replicas answered differently")
		}
	}
	if !bytes.Equal(a.store.Export(), b.store.Export()) {
		t.Fatal("replicas diverged")
	}
	var buf bytes.Buffer
	if err := a.SaveSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	c := &StateMachine{store: NewStore()}
	if err := c.RecoverFromSnapshot(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.store.Export(), c.store.Export()) {
		t.Fatal("snapshot round trip changed the state")
	}
	// Restore entry replaces the state and keeps the revision moving forward.
	blob := NewStore().Export()
	re, err := EncodeRestore(ProposalID{}, blob)
	if err != nil {
		t.Fatal(err)
	}
	before := c.store.Revision()
	c.Update(sm.Entry{Index: 99, Cmd: re})
	if c.store.Len() != 0 || c.store.Revision() <= before {
		t.Fatalf("restore: len %d rev %d (was %d)", c.store.Len(), c.store.Revision(), before)
	}
	if _, err := EncodeRestore(ProposalID{}, []byte("garbage")); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("garbage snapshot: %v", err)
	}
}

// TestBinaryCodecs: commands, results and snapshots survive the binary
// round trip exactly; format-1 (JSON) entries and JSON snapshots still load.
func TestBinaryCodecs(t *testing.T) {
	cmds := []Command{
		{Ops: []Op{{Type: OpPut, Key: "a", Value: []byte("1"), CAS: u(0)}, {Type: OpPut, Key: "b", CAS: u(7)}}},
		{Ops: []Op{{Type: OpDelete, Key: "a"}, {Type: OpPut, Key: "ü/\x00", Value: bytes.Repeat([]byte{0, 0xff}, 300)}}},
	}
	e, err := EncodeBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	kind, got, _, err := DecodeEntry(e)
	if err != nil || kind != kindBatch || !reflect.DeepEqual(got, cmds) {
		t.Fatalf("binary entry: kind %d err %v\n got %+v\nwant %+v", kind, err, got, cmds)
	}
	js, _ := json.Marshal(cmds)
	if _, got, _, err := DecodeEntry(append([]byte{entryFormatJSON, kindBatch}, js...)); err != nil || !reflect.DeepEqual(got, cmds) {
		t.Fatalf("JSON entry: %v %+v", err, got)
	}
	for i := 1; i < len(e); i++ {
		if _, _, _, err := DecodeEntry(e[:i]); err == nil {
			t.Fatalf("entry cut at %d of %d decoded", i, len(e))
		}
	}
	rs := []Result{{Revision: 9, Versions: []uint64{8, 0, 9}}, {Revision: 9, Conflict: true, ConflictKey: "b"}}
	if got, err := DecodeResults(encodeResults(rs)); err != nil || !reflect.DeepEqual(got, rs) {
		t.Fatalf("results: %v %+v", err, got)
	}
	jr, _ := json.Marshal(rs)
	if got, err := DecodeResults(jr); err != nil || !reflect.DeepEqual(got, rs) {
		t.Fatalf("JSON results: %v %+v", err, got)
	}
	s := NewStore()
	for i := 0; i < 3000; i++ { // more than one 32 KiB write chunk
		s.Apply(Command{Ops: []Op{{Type: OpPut, Key: fmt.Sprintf("k/%04d", i), Value: bytes.Repeat([]byte{byte(i)}, i%40)}}})
	}
	var bin, js2 bytes.Buffer
	if err := s.saveBinary(&bin, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&js2); err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"binary": bin.Bytes(), "json": js2.Bytes()} {
		c := NewStore()
		if err := c.Load(bytes.NewReader(blob)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(c.Export(), s.Export()) {
			t.Fatalf("%s snapshot round trip changed the state", name)
		}
	}
	if err := NewStore().Load(bytes.NewReader(bin.Bytes()[:bin.Len()-1])); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("truncated binary snapshot: %v", err)
	}
}

func TestBadEntriesChangeNothing(t *testing.T) {
	m := &StateMachine{store: NewStore()}
	for _, e := range [][]byte{nil, {1}, {9, 1}, {1, 9, '{'}, {1, 1, '['}, append([]byte{1, 1}, []byte(`[{"ops":[]}]`)...),
		{2, 1, 1, 0}, {2, 1, 1, 1, 9, 1, 'k', 0}, {2, 1, 1, 1, 1, 9, 'k', 0}, {2, 1, 1, 1, 1, 1, 'k', 0, 0}} {
		r, err := m.Update(sm.Entry{Cmd: e})
		if err != nil || r.Value != 0 {
			t.Errorf("%q: %+v %v", e, r, err)
		}
	}
	if m.store.Revision() != 0 {
		t.Fatal("a bad entry changed the state")
	}
	if _, err := EncodeBatch([]Command{{Ops: []Op{{Type: "drop", Key: "x"}}}}); err == nil {
		t.Error("unknown op type accepted")
	}
}

func FuzzDecodeEntry(f *testing.F) {
	good, _ := EncodeBatch([]Command{{Ops: []Op{{Type: OpPut, Key: "k", Value: []byte("v"), CAS: u(0)}}}})
	f.Add(good)
	f.Add([]byte{1, 2, '{'})
	f.Add([]byte{})
	f.Add(append([]byte{1, 1}, `[{"ops":[{"t":"put","k":"a","v":"eA=="}]}]`...))
	f.Add([]byte{2, 1, 1, 1, 0x81, 1, 'k', 0, 0})     // binary: put k with CAS 0
	f.Add([]byte{2, 1, 0xff, 0xff, 0xff, 0xff, 0x0f}) // binary: a huge count
	f.Add(append(append([]byte{2, 2}, snapshotMagic...), 1, 0xff, 0xff, 0x7f))
	withID, _ := EncodeBatch([]Command{{ID: ProposalID{1}, Ops: []Op{{Type: OpPut, Key: "k"}}}})
	f.Add(withID)
	f.Add(append(append([]byte{3, 2, 1}, make([]byte, 16)...), append(snapshotMagicV3, 0, 0, 1)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &StateMachine{store: NewStore()}
		if _, err := m.Update(sm.Entry{Index: 1, Cmd: data}); err != nil {
			t.Fatal(err)
		}
		_, _ = DecodeResults(data)
		_ = ValidateSnapshot(data)
		_ = NewStateMachine(1, 1).RecoverFromSnapshot(bytes.NewReader(data), nil, nil)
	})
}
