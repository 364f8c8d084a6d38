package throttle

import (
	"context"
	"fmt"
	"path/filepath"
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

// BenchmarkWriteSpend is what the fallback path pays per chunk of a share:
// one durable rewrite of the spend file, here with 1 and 100 keys recorded.
func BenchmarkWriteSpend(b *testing.B) {
	s := Spec{Service: "s", Rate: 6000, Per: time.Minute, By: ByIP, Share: true}.Prepare()
	now := time.Now()
	for _, n := range []int{1, 100} {
		recs := make([]spendRec, n)
		for i := range recs {
			recs[i] = spendRec{Spec: s, Window: Window(now, s.Per), Key: fmt.Sprintf("10.0.0.%d", i),
				Upto: 250}
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), SpendFileName)
			for b.Loop() {
				if err := writeSpend(path, recs, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
