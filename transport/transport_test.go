package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

func tlsFor(t testing.TB, dir, name string) *tls.Config {
	t.Helper()
	ca, cert, key, err := tlsutil.EnsureDevFiles(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTransport(t testing.TB, dir, name, addr string, setup func(*Transport)) *Transport {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BindAddr = addr
	cfg.TLS = tlsFor(t, dir, name)
	tr, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(tr)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func echoServer(t testing.TB, dir string) *Transport {
	return newTransport(t, dir, "server", "127.0.0.1:0", func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) {
			return append([]byte(r.Peer+":"), r.Body...), nil
		})
		tr.Handle("fail", func(ctx context.Context, r *Request) ([]byte, error) {
			return nil, Errorf("not_found", "no %s", r.Body)
		})
		tr.Handle("plain", func(ctx context.Context, r *Request) ([]byte, error) { return nil, errors.New("boom") })
		tr.Handle("panic", func(ctx context.Context, r *Request) ([]byte, error) { panic("oops") })
		tr.Handle("sleep", func(ctx context.Context, r *Request) ([]byte, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		tr.Handle("outoftime", func(ctx context.Context, r *Request) ([]byte, error) {
			<-ctx.Done()
			return nil, Errorf("no_quorum", "ran out of time waiting for a leader")
		})
		tr.HandleStream("upper", func(ctx context.Context, s *Stream) error {
			for {
				b, err := s.Recv()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.Send(bytes.ToUpper(b)); err != nil {
					return err
				}
			}
		})
	})
}

func TestUnaryCallsShareOneConnection(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := fmt.Sprintf("client:%d", i)
			got, err := cli.Call(ctx, srv.Addr().String(), "echo", []byte(fmt.Sprint(i)))
			if err != nil || string(got) != want {
				errs <- fmt.Errorf("call %d: %q %v", i, got, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cli.mu.Lock()
	n := len(cli.conns)
	cli.mu.Unlock()
	srv.mu.Lock()
	in := len(srv.inbound)
	srv.mu.Unlock()
	if n != 1 || in != 1 {
		t.Errorf("connections: client pool %d, server inbound %d; want 1 and 1", n, in)
	}
}

func TestErrorsAndPanics(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx := context.Background()
	addr := srv.Addr().String()
	cases := map[string]string{"fail": "not_found", "plain": CodeInternal, "panic": CodeInternal, "nosuch": CodeNoHandler}
	for method, code := range cases {
		_, err := cli.Call(ctx, addr, method, []byte("x"))
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != code {
			t.Errorf("%s: %v, want code %s", method, err, code)
		}
	}
	// The server survived the panic.
	if _, err := cli.Call(ctx, addr, "echo", nil); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := cli.Call(dctx, addr, "sleep", nil)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Errorf("deadline: %v after %s", err, time.Since(start))
	}
	// A handler that runs out of the time it was sent says why before the
	// caller's own deadline ends the call: handlers get a margin less.
	dctx, cancel = context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = cli.Call(dctx, addr, "outoftime", nil)
	if re := (*RemoteError)(nil); !errors.As(err, &re) || re.Code != "no_quorum" {
		t.Errorf("handler out of time: %v, want its own no_quorum answer", err)
	}
	big := make([]byte, cli.cfg.MaxFrameSize+1)
	if _, err := cli.Call(ctx, addr, "echo", big); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversize: %v", err)
	}
}

func TestStreaming(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := cli.Stream(ctx, srv.Addr().String(), "upper")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, w := range []string{"a", "bc", "def"} {
		if err := s.Send([]byte(w)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Recv()
		if err != nil || string(got) != string(bytes.ToUpper([]byte(w))) {
			t.Fatalf("recv: %q %v", got, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestPeerGoneIsUnreachableAndRedials(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	addr := srv.Addr().String()
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Call(ctx, addr, "echo", nil); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_, err := cli.Call(ctx, addr, "echo", nil)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("after the peer closed: %v, want ErrUnreachable", err)
	}
	// Same address again: the next call dials a fresh connection.
	newTransport(t, dir, "server", addr, func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return []byte("back"), nil })
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := cli.Call(ctx, addr, "echo", nil)
		if err == nil && string(got) == "back" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no redial: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nobody at all at an address: unreachable within the handshake timeout.
	l, _ := net.ListenPacket("udp", "127.0.0.1:0")
	dead := l.LocalAddr().String()
	l.Close()
	cctx, ccancel := context.WithTimeout(ctx, 8*time.Second)
	defer ccancel()
	if _, err := cli.Call(cctx, dead, "echo", nil); !errors.Is(err, ErrUnreachable) && !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("dead address: %v, want ErrUnreachable (or a deadline) and ErrNotSent", err)
	}
}

func TestForeignCARefused(t *testing.T) {
	srv := echoServer(t, t.TempDir())
	other := newTransport(t, t.TempDir(), "intruder", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := other.Call(ctx, srv.Addr().String(), "echo", nil); err == nil {
		t.Fatal("a node with a foreign CA was served")
	}
	// And the other way round: our client refuses a foreign server.
	dir := t.TempDir()
	foreignSrv := newTransport(t, filepath.Join(dir, "x"), "server", "127.0.0.1:0", func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil })
	})
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	if _, err := cli.Call(ctx, foreignSrv.Addr().String(), "echo", nil); err == nil {
		t.Fatal("a client accepted a server with a foreign CA")
	}
}

// TestProbeTellsRefusedFromAccepted: Probe is nil between nodes of one CA
// and ErrRefused (not only ErrUnreachable) when either side refuses the
// other's certificate; a peer that is merely gone is not "refused".
func TestProbeTellsRefusedFromAccepted(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	friend := newTransport(t, dir, "friend", "127.0.0.1:0", nil)
	intruder := newTransport(t, t.TempDir(), "intruder", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := friend.Probe(ctx, srv.Addr().String()); err != nil {
		t.Fatalf("same CA: %v", err)
	}
	if err := intruder.Probe(ctx, srv.Addr().String()); !errors.Is(err, ErrRefused) {
		t.Fatalf("a foreign client probing: %v, want ErrRefused", err)
	}
	if err := srv.Probe(ctx, intruder.Addr().String()); !errors.Is(err, ErrRefused) {
		t.Fatalf("probing a foreign server: %v, want ErrRefused", err)
	}
	if _, err := intruder.Call(ctx, srv.Addr().String(), "echo", nil); !errors.Is(err, ErrRefused) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a foreign client's call: %v, want ErrRefused and ErrUnreachable", err)
	}
	l, _ := net.ListenPacket("udp", "127.0.0.1:0")
	gone := l.LocalAddr().String()
	l.Close()
	if err := friend.Probe(ctx, gone); err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("nobody there: %v, want an error that is not ErrRefused", err)
	}
}

func TestGarbageDatagramsDoNotHurt(t *testing.T) {
	dir := t.TempDir()
	srv := echoServer(t, dir)
	u, err := net.Dial("udp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		u.Write(bytes.Repeat([]byte{byte(i)}, 1+i*7%1200))
	}
	u.Close()
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Call(ctx, srv.Addr().String(), "echo", nil); err != nil {
		t.Fatal(err)
	}
}

// Disconnect (gossip declared the peer failed) fails the calls in flight on
// that peer at once, and the next call dials a fresh connection.
func TestDisconnectFailsCallsInFlight(t *testing.T) {
	dir := t.TempDir()
	held := make(chan struct{}, 1)
	srv := newTransport(t, dir, "server", "127.0.0.1:0", func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) {
			return append([]byte(r.Peer+":"), r.Body...), nil
		})
		tr.Handle("hold", func(ctx context.Context, r *Request) ([]byte, error) {
			held <- struct{}{}
			<-ctx.Done() // answers only at its deadline
			return nil, ctx.Err()
		})
	})
	addr := srv.Addr().String()
	cli := newTransport(t, dir, "client", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, addr, "hold", nil)
		errc <- err
	}()
	<-held
	start := time.Now()
	cli.Disconnect(addr, "test: peer failed")
	select {
	case err := <-errc:
		if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNotSent) {
			t.Fatalf("call in flight: %v, want ErrUnreachable and not ErrNotSent (its outcome is unknown)", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("call failed %v after Disconnect", el)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight did not fail after Disconnect")
	}
	if got, err := cli.Call(ctx, addr, "echo", []byte("x")); err != nil || string(got) != "client:x" {
		t.Fatalf("after Disconnect: %q %v", got, err)
	}
	cli.Disconnect("127.0.0.1:1", "never dialed") // a no-op
}
