package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// ErrForbidden: the serving node refused the request for who sent it
// (see callerOf and the table in doc.go). Permanent for that request.
var ErrForbidden = errors.New("consensus: forbidden")

// codeForbidden carries ErrForbidden across a forward: the caller is a
// member, but its cluster may not send this. A caller the serving node
// does not know as a live member is refused with transport.CodeForbidden
// instead (node's gate answers the same): that can be a gossip view that
// has not caught up yet, so a forward tries another host.
const codeForbidden = "not_permitted"

// callerOf is the mesh member a request comes from. Its name is the common
// name of the caller's verified certificate (transport sets r.Peer from
// it, never from the body), and gossip must know a live member of that
// name: a certificate for a name nobody gossips speaks for nobody.
func (m *Manager) callerOf(r *transport.Request) (Peer, error) {
	if r.Peer == "" {
		return Peer{}, transport.Errorf(transport.CodeForbidden, "%s: the caller's certificate names no node", r.Method)
	}
	for _, p := range m.members.Peers() {
		if p.Name != r.Peer {
			continue
		}
		if p.Status != "alive" && p.Status != "suspect" {
			return Peer{}, transport.Errorf(transport.CodeForbidden, "%s: caller %s is %s in %s's gossip view",
				r.Method, r.Peer, p.Status, m.cfg.NodeName)
		}
		return p, nil
	}
	return Peer{}, transport.Errorf(transport.CodeForbidden, "%s: caller %s is not a member of the mesh in %s's gossip view",
		r.Method, r.Peer, m.cfg.NodeName)
}

// checkApply enforces who may write what: a node of the group's cluster
// anything but the reserved keys (checked apart); a member of another
// cluster only what an API node forwards on a client's behalf after that
// cluster's own ACL check (services, executions): never a restore, which
// replaces everything, nor a key under LocalOnlyPrefixes (ACL tokens).
func (m *Manager) checkApply(caller Peer, req applyReq) error {
	if caller.Cluster == req.Cluster {
		return nil
	}
	if req.Restore != nil {
		return transport.Errorf(codeForbidden, "restore of cluster %s's state refused from %s, a node of cluster %s: "+
			"only a node of %s may restore it", req.Cluster, caller.Name, caller.Cluster, req.Cluster)
	}
	for _, op := range req.Cmd.Ops {
		for _, pre := range m.cfg.LocalOnlyPrefixes {
			if strings.HasPrefix(op.Key, pre) {
				return transport.Errorf(codeForbidden, "write of %q in cluster %s refused from %s, a node of cluster %s: "+
					"keys under %q are written only by nodes of %s", op.Key, req.Cluster, caller.Name,
					caller.Cluster, pre, req.Cluster)
			}
		}
	}
	return nil
}

// verifyJoin checks a join before serveJoin acts on it. The caller must be
// a node of the group's cluster. Replacing an old replica of ours drops
// its data, so the caller's word is not enough there: the group's
// membership, read linearizably by someone other than the caller, must
// show the old replica removed and the new one added. Nobody else able to
// tell refuses the join; the removed replica then finds out by itself
// (checkRemoved) and a later join needs no drop.
func (m *Manager) verifyJoin(ctx context.Context, caller Peer, req joinReq, old *hosted) error {
	if caller.Cluster != req.Cluster {
		return transport.Errorf(codeForbidden, "join of cluster %s's group refused from %s, a node of cluster %s",
			req.Cluster, caller.Name, caller.Cluster)
	}
	if old == nil {
		return nil
	}
	body, err := json.Marshal(membershipReq{Cluster: req.Cluster, Replica: old.Replica, Also: req.Replica})
	if err != nil {
		return err
	}
	asked := 0
	for _, p := range m.members.Peers() {
		if p.Cluster != req.Cluster || p.Status != "alive" || p.RPCAddr == "" || p.Name == caller.Name ||
			p.Name == m.cfg.NodeName || !p.Hosting {
			continue
		}
		if asked++; asked > 3 {
			break
		}
		cctx, cancel := boundedCtx(ctx, time.Second)
		data, err := m.rpc.Call(cctx, p.RPCAddr, methodMembership, body)
		cancel()
		var resp membershipResp
		if err != nil || json.Unmarshal(data, &resp) != nil {
			continue
		}
		if resp.Removed && !resp.Member && resp.AlsoMember {
			return nil
		}
		return transport.Errorf(codeForbidden, "join as replica %d of cluster %s from %s refused: %s says the "+
			"membership does not remove replica %d for it", req.Replica, req.Cluster, caller.Name, p.Name, old.Replica)
	}
	return transport.Errorf(codeNotHosting, "join as replica %d of cluster %s from %s would drop replica %d "+
		"and no other host of the group confirmed it; not now", req.Replica, req.Cluster, caller.Name, old.Replica)
}

// rpcErr maps a remote refusal to ErrForbidden.
func forbiddenErr(re *transport.RemoteError, via string) error {
	return fmt.Errorf("%w: %s (via %s)", ErrForbidden, re.Message, via)
}
