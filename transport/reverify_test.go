package transport

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

// Connections made before a CA left the trust set are closed by Reverify,
// accepted and dialed ones alike; those of a CA still trusted stay up, and
// the refused peer cannot connect again.
func TestReverifyClosesConnectionsOfARemovedCA(t *testing.T) {
	_, ca1, oldCert, oldKey := dynamicFor(t, "k1", "old")
	_, ca2, srvCert, srvKey := dynamicFor(t, "k2", "server")
	_, _, keepCert, keepKey := dynamicFor(t, "k2", "keep")
	both := append(append([]byte{}, ca1...), ca2...)
	dyn := func(cert, key []byte) *tlsutil.Dynamic {
		d, err := tlsutil.NewDynamic(both, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	echo := func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return []byte(r.Peer), nil })
	}
	sd := dyn(srvCert, srvKey)
	srv := startWith(t, sd.Config(), echo)
	old := startWith(t, dyn(oldCert, oldKey).Config(), echo)
	keep := startWith(t, dyn(keepCert, keepKey).Config(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(from, to *Transport) error {
		_, err := from.Call(ctx, to.Addr().String(), "echo", nil)
		return err
	}
	for _, c := range [][2]*Transport{{old, srv}, {srv, old}, {keep, srv}} {
		if err := call(c[0], c[1]); err != nil {
			t.Fatalf("control: %v", err)
		}
	}

	// k1 leaves the server's trust set. New handshakes follow at once; the
	// connections already up do not, until Reverify.
	if err := sd.Update(ca2, srvCert, srvKey); err != nil {
		t.Fatal(err)
	}
	if err := call(old, srv); err != nil {
		t.Fatalf("the connection made before the removal was expected to stay up until Reverify: %v", err)
	}
	if got := srv.Reverify(sd.Verify); !slices.Equal(got, []string{"old"}) {
		t.Fatalf("closed %v, want [old]", got)
	}
	for _, c := range []struct {
		name     string
		from, to *Transport
	}{{"old → server", old, srv}, {"server → old", srv, old}} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := call(c.from, c.to)
			if errors.Is(err, ErrRefused) {
				break
			}
			if err == nil || time.Now().After(deadline) {
				t.Fatalf("%s after Reverify: %v, want the TLS refusal", c.name, err)
			}
		}
	}
	if err := call(keep, srv); err != nil {
		t.Fatalf("a peer of the CA still trusted: %v", err)
	}
	if got := srv.Reverify(sd.Verify); len(got) != 0 {
		t.Fatalf("a second pass closed %v", got)
	}
}
