package consensus

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// intruder is a transport holding a valid certificate of the mesh's CA for
// name; when cluster is not empty it also gossips as a live member of it.
func intruder(t *testing.T, mesh *fakeMesh, name, cluster string) *transport.Transport {
	t.Helper()
	ca, cert, key, err := tlsutil.EnsureDevFiles(mesh.caDir, name)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.BindAddr = "127.0.0.1:0"
	tcfg.TLS = tc
	rpc, err := transport.New(tcfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := rpc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rpc.Close() })
	if cluster != "" {
		mesh.set(Peer{Name: name, Cluster: cluster, RaftAddr: freeTCP(t), RPCAddr: rpc.Addr().String(), Status: "alive"})
	}
	return rpc
}

func call(t *testing.T, rpc *transport.Transport, to *testNode, method string, req any) error {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = rpc.Call(ctx, to.rpc.Addr().String(), method, body)
	return err
}

func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != codeForbidden && re.Code != transport.CodeForbidden {
		t.Errorf("%s: %v, want a %q or %q refusal", what, err, codeForbidden, transport.CodeForbidden)
	}
}

func put(key string) fsm.Command {
	return fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte(`{}`)}}}
}

// A holder of a valid node certificate of another cluster cannot write the
// group's ACL keys nor restore its state; a certificate for a name gossip
// does not know cannot write at all. A node of another cluster still
// forwards ordinary writes (a client's, after the cluster's ACL check).
func TestApplyFromAnotherClusterRefused(t *testing.T) {
	mesh, nodes := startMeshWith(t, 3, func(c *Config) { c.LocalOnlyPrefixes = []string{"acl/"} })
	other := intruder(t, mesh, "a1", "other")
	ghost := intruder(t, mesh, "ghost", "")
	var host *testNode
	for _, n := range nodes {
		if _, ok := n.m.hostedShard("default"); ok {
			host = n
			break
		}
	}
	wantForbidden(t, "cluster other writing default's acl/token/x",
		call(t, other, host, methodApply, applyReq{Cluster: "default", Cmd: put("acl/token/x")}))
	wantForbidden(t, "cluster other restoring default",
		call(t, other, host, methodApply, applyReq{Cluster: "default", Restore: []byte("{}")}))
	wantForbidden(t, "an unknown name writing default's services/x",
		call(t, ghost, host, methodApply, applyReq{Cluster: "default", Cmd: put("services/x")}))
	if err := call(t, other, host, methodApply, applyReq{Cluster: "default", Cmd: put("services/x")}); err != nil {
		t.Errorf("cluster other forwarding an ordinary write: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, ok, err := host.m.Get(ctx, "default", "acl/token/x"); err != nil || ok {
		t.Errorf("acl/token/x after the refused write: found %v, %v", ok, err)
	}
}

// A forged join cannot make a node drop its replica: neither from a node
// of another cluster nor from one of the group's cluster whose claim the
// group's membership does not back.
func TestForgedJoinKeepsReplica(t *testing.T) {
	mesh, nodes := startMesh(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nodes[0].m.Apply(ctx, "default", put("services/keep")); err != nil {
		t.Fatal(err)
	}
	victim := nodes[1]
	before, _ := victim.m.hostedShard("default")
	forged := joinReq{Cluster: "default", Shard: ShardID("default"), Replica: before.Replica + 1}
	wantForbidden(t, "join from a node of another cluster",
		call(t, intruder(t, mesh, "a1", "other"), victim, methodJoinNonVoting, forged))
	if err := call(t, intruder(t, mesh, "d9", "default"), victim, methodJoinNonVoting, forged); err == nil {
		t.Errorf("join from a member of default the membership does not back: accepted")
	}
	after, ok := victim.m.hostedShard("default")
	if !ok || after.Replica != before.Replica {
		t.Fatalf("%s's replica after the forged joins: %+v (hosted %v), want replica %d", victim.name, after, ok,
			before.Replica)
	}
	waitFor(t, 10*time.Second, func() error {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		defer rcancel()
		h, _ := victim.m.hostedShard("default")
		res, err := victim.m.readLocal(rctx, h, fsm.Query{Get: "services/keep"})
		if err != nil {
			return err
		}
		if res.Item == nil {
			return errors.New("services/keep is gone from the victim's replica")
		}
		return nil
	})
}

// A bootstrap proposal is recorded as its initiator's only when the
// initiator's own certificate sends it: a certificate for d9 cannot
// propose in n1's name.
func TestProposalInAnotherNodesName(t *testing.T) {
	mesh, nodes := startMesh(t, 3)
	d9 := intruder(t, mesh, "d9", "default")
	req := infoReq{Cluster: "default", From: "n1", Proposal: &bootProposal{Initiator: "n1", Members: []string{"n1", "zz"}}}
	wantForbidden(t, "d9 proposing as n1", call(t, d9, nodes[2], methodInfo, req))
	a1 := intruder(t, mesh, "a1", "other")
	own := infoReq{Cluster: "default", From: "a1", Proposal: &bootProposal{Initiator: "a1", Members: []string{"a1"}}}
	wantForbidden(t, "a node of another cluster proposing", call(t, a1, nodes[2], methodInfo, own))
	wantForbidden(t, "a node of another cluster asking the membership",
		call(t, a1, nodes[2], methodMembership, membershipReq{Cluster: "default", Replica: 1}))
	if err := call(t, a1, nodes[2], methodInfo, infoReq{Cluster: "default", From: "a1"}); err != nil {
		t.Errorf("a plain info probe from any member: %v", err)
	}
}
