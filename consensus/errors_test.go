package consensus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// dragonboatErrs is every error dragonboat's propose and read paths
// return, as the texts a client must never see (but ErrTimeout, whose text
// is the word "timeout").
var dragonboatErrs = []error{
	dragonboat.ErrTimeoutTooSmall, dragonboat.ErrInvalidDeadline,
	dragonboat.ErrCanceled, dragonboat.ErrShardNotReady, dragonboat.ErrShardNotInitialized,
	dragonboat.ErrSystemBusy, dragonboat.ErrAborted, dragonboat.ErrShardNotFound,
	dragonboat.ErrShardNotBootstrapped, dragonboat.ErrClosed, dragonboat.ErrShardClosed,
	dragonboat.ErrPayloadTooBig, dragonboat.ErrRejected, dragonboat.ErrInvalidSession,
	dragonboat.ErrDeadlineNotSet, dragonboat.ErrInvalidOperation,
}

// TestErrorMapping: each dragonboat error, bare or wrapped as callers
// wrap it, becomes the sentinel clients are answered by, with a message
// that names the cluster and never carries dragonboat's wording; running
// out of time without a leader is "no quorum".
func TestErrorMapping(t *testing.T) {
	cases := []struct {
		err    error
		leader bool
		want   error
		says   string
	}{
		{dragonboat.ErrTimeoutTooSmall, false, ErrNoQuorum, "no quorum for cluster default: the group has no leader reachable from n4; retry later"},
		{dragonboat.ErrInvalidDeadline, false, ErrNoQuorum, "no quorum for cluster default"},
		{dragonboat.ErrTimeout, false, ErrNoQuorum, "check that a majority of its voters is up"},
		{dragonboat.ErrShardNotReady, false, ErrNoQuorum, "no quorum"},
		{context.DeadlineExceeded, false, ErrNoQuorum, "no quorum"},
		{dragonboat.ErrTimeoutTooSmall, true, ErrTimeout, "timeout on cluster default"},
		{dragonboat.ErrTimeout, true, ErrTimeout, "outcome is unknown"},
		{dragonboat.ErrSystemBusy, true, ErrTimeout, "timeout"},
		{dragonboat.ErrShardNotFound, false, ErrNotBootstrapped, "cluster default has no Raft group on n4 yet"},
		{dragonboat.ErrShardNotBootstrapped, true, ErrNotBootstrapped, "no Raft group"},
		{dragonboat.ErrClosed, true, ErrNoQuorum, "n4 is stopping"},
		{dragonboat.ErrShardClosed, true, ErrNoQuorum, "stopping"},
		{dragonboat.ErrPayloadTooBig, true, fsm.ErrBadCommand, "larger than one Raft entry"},
		{dragonboat.ErrRejected, true, errInternal, "the Raft replica on n4 failed"},
		{dragonboat.ErrInvalidSession, true, errInternal, "failed"},
		{context.Canceled, true, context.Canceled, "context canceled"},
	}
	for _, c := range cases {
		for _, err := range []error{c.err, fmt.Errorf("propose: %w", c.err)} {
			got := classifyErr(err, "default", "n4", c.leader)
			if !errors.Is(got, c.want) || !errors.Is(got, c.err) {
				t.Errorf("%q (leader %v): %v; want %v wrapping it", err, c.leader, got, c.want)
			}
			if !strings.Contains(got.Error(), c.says) {
				t.Errorf("%q (leader %v): %q does not say %q", err, c.leader, got, c.says)
			}
			if c.err == context.Canceled {
				continue
			}
			for _, d := range dragonboatErrs {
				if strings.Contains(got.Error(), d.Error()) {
					t.Errorf("%q: the message %q carries dragonboat's %q", err, got, d)
				}
			}
		}
	}
	// Through a forward: the serving node's sentinel and message survive
	// the transport, without a second prefix.
	served := classifyErr(dragonboat.ErrTimeoutTooSmall, "default", "n2", false)
	re := remoteErr(served).(*transport.RemoteError)
	got := newOpError(ErrNoQuorum, re, "%s (via %s)", re.Message, "n2")
	if !errors.Is(got, ErrNoQuorum) || got.Error() != served.Error()+" (via n2)" {
		t.Errorf("forwarded: %q", got)
	}
}

// TestMinorityVoterSaysNoQuorum: a write through the one voter of three
// left running (the other two stopped: a partition as it sees it) fails
// with ErrNoQuorum and says so, within its deadline.
func TestMinorityVoterSaysNoQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-voter group")
	}
	ms := startGroup(t, 3)
	if _, err := ms[0].Apply(context.Background(), "c", putCmd("k", "1")); err != nil {
		t.Fatal(err)
	}
	_ = ms[1].Stop()
	_ = ms[2].Stop()
	for _, op := range []string{"write", "read"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		var err error
		if op == "write" {
			_, err = ms[0].Apply(ctx, "c", putCmd("k", "2"))
		} else {
			_, _, err = ms[0].Get(ctx, "c", "k")
		}
		cancel()
		took := time.Since(start)
		t.Logf("%s through the minority voter after %s: %v", op, took.Round(time.Millisecond), err)
		if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "no quorum for cluster c") {
			t.Errorf("%s: %v; want ErrNoQuorum saying so", op, err)
		}
		for _, d := range dragonboatErrs {
			if err != nil && strings.Contains(err.Error(), d.Error()) {
				t.Errorf("%s: %q carries dragonboat's %q", op, err, d)
			}
		}
		if took > 4*time.Second {
			t.Errorf("%s took %s, past its 3 s deadline", op, took)
		}
	}
}

// A node that has seen its group, whose only reachable peer answers that
// it hosts no group (a replica just removed under the request, in CI's
// partition suite), says no quorum, not "no Raft group on ... yet": it
// knows the group exists.
func TestSeenNodeTakesNotBootstrappedPeerAsNoReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-voter group")
	}
	mesh, nodes := startMesh(t, 4)
	n4 := nodes[3]
	waitFor(t, 10*time.Second, func() error {
		if !n4.m.isSeen() {
			return errors.New("n4 has not seen the group")
		}
		return nil
	})
	ca, cert, key, err := tlsutil.EnsureDevFiles(mesh.caDir, "fake")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.BindAddr, tcfg.TLS = "127.0.0.1:0", tc
	fake, err := transport.New(tcfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	fake.Handle(methodApply, func(ctx context.Context, r *transport.Request) ([]byte, error) {
		return nil, transport.Errorf(codeNotBootstrapped, "cluster default has no Raft group on fake yet; retry later")
	})
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	mesh.set(Peer{Name: "fake", Cluster: "default", RPCAddr: fake.Addr().String(), Status: "alive"})
	mesh.mu.Lock()
	mesh.visible = map[string]map[string]bool{"n4": {"n4": true, "fake": true}}
	mesh.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err = n4.m.Apply(ctx, "default", putCmd("k", "v"))
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "no quorum for cluster default") {
		t.Fatalf("%v; want ErrNoQuorum saying so", err)
	}
}
