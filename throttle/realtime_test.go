package throttle

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// With the real clock and the loop running: a node cut from the manager
// spends its share in the windows after those it committed to.
func TestRealTimeFallbackAfterCut(t *testing.T) {
	m := liveManager(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cut atomic.Bool
	l := NewLimiter(LimiterConfig{Node: "a", CallTimeout: 200 * time.Millisecond, Call: func(ctx context.Context, body []byte) ([]byte, error) {
		if cut.Load() {
			<-ctx.Done()
			return nil, errors.New("cut")
		}
		return m.Handle(ctx, "a", body)
	}}, zerolog.Nop())
	go l.Run(ctx)
	s := Spec{Service: "s", Rate: 50, Per: time.Second, By: ByService, Share: true}.Prepare()
	req := Request{Service: "s", Limits: []Spec{s}, Keys: []string{""}}
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		l.Admit(ctx, req)
		time.Sleep(5 * time.Millisecond)
	}
	cut.Store(true)
	time.Sleep(2200 * time.Millisecond) // the windows it committed to are over
	ok, w0 := 0, Window(time.Now(), time.Second)
	for i := 0; i < 100; i++ {
		if l.Admit(ctx, req).OK {
			ok++
		}
	}
	st := l.Status()
	if ok == 0 {
		t.Fatalf("nothing admitted 2.5 s after the cut (status %+v)", st)
	}
	if ok > 50 && Window(time.Now(), time.Second) == w0 {
		t.Fatalf("%d admitted in one window on the share of a node alone", ok)
	}
	t.Logf("admitted %d on the share", ok)
}

// liveManager is an active manager on the real clock whose activation
// began long enough ago to grant at once; it stops when tb ends.
func liveManager(tb testing.TB) *Manager {
	store := &memStore{data: map[string][]byte{}, fence: 1}
	m := NewManager(ManagerConfig{Node: "m", MaxSkew: time.Millisecond}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.Activate(ctx, 1, time.Now().Add(-10*time.Second), fenced{store, 1})
	}()
	tb.Cleanup(func() { cancel(); <-done })
	for m.Active() == 0 {
		time.Sleep(time.Millisecond)
	}
	return m
}
