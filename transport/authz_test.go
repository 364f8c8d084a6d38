package transport

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Authorize sees the name of the caller's verified certificate and
// refuses unary and stream calls alike with CodeForbidden before the
// handler runs; a probe (an unknown method) still answers no_handler, so
// authorization never looks like a TLS refusal. ProbeAs refuses a peer
// whose certificate names another node than the one expected.
func TestAuthorizeAndProbeAs(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.TLS = tlsFor(t, dir, "server")
	ran := make(chan string, 4)
	cfg.Authorize = func(peer, method string) error {
		if peer != "friend" {
			return fmt.Errorf("%s may not call %s", peer, method)
		}
		return nil
	}
	srv, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) {
		ran <- r.Peer
		return []byte(r.Peer), nil
	})
	srv.HandleStream("watch", func(ctx context.Context, s *Stream) error {
		ran <- s.Peer()
		return s.Send([]byte("hi"))
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	friend := newTransport(t, dir, "friend", "127.0.0.1:0", nil)
	stranger := newTransport(t, dir, "stranger", "127.0.0.1:0", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr := srv.Addr().String()

	if b, err := friend.Call(ctx, addr, "echo", nil); err != nil || string(b) != "friend" {
		t.Fatalf("friend: %q %v", b, err)
	}
	var re *RemoteError
	if _, err := stranger.Call(ctx, addr, "echo", nil); !errors.As(err, &re) || re.Code != CodeForbidden {
		t.Fatalf("stranger's unary call: %v, want %s", err, CodeForbidden)
	}
	s, err := stranger.Stream(ctx, addr, "watch")
	if err == nil {
		_, err = s.Recv()
		s.Close()
	}
	if !errors.As(err, &re) || re.Code != CodeForbidden {
		t.Fatalf("stranger's stream: %v, want %s", err, CodeForbidden)
	}
	select {
	case p := <-ran:
		if p != "friend" {
			t.Fatalf("a handler ran for %s", p)
		}
	default:
		t.Fatal("the friend's call never ran")
	}
	select {
	case p := <-ran:
		t.Fatalf("a handler ran for %s", p)
	default:
	}
	if err := stranger.Probe(ctx, addr); err != nil {
		t.Fatalf("stranger's probe: %v, want nil (TLS is fine)", err)
	}
	if err := friend.ProbeAs(ctx, addr, "server"); err != nil {
		t.Fatalf("ProbeAs the certificate's name: %v", err)
	}
	if err := friend.ProbeAs(ctx, addr, "n1"); !errors.Is(err, ErrRefused) {
		t.Fatalf("ProbeAs another name: %v, want ErrRefused", err)
	}
}
