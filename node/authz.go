package node

import (
	"fmt"
	"sync"
	"time"

	"github.com/meshgw/meshgw/gossip"
)

// memberGate is the first check of every node-to-node RPC (the transport's
// Authorize): the caller, named by the common name of its verified
// certificate, must be a live member of the mesh under that name. What a
// member may then send is each method's own check (consensus: the group's
// cluster; see the consensus package comment). A certificate for a name
// nobody gossips, or for a member that failed or left, calls nothing.
//
// The member list is cached for memberGateTTL so that the data plane
// (dispatch.http per request) does not decode every member's tags on each
// call; a name missing from the cache refreshes it at once (at most every
// memberGateMiss), so a node that just joined is not refused for long.
type memberGate struct {
	members func() []gossip.Member
	now     func() time.Time

	mu     sync.Mutex
	status map[string]gossip.Status
	at     time.Time
}

const (
	memberGateTTL  = 250 * time.Millisecond
	memberGateMiss = 20 * time.Millisecond
)

func newMemberGate(members func() []gossip.Member) *memberGate {
	return &memberGate{members: members, now: time.Now}
}

func (g *memberGate) refresh(now time.Time) {
	ms := g.members()
	st := make(map[string]gossip.Status, len(ms))
	for _, m := range ms {
		st[m.Name] = m.Status
	}
	g.status, g.at = st, now
}

// authorize is transport.Config.Authorize.
func (g *memberGate) authorize(peer, method string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	if g.status == nil || now.Sub(g.at) >= memberGateTTL {
		g.refresh(now)
	}
	st, ok := g.status[peer]
	if !ok && now.Sub(g.at) >= memberGateMiss {
		g.refresh(now)
		st, ok = g.status[peer]
	}
	switch {
	case !ok:
		return fmt.Errorf("%s: caller %q is not a member of the mesh here (its certificate names a node gossip "+
			"does not know)", method, peer)
	case st != gossip.StatusAlive && st != gossip.StatusSuspect:
		return fmt.Errorf("%s: caller %q is %s here", method, peer, st)
	}
	return nil
}
