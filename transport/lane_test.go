package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// laneServer serves "upper" (echoServer's), "first" (answers after the first
// message, leaving the rest of the upload unread), "hang" (waits for its
// ctx) and "boom" (panics), with cfg's lane settings.
func laneServer(t *testing.T, dir string, mod func(*Config)) *Transport {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.TLS = tlsFor(t, dir, "server")
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
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
	tr.HandleStream("first", func(ctx context.Context, s *Stream) error {
		b, err := s.Recv()
		if err != nil {
			return err
		}
		return s.SendLast(true, append([]byte("got "), b...))
	})
	tr.HandleStream("hang", func(ctx context.Context, s *Stream) error {
		<-ctx.Done()
		select {
		case hangEnded <- struct{}{}:
		default:
		}
		return ctx.Err()
	})
	tr.HandleStream("boom", func(ctx context.Context, s *Stream) error { panic("oops") })
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// hangEnded hears from "hang" handlers that their ctx ended.
var hangEnded = make(chan struct{}, 16)

func laneClient(t *testing.T, dir string, mod func(*Config)) *Transport {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.TLS = tlsFor(t, dir, "client")
	if mod != nil {
		mod(&cfg)
	}
	tr, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// exchange runs one exchange: msgs sent (the first with the open), the
// answers read to the end.
func exchange(ctx context.Context, cli *Transport, addr, method string, msgs ...string) ([]string, error) {
	var first []byte
	if len(msgs) > 0 {
		first = []byte(msgs[0])
	}
	s, err := cli.Exchange(ctx, addr, method, first, len(msgs) <= 1)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if len(msgs) > 1 {
		for _, m := range msgs[1:] {
			if err := s.Send([]byte(m)); err != nil {
				break // the handler may have stopped reading: its answer says
			}
		}
		if err := s.CloseSend(); err != nil {
			return nil, err
		}
	}
	var got []string
	for {
		b, err := s.Recv()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, string(b))
	}
}

func TestLanesCarrySuccessiveExchanges(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, nil)
	cli := laneClient(t, dir, nil)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		got, err := exchange(ctx, cli, addr, "upper", fmt.Sprintf("m%d", i))
		if err != nil || len(got) != 1 || got[0] != fmt.Sprintf("M%d", i) {
			t.Fatalf("exchange %d: %q %v", i, got, err)
		}
	}
	// Several messages each way; then an upload the handler leaves unread
	// (the handler side reads it out before the next exchange).
	if got, err := exchange(ctx, cli, addr, "upper", "a", "b", "c"); err != nil || fmt.Sprint(got) != "[A B C]" {
		t.Fatalf("upper a b c: %q %v", got, err)
	}
	big := string(bytes.Repeat([]byte("x"), 40<<10))
	got, err := exchange(ctx, cli, addr, "first", "one", big, big, big)
	if err != nil || fmt.Sprint(got) != "[got one]" {
		t.Fatalf("first: %q %v", got, err)
	}
	if got, err := exchange(ctx, cli, addr, "upper", "after"); err != nil || fmt.Sprint(got) != "[AFTER]" {
		t.Fatalf("after the unread upload: %q %v", got, err)
	}
	// A handler's error (a panic) ends its exchange, not the lane; so does
	// an unknown method.
	if _, err := exchange(ctx, cli, addr, "boom", "x"); !errors.Is(err, &RemoteError{Code: CodeInternal}) {
		t.Fatalf("boom: %v", err)
	}
	if _, err := exchange(ctx, cli, addr, "nope", "x"); !errors.Is(err, &RemoteError{Code: CodeNoHandler}) {
		t.Fatalf("nope: %v", err)
	}
	st := cli.LaneStats()
	if st.Opened != 1 || st.Reused != 24 || st.Idle != 1 {
		t.Fatalf("lanes %+v, want 1 opened, 24 reuses, 1 idle", st)
	}
}

// A lane broken mid-exchange (its caller gave up) fails that exchange
// only: one running beside it on another lane, and the next ones, succeed.
func TestLaneBrokenMidExchangeFailsOnlyIt(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, nil)
	cli := laneClient(t, dir, nil)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := exchange(ctx, cli, addr, "upper", "warm"); err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(ctx)
	hung, err := cli.Exchange(hctx, addr, "hang", []byte("x"), true) // takes the idle lane
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	if got, err := exchange(ctx, cli, addr, "upper", "beside"); err != nil || fmt.Sprint(got) != "[BESIDE]" {
		t.Fatalf("beside the hung exchange: %q %v", got, err)
	}
	hcancel()
	if _, err := hung.Recv(); err == nil {
		t.Fatal("the abandoned exchange did not fail")
	}
	hung.Close()
	for i := 0; i < 5; i++ {
		if got, err := exchange(ctx, cli, addr, "upper", "next"); err != nil || fmt.Sprint(got) != "[NEXT]" {
			t.Fatalf("after the break: %q %v", got, err)
		}
	}
	if st := cli.LaneStats(); st.Opened != 2 || st.Idle != 1 {
		t.Fatalf("lanes %+v: want 2 opened (the broken one not reused), 1 idle", st)
	}
	// The handler of the broken exchange was cancelled with it.
	select {
	case <-hangEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler of the broken exchange is still running")
	}
}

// At most LanesPerPeer idle lanes are kept; more exchanges at once open
// more lanes, closed when they come back to a full pool.
func TestLanesPerPeerBound(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, nil)
	cli := laneClient(t, dir, func(c *Config) { c.LanesPerPeer = 2 })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var streams []*Stream
	for i := 0; i < 6; i++ {
		s, err := cli.Exchange(ctx, addr, "upper", []byte("x"), true)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	for _, s := range streams {
		if b, err := s.Recv(); err != nil || string(b) != "X" {
			t.Fatalf("recv %q %v", b, err)
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end: %v", err)
		}
		s.Close()
	}
	if st := cli.LaneStats(); st.Opened != 6 || st.Idle != 2 {
		t.Fatalf("lanes %+v, want 6 opened, 2 idle", st)
	}
}

// An idle lane is not reused past the caller's LaneIdleTimeout, and the
// handler side closes one idle past its own (twice its LaneIdleTimeout).
func TestLaneIdleTimeouts(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, func(c *Config) { c.LaneIdleTimeout = 20 * time.Millisecond })
	cli := laneClient(t, dir, func(c *Config) { c.LaneIdleTimeout = time.Hour })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := exchange(ctx, cli, addr, "upper", "a"); err != nil {
		t.Fatal(err)
	}
	// The handler side closes it: the caller's pooled lane sees its end.
	cli.lanes.mu.Lock()
	l := cli.lanes.idle[addr][0]
	cli.lanes.mu.Unlock()
	eventually(t, 5*time.Second, func() error {
		if l.str.Context().Err() == nil {
			return errors.New("the idle lane is still open")
		}
		return nil
	})
	if _, err := exchange(ctx, cli, addr, "upper", "b"); err != nil {
		t.Fatal(err)
	}
	if st := cli.LaneStats(); st.Opened != 2 || st.Reused != 0 {
		t.Fatalf("lanes %+v: the closed lane was reused", st)
	}
	// The caller's own bound: a lane idle past it is closed, not reused.
	cli.lanes.mu.Lock()
	cli.lanes.idle[addr][0].idle = time.Now().Add(-2 * time.Hour)
	cli.lanes.mu.Unlock()
	if _, err := exchange(ctx, cli, addr, "upper", "c"); err != nil {
		t.Fatal(err)
	}
	if st := cli.LaneStats(); st.Opened != 3 || st.Reused != 0 {
		t.Fatalf("lanes %+v: the stale lane was reused", st)
	}
}

// A peer without lanes (an earlier build; here LanesPerPeer 0) refuses
// the lane's open before any exchange was sent: every exchange is served
// on a stream of its own, and lanes are not tried again for a while.
func TestExchangeWithAPeerWithoutLanes(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, func(c *Config) { c.LanesPerPeer = 0 })
	cli := laneClient(t, dir, nil)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if got, err := exchange(ctx, cli, addr, "upper", "a", "b"); err != nil || fmt.Sprint(got) != "[A B]" {
			t.Fatalf("exchange %d: %q %v", i, got, err)
		}
	}
	if st := cli.LaneStats(); st.Opened != 0 || st.Idle != 0 {
		t.Fatalf("lanes %+v with a peer that has none", st)
	}
	if !cli.laneless(addr) {
		t.Fatal("the peer is not remembered as laneless")
	}
}

// Many callers at once over lanes, under -race: every answer is its own.
func TestLanesConcurrentExchanges(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, nil)
	cli := laneClient(t, dir, func(c *Config) { c.LanesPerPeer = 4 })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				m := fmt.Sprintf("g%di%d", g, i)
				got, err := exchange(ctx, cli, addr, "upper", m, m)
				want := fmt.Sprint([]string{string(bytes.ToUpper([]byte(m))), string(bytes.ToUpper([]byte(m)))})
				if err != nil || fmt.Sprint(got) != want {
					errs <- fmt.Errorf("%s: %q %v", m, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := cli.LaneStats(); st.Idle > 4 || st.Reused == 0 {
		t.Fatalf("lanes %+v", st)
	}
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An exchange closed before its answer was read to the end is not given
// back: the next exchange must never read the rest of another's answer.
func TestLaneAbandonedExchangeIsNotReused(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, nil)
	cli := laneClient(t, dir, nil)
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		s, err := cli.Exchange(ctx, addr, "upper", []byte(fmt.Sprintf("left%d", i)), true)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if _, err := s.Recv(); err != nil { // the answer, but not its end
				t.Fatal(err)
			}
		}
		s.Close()
		want := fmt.Sprintf("[NEXT%d]", i)
		got, err := exchange(ctx, cli, addr, "upper", fmt.Sprintf("next%d", i))
		if err != nil || fmt.Sprint(got) != want {
			t.Fatalf("after an abandoned exchange: %q %v, want %s", got, err, want)
		}
	}
}

// Config.Authorize holds on lanes as on streams: every exchange is asked,
// so a peer it refuses gets CodeForbidden on its first exchange and on the
// ones after it on the same lane, and no handler runs for it.
func TestLaneExchangesAreAuthorized(t *testing.T) {
	dir := t.TempDir()
	srv := laneServer(t, dir, func(c *Config) {
		c.Authorize = func(peer, method string) error {
			if peer != "client" {
				return fmt.Errorf("%s may not call %s", peer, method)
			}
			return nil
		}
	})
	friend := laneClient(t, dir, nil)
	stranger := laneClient(t, dir, func(c *Config) { c.TLS = tlsFor(t, dir, "stranger") })
	addr := srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if got, err := exchange(ctx, stranger, addr, "upper", "x"); !errors.Is(err, &RemoteError{Code: CodeForbidden}) {
			t.Fatalf("stranger's exchange %d: %q %v, want %s", i, got, err, CodeForbidden)
		}
	}
	if st := stranger.LaneStats(); st.Opened != 1 || st.Reused != 2 {
		t.Fatalf("stranger's lanes %+v, want its 3 exchanges on 1 lane", st)
	}
	if got, err := exchange(ctx, friend, addr, "upper", "x"); err != nil || fmt.Sprint(got) != "[X]" {
		t.Fatalf("friend: %q %v", got, err)
	}
}
