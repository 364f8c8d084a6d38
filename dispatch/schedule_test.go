package dispatch

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRunWithWritesInTheSameCommand: RunOptions.With's writes land with
// the first record, which names the schedule and tick; a failed compare
// on one of them writes neither and is ErrConflict.
func TestRunWithWritesInTheSameCommand(t *testing.T) {
	e := newLocal(t, nil)
	tick := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC)
	zero := uint64(0)
	var gotID string
	ex, err := e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{Async: true,
		Schedule: "nightly", ScheduledAt: tick, With: func(id string) []KV {
			gotID = id
			return []KV{{Key: "schedule-state/nightly", Value: []byte(id), CAS: &zero}}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != ex.ID || ex.Schedule != "nightly" || !ex.ScheduledAt.Equal(tick) {
		t.Fatalf("%+v (With saw %q)", ex, gotID)
	}
	if rec := e.record(t, ex.ID); rec.Schedule != "nightly" || !rec.ScheduledAt.Equal(tick) {
		t.Fatalf("record %+v", rec)
	}
	v, _, found, _ := e.store.Get(context.Background(), testCluster, "schedule-state/nightly")
	if !found || string(v) != ex.ID {
		t.Fatalf("state %q %v", v, found)
	}
	// The same compare again fails: no second record.
	_, err = e.d.Run(context.Background(), testCluster, execSvc("true"), nil, RunOptions{Async: true,
		With: func(string) []KV { return []KV{{Key: "schedule-state/nightly", Value: []byte("x"), CAS: &zero}} }})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("second run: %v, want ErrConflict", err)
	}
	if n := e.store.count(testCluster, "exec/"); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}
