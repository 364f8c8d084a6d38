package node

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/transport"
)

// TestPeerTrust: a probe that finds TLS refused makes an alive peer
// "refused" to consensus and dispatch until a probe finds it accepted; a
// probe that cannot tell changes nothing; refused peers are probed again
// sooner than accepted ones; a node every peer refuses says so.
func TestPeerTrust(t *testing.T) {
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	p := newPeerTrust()
	now := time.Unix(1000, 0)
	a := gossip.Member{Name: "a", RPCAddr: "10.0.0.1:7947", Status: gossip.StatusAlive}
	b := gossip.Member{Name: "b", RPCAddr: "10.0.0.2:7947", Status: gossip.StatusAlive}
	members := []gossip.Member{a, b, {Name: "self", RPCAddr: "10.0.0.9:7947", Status: gossip.StatusAlive}}
	if due := p.due(members, "self", now); len(due) != 2 {
		t.Fatalf("new peers not all due: %v", due)
	}
	refused := fmt.Errorf("probe: %w: x509: certificate signed by unknown authority", transport.ErrRefused)
	p.record(log, a, refused, now)
	p.record(log, b, refused, now)
	if p.status(a) != statusRefused || p.status(b) != statusRefused {
		t.Fatalf("status %s %s, want refused", p.status(a), p.status(b))
	}
	if !strings.Contains(logs.String(), "TLS with this peer is refused") ||
		!strings.Contains(logs.String(), "every peer refuses TLS with this node") ||
		!strings.Contains(logs.String(), "unknown authority") {
		t.Fatalf("logs: %s", logs.String())
	}
	failed := a
	failed.Status = gossip.StatusFailed
	if p.status(failed) != "failed" {
		t.Fatalf("a failed peer's status is %s", p.status(failed))
	}
	p.record(log, b, errors.New("unreachable"), now) // cannot tell
	if p.status(b) != statusRefused {
		t.Fatal("an inconclusive probe cleared a refusal")
	}
	if due := p.due(members, "self", now.Add(refusedReprobe-time.Millisecond)); len(due) != 0 {
		t.Fatalf("re-probed too soon: %v", due)
	}
	if due := p.due(members, "self", now.Add(refusedReprobe)); len(due) != 2 {
		t.Fatalf("refused peers not re-probed: %v", due)
	}
	p.record(log, b, nil, now.Add(refusedReprobe))
	if p.status(b) != "alive" || p.refusal(b.RPCAddr) != nil {
		t.Fatalf("accepted again, still %s", p.status(b))
	}
	if due := p.due(members, "self", now.Add(2*refusedReprobe)); len(due) != 1 || due[0].Name != "a" {
		t.Fatalf("due %v, want only the refused a", due)
	}
}
