package node

import (
	"context"
	"errors"
	"testing"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
)

// validatingKV refuses what consensus.Manager.Apply refuses before
// proposing (fsm.Command.Validate) and applies the rest to an fsm.Store.
type validatingKV struct {
	kvStore
	st *fsm.Store
}

func (v validatingKV) Apply(_ context.Context, _ string, cmd fsm.Command) (fsm.Result, error) {
	if err := cmd.Validate(); err != nil {
		return fsm.Result{}, err
	}
	return v.st.Apply(cmd), nil
}

// The state machine's refusal of an oversize value reaches dispatch as
// ErrTooLarge, which it never retries; other bad commands stay what they are.
func TestDispatchStoreOversizeIsErrTooLarge(t *testing.T) {
	s := dispatchStore{kv: validatingKV{st: fsm.NewStore()}}
	ctx := context.Background()
	if _, err := s.Put(ctx, "c", "exec/a", make([]byte, dispatch.MaxRecordSize), nil); err != nil {
		t.Fatalf("a value of MaxRecordSize: %v", err)
	}
	_, err := s.Put(ctx, "c", "exec/b", make([]byte, dispatch.MaxRecordSize+1), nil)
	if !errors.Is(err, dispatch.ErrTooLarge) || !errors.Is(err, fsm.ErrBadCommand) {
		t.Fatalf("oversize put: %v, want ErrTooLarge", err)
	}
	_, err = s.PutMulti(ctx, "c", []dispatch.KV{{Key: "exec/c", Value: []byte("x")},
		{Key: "idem/s/k", Value: make([]byte, dispatch.MaxRecordSize+1)}})
	if !errors.Is(err, dispatch.ErrTooLarge) {
		t.Fatalf("oversize put multi: %v, want ErrTooLarge", err)
	}
	_, err = s.Put(ctx, "c", "", []byte("x"), nil)
	if !errors.Is(err, fsm.ErrBadCommand) || errors.Is(err, dispatch.ErrTooLarge) {
		t.Fatalf("empty key: %v", err)
	}
}
