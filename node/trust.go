package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/transport"
)

// How often peers are probed: a peer not probed yet at once (it just
// joined), one refused every refusedReprobe (its TLS material may be fixed),
// one accepted every acceptedReprobe (cheap: its connection is pooled).
const (
	probeEvery      = time.Second
	refusedReprobe  = 5 * time.Second
	acceptedReprobe = 30 * time.Second
	probeTimeout    = 3 * time.Second
)

// statusRefused is what peerView and runnerView show for a peer whose TLS
// this node and it do not accept: consensus and dispatch use only "alive"
// peers, so such a peer is never a runner, a Raft voter, a bootstrap
// candidate or a forwarding target. Gossip alone cannot tell: a node with
// a foreign CA gossips fine.
const statusRefused = consensus.StatusRefused

// peerTrust remembers, per RPC address, whether this node and the peer
// accept each other's TLS, as the last probe found.
type peerTrust struct {
	mu    sync.Mutex
	peers map[string]*trustState
	// allRefused: every peer probed refuses this node (logged once).
	allRefused bool
}

type trustState struct {
	name    string
	refused error // nil: accepted
	checked time.Time
}

func newPeerTrust() *peerTrust { return &peerTrust{peers: map[string]*trustState{}} }

// refusal returns why the peer at addr is refused, or nil.
func (p *peerTrust) refusal(addr string) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.peers[addr]; s != nil {
		return s.refused
	}
	return nil
}

// status is a member's status as consensus and dispatch see it.
func (p *peerTrust) status(m gossip.Member) string {
	if m.Status == gossip.StatusAlive && p.refusal(m.RPCAddr) != nil {
		return statusRefused
	}
	return string(m.Status)
}

// due lists the alive peers to probe now, and forgets peers gone from
// gossip.
func (p *peerTrust) due(ms []gossip.Member, self string, now time.Time) []gossip.Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	var out []gossip.Member
	for _, m := range ms {
		if m.Name == self || m.RPCAddr == "" || m.Status != gossip.StatusAlive {
			continue
		}
		seen[m.RPCAddr] = true
		s := p.peers[m.RPCAddr]
		switch {
		case s == nil, s.name != m.Name,
			s.refused != nil && now.Sub(s.checked) >= refusedReprobe,
			s.refused == nil && now.Sub(s.checked) >= acceptedReprobe:
			out = append(out, m)
		}
	}
	for addr, s := range p.peers {
		if !seen[addr] && now.Sub(s.checked) > acceptedReprobe {
			delete(p.peers, addr)
		}
	}
	return out
}

// record keeps a probe's result and logs what changed. A probe that could
// not tell (the peer is unreachable) changes nothing.
func (p *peerTrust) record(log zerolog.Logger, m gossip.Member, err error, now time.Time) {
	if err != nil && !errors.Is(err, transport.ErrRefused) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.peers[m.RPCAddr]
	p.peers[m.RPCAddr] = &trustState{name: m.Name, refused: err, checked: now}
	switch {
	case err != nil && (prev == nil || prev.refused == nil):
		log.Warn().Err(err).Str("peer", m.Name).Str("rpc_addr", m.RPCAddr).
			Msg("TLS with this peer is refused (its certificate here, or this node's there: a different CA?); " +
				"it is not used as a runner, Raft voter, bootstrap candidate or forwarding target")
	case err == nil && prev != nil && prev.refused != nil:
		log.Info().Str("peer", m.Name).Msg("TLS with this peer is accepted again")
	}
	refused, total := 0, 0
	var why error
	for _, s := range p.peers {
		total++
		if s.refused != nil {
			refused++
			why = s.refused
		}
	}
	all := total > 0 && refused == total
	if all && !p.allRefused {
		log.Error().Err(why).Int("peers", total).
			Msg("every peer refuses TLS with this node: its node-to-node CA is not the mesh's " +
				"(check -ca-file/-cert-file/-key-file, or -encrypt, against the other nodes')")
	}
	p.allRefused = all
}

// probePeers probes the live peers' TLS until the agent stops.
func (a *Agent) probePeers() {
	defer a.wg.Done()
	ctx := a.stopCtx
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		for _, m := range a.trust.due(a.gossip.Members(gossip.Filter{}), a.cfg.NodeName, time.Now()) {
			pctx, pcancel := context.WithTimeout(ctx, probeTimeout)
			err := a.rpc.ProbeAs(pctx, m.RPCAddr, m.Name)
			pcancel()
			if ctx.Err() != nil {
				return
			}
			a.trust.record(a.log, m, err, time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
