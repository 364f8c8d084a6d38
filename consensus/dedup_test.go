package consensus

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/transport"
)

func putCmd(key, value string) fsm.Command {
	return fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte(value)}}}
}

func getValue(t *testing.T, m *Manager, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	it, ok, err := m.Get(ctx, "c", key)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "<absent>"
	}
	return string(it.Value)
}

// TestReproposedWritesApplyOnce drives the two retry paths of a write
// through a real group: proposeEntry re-proposing the same entry (what it
// does after a timeout or a leader change, when the first proposal may
// have committed) and a forward sent again to a replica (serveApply with
// the same command). Another client writes in between each time; its
// write must survive, and the retry must get the first result.
func TestReproposedWritesApplyOnce(t *testing.T) {
	m := startSingle(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shard := ShardID("c")

	// The proposer's retry: the same encoded entry, proposed twice.
	cmd := putCmd("k", "retried")
	cmd.ID = fsm.NewProposalID()
	entry, err := fsm.EncodeBatch([]fsm.Command{cmd})
	if err != nil {
		t.Fatal(err)
	}
	first, err := m.proposeEntry(ctx, shard, entry, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, "c", putCmd("k", "in between")); err != nil {
		t.Fatal(err)
	}
	second, err := m.proposeEntry(ctx, shard, entry, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := getValue(t, m, "k"); got != "in between" {
		t.Fatalf("k = %q: the re-proposed write overwrote the one made after it", got)
	}
	r1, _ := fsm.DecodeResults(first)
	r2, _ := fsm.DecodeResults(second)
	if !reflect.DeepEqual(r1, r2) {
		t.Fatalf("the re-proposal answered %+v, the first proposal %+v", r2, r1)
	}

	// The forwarder's retry: the same forwarded command served twice.
	fwd := putCmd("f", "forwarded")
	fwd.ID = fsm.NewProposalID()
	body, _ := json.Marshal(applyReq{Cluster: "c", Cmd: fwd})
	// serveApply answers members of the mesh only: n2 forwards it.
	m.members = fixedPeers{{Name: "n2", Cluster: "c", Status: "alive"}}
	a, err := m.serveApply(ctx, &transport.Request{Peer: "n2", Method: methodApply, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, "c", putCmd("f", "in between")); err != nil {
		t.Fatal(err)
	}
	b, err := m.serveApply(ctx, &transport.Request{Peer: "n2", Method: methodApply, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	if got := getValue(t, m, "f"); got != "in between" || string(a) != string(b) {
		t.Fatalf("f = %q after a forward sent twice; results %s then %s", got, a, b)
	}

	// A restore re-proposed after later writes must not erase them.
	src := fsm.NewStore()
	src.Apply(putCmd("restored", "r"))
	rentry, err := fsm.EncodeRestore(fsm.NewProposalID(), src.Export())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.proposeEntry(ctx, shard, rentry, true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(ctx, "c", putCmd("after", "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.proposeEntry(ctx, shard, rentry, true); err != nil {
		t.Fatal(err)
	}
	if got, r := getValue(t, m, "after"), getValue(t, m, "restored"); got != "a" || r != "r" {
		t.Fatalf("after a restore re-proposed: after = %q, restored = %q", got, r)
	}
}

// TestBatchRetrySafe: the batcher lets proposeEntry re-propose an entry
// only when every command carries a proposal ID and none is a
// compare-and-set.
func TestBatchRetrySafe(t *testing.T) {
	withID := putCmd("a", "1")
	withID.ID = fsm.NewProposalID()
	cas := withID
	cas.Ops = []fsm.Op{{Type: fsm.OpPut, Key: "a", CAS: new(uint64)}}
	cases := []struct {
		name string
		cmds []fsm.Command
		want bool
	}{
		{"unconditional with IDs", []fsm.Command{withID, withID}, true},
		{"one without an ID", []fsm.Command{withID, putCmd("b", "2")}, false},
		{"a compare-and-set", []fsm.Command{withID, cas}, false},
	}
	for _, c := range cases {
		if got := retrySafe(c.cmds); got != c.want {
			t.Errorf("%s: retry safe %v, want %v", c.name, got, c.want)
		}
	}
}

// fixedPeers is a gossip view that never changes.
type fixedPeers []Peer

func (f fixedPeers) Peers() []Peer { return f }
