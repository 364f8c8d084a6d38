package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzDecodeRequest: any request payload decodes or errors, never panics,
// and what decodes re-encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(append(appendRequestHeader(nil, "consensus.apply", 1500*time.Millisecond), "body"...))
	f.Add(appendRequestHeader(nil, "m", 0))
	f.Add([]byte{0, 0, 0, 0, 255, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		m, to, body, err := decodeRequest(p)
		if err != nil {
			return
		}
		if len(m) == 0 || len(m) > MaxMethodLen {
			t.Fatalf("method of %d bytes accepted", len(m))
		}
		again := append(appendRequestHeader(nil, m, to), body...)
		if !bytes.Equal(again, p) {
			t.Fatalf("re-encoded %x, want %x", again, p)
		}
	})
}

func TestOversizeFrameRefusedByServer(t *testing.T) {
	dir := t.TempDir()
	srv := newTransport(t, dir, "server", "127.0.0.1:0", func(tr *Transport) {
		tr.cfg.MaxFrameSize = 4096
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return r.Body, nil })
		tr.Handle("big", func(ctx context.Context, r *Request) ([]byte, error) { return make([]byte, 8192), nil })
	})
	cli := newTransport(t, dir, "client", "127.0.0.1:0", func(tr *Transport) { tr.cfg.MaxFrameSize = 1 << 20 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr := srv.Addr().String()
	// Bigger than the server's bound, within the client's: refused by the server.
	if _, err := cli.Call(ctx, addr, "echo", make([]byte, 256<<10)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("request over the server's bound: %v", err)
	}
	// A handler answering more than its own bound.
	if _, err := cli.Call(ctx, addr, "big", nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("response over the server's bound: %v", err)
	}
	// The connection still serves.
	if got, err := cli.Call(ctx, addr, "echo", []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("after refusals: %q %v", got, err)
	}
}

func TestCloseCancelsHandlersAndWaits(t *testing.T) {
	dir := t.TempDir()
	entered := make(chan struct{})
	var finished atomic.Bool
	srv := newTransport(t, dir, "server", "127.0.0.1:0", func(tr *Transport) {
		tr.Handle("block", func(ctx context.Context, r *Request) ([]byte, error) {
			close(entered)
			<-ctx.Done()
			finished.Store(true)
			return nil, ctx.Err()
		})
	})
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.Addr().String(), "block", nil)
		errc <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("handler never ran")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the handler")
	}
	if err := <-errc; !errors.Is(err, ErrUnreachable) {
		t.Fatalf("call during the peer's Close: %v, want ErrUnreachable", err)
	}
	if _, err := srv.Call(ctx, cli.Addr().String(), "x", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call on a closed transport: %v", err)
	}
}

func TestStreamHandlerErrorAndCancel(t *testing.T) {
	dir := t.TempDir()
	cancelled, entered := make(chan struct{}), make(chan struct{})
	srv := newTransport(t, dir, "server", "127.0.0.1:0", func(tr *Transport) {
		tr.HandleStream("count", func(ctx context.Context, s *Stream) error {
			for i := 0; i < 3; i++ {
				if err := s.Send([]byte{byte(i)}); err != nil {
					return err
				}
			}
			return Errorf("stopped", "after %d from %s", 3, s.Peer())
		})
		tr.HandleStream("forever", func(ctx context.Context, s *Stream) error {
			close(entered)
			<-ctx.Done()
			close(cancelled)
			return ctx.Err()
		})
	})
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := cli.Stream(ctx, srv.Addr().String(), "count")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if b, err := s.Recv(); err != nil || len(b) != 1 || b[0] != byte(i) {
			t.Fatalf("recv %d: %v %v", i, b, err)
		}
	}
	var re *RemoteError
	if _, err := s.Recv(); !errors.As(err, &re) || re.Code != "stopped" || re.Message != "after 3 from client" {
		t.Fatalf("end: %v", err)
	}
	s.Close()

	sctx, scancel := context.WithCancel(ctx)
	s2, err := cli.Stream(sctx, srv.Addr().String(), "forever")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Send([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select { // cancel once the handler runs (a reset may otherwise beat the open frame)
	case <-entered:
	case <-ctx.Done():
		t.Fatal("stream handler never ran")
	}
	scancel()
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("the handler's ctx was not cancelled when the caller cancelled")
	}
	if _, err := s2.Recv(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("recv after cancel: %v", err)
	}
}

// BenchmarkCall: 256 B request and response over one connection, with 1
// and 64 concurrent callers; reports req/s and per-call p50/p99.
func BenchmarkCall(b *testing.B) {
	for _, callers := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			dir := b.TempDir()
			srv := newTransport(b, dir, "server", "127.0.0.1:0", func(tr *Transport) {
				tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return r.Body, nil })
			})
			cli := newTransport(b, dir, "client", "127.0.0.1:0", nil)
			addr := srv.Addr().String()
			body := bytes.Repeat([]byte{'x'}, 256)
			ctx := context.Background()
			if _, err := cli.Call(ctx, addr, "echo", body); err != nil {
				b.Fatal(err)
			}
			lat := make([][]time.Duration, callers)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < callers; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						t0 := time.Now()
						if _, err := cli.Call(ctx, addr, "echo", body); err != nil {
							b.Error(err)
							return
						}
						lat[c] = append(lat[c], time.Since(t0))
					}
				}(c)
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			var all []time.Duration
			for _, l := range lat {
				all = append(all, l...)
			}
			sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
			if len(all) > 0 {
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}
