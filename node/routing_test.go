package node

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch/upstreams"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/transport"
	"github.com/rs/zerolog"
)

// routing.health: only live members of this node's own cluster may share
// verdicts; reports are bounded and rate-limited per sender.
func TestHealthRPCAccess(t *testing.T) {
	members := []gossip.Member{
		{Name: "peer", Cluster: "c1", Status: gossip.StatusAlive},
		{Name: "foreign", Cluster: "c2", Status: gossip.StatusAlive},
		{Name: "gone", Cluster: "c1", Status: gossip.StatusFailed},
	}
	reg := upstreams.NewRegistry(upstreams.Config{}, upstreams.NewHealth(nil))
	rt := &routing{cluster: "c1", local: "me", reg: reg, log: zerolog.Nop(), lastFrom: map[string]time.Time{},
		members: func(gossip.Filter) []gossip.Member { return members }}
	key := upstreams.HealthKey("c1/web", "http://u:1")
	body, _ := json.Marshal(healthReport{Obs: []upstreams.Observation{{Key: key, Healthy: false, Certain: true, TTLms: 60000}}})
	for _, peer := range []string{"foreign", "gone", "stranger"} {
		_, err := rt.serveHealth(context.Background(), &transport.Request{Peer: peer, Body: body})
		if err == nil || !strings.Contains(err.Error(), "only nodes of cluster c1") {
			t.Fatalf("%s: %v, want forbidden", peer, err)
		}
	}
	if !reg.Health().Healthy(key) {
		t.Fatal("a refused report was taken in")
	}
	if _, err := rt.serveHealth(context.Background(), &transport.Request{Peer: "peer", Body: body}); err != nil {
		t.Fatal(err)
	}
	if reg.Health().Healthy(key) {
		t.Fatal("the peer's certain verdict was not taken in")
	}
	// A second report within the gap is dropped; an oversized one refused.
	ok, _ := json.Marshal(healthReport{Obs: []upstreams.Observation{{Key: key, Healthy: true, TTLms: 60000}}})
	_, _ = rt.serveHealth(context.Background(), &transport.Request{Peer: "peer", Body: ok})
	if reg.Health().Healthy(key) {
		t.Fatal("a report within the rate limit was taken in")
	}
	big := make([]byte, maxHealthReport+1)
	if _, err := rt.serveHealth(context.Background(), &transport.Request{Peer: "peer", Body: big}); err == nil {
		t.Fatal("oversized report accepted")
	}
}
