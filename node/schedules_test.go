package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/schedule"
)

// TestScheduleBackend: a schedule of a missing or non-exec service is a
// 400 naming the service field; reads show the next tick; a delete takes
// the firing state with it.
func TestScheduleBackend(t *testing.T) {
	kv := &fsmKV{st: fsm.NewStore()}
	now := time.Date(2026, 5, 1, 10, 0, 30, 0, time.UTC)
	b := &scheduleBackend{kv: kv, now: func() time.Time { return now }}
	ctx := context.Background()
	s := schedule.Schedule{Name: "m", Service: "job", Cron: "* * * * *"}
	s.Normalize()
	var he *httpapi.Error
	if _, err := b.PutSchedule(ctx, "c", s, nil); !errors.As(err, &he) || he.Status != 400 || he.Path != "service" {
		t.Fatalf("missing service: %v", err)
	}
	st := &stateBackend{kv: kv}
	if _, err := st.PutService(ctx, "c", dispatch.Service{Name: "job", Type: dispatch.TypeHTTP, Upstream: "http://127.0.0.1:1"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutSchedule(ctx, "c", s, nil); !errors.As(err, &he) || he.Path != "service" {
		t.Fatalf("http service: %v", err)
	}
	if _, err := st.PutService(ctx, "c", dispatch.Service{Name: "job", Type: dispatch.TypeExec, Command: []string{"true"}}, nil); err != nil {
		t.Fatal(err)
	}
	zero := uint64(0)
	if _, err := b.PutSchedule(ctx, "c", s, &zero); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PutSchedule(ctx, "c", s, &zero); !errors.As(err, &he) || he.Status != 409 {
		t.Fatalf("cas=0 on an existing schedule: %v", err)
	}
	got, err := b.GetSchedule(ctx, "c", "m")
	if err != nil || !got.Next.Equal(time.Date(2026, 5, 1, 10, 1, 0, 0, time.UTC)) || !got.UpdatedAt.Equal(now) || got.Version == 0 {
		t.Fatalf("get: %+v %v", got, err)
	}
	kv.Apply(ctx, "c", fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: schedule.StateKey("m"), Value: []byte(`{"last":"2026-05-01T10:00:00Z"}`)}}})
	if err := b.DeleteSchedule(ctx, "c", "m", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := kv.Get(ctx, "c", schedule.StateKey("m")); ok {
		t.Error("state kept after delete")
	}
	if err := b.DeleteSchedule(ctx, "c", "m", nil); !errors.As(err, &he) || he.Status != 404 {
		t.Errorf("delete again: %v", err)
	}
}
