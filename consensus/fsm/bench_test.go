package fsm

import (
	"fmt"
	"testing"

	sm "github.com/lni/dragonboat/v4/statemachine"
)

// BenchmarkUpdate: one replica applying batch entries of 32 single-put
// commands over 10,000 keys, each with a fresh proposal ID, decode
// included: the per-replica CPU of the write path (ns/op is per command).
// Encoding the entries is not timed.
func BenchmarkUpdate(b *testing.B) {
	m := NewStateMachine(1, 1).(*StateMachine)
	const per = 32
	cmds := make([]Command, per)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += per {
		b.StopTimer()
		for j := range cmds {
			cmds[j] = Command{ID: NewProposalID(), Ops: []Op{{Type: OpPut, Key: fmt.Sprintf("svc/%05d", (i+j)%10000), Value: make([]byte, 100)}}}
		}
		e, err := EncodeBatch(cmds)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if r, _ := m.Update(sm.Entry{Index: uint64(i/per + 1), Cmd: e}); r.Value != 1 {
			b.Fatal("entry refused")
		}
	}
}
