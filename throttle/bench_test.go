package throttle

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkAdmitGranted is the hot path: a node in touch with the manager
// admits requests of a limit it is committed to and never exhausts, with
// its ask loop running (on the real clock).
func BenchmarkAdmitGranted(b *testing.B) {
	m := liveManager(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := NewLimiter(LimiterConfig{Node: "a", Call: func(ctx context.Context, body []byte) ([]byte, error) {
		return m.Handle(ctx, "a", body)
	}}, zerolog.Nop())
	go l.Run(ctx)
	s := Spec{Service: "s", Rate: 1 << 40, Per: time.Second, By: ByService, Share: true}.Prepare()
	req := Request{Service: "s", Limits: []Spec{s}, Keys: []string{""}}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if l.Admit(ctx, req).OK && l.Status().Healthy {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("no grant within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	refused := 0
	for b.Loop() {
		if !l.Admit(ctx, req).OK {
			refused++
		}
	}
	b.StopTimer()
	if refused*100 > b.N {
		b.Fatalf("%d of %d refused on a limit never reached", refused, b.N)
	}
}
