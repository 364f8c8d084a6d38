package transport

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

func startWith(t *testing.T, conf *tls.Config, setup func(*Transport)) *Transport {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.TLS = conf
	tr, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(tr)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func dynamicFor(t *testing.T, secret, name string) (d *tlsutil.Dynamic, caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	ca, caKey, err := tlsutil.DeriveCA([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := tlsutil.GenerateCert(ca, caKey, name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = tlsutil.NewDynamic(ca, cert, key); err != nil {
		t.Fatal(err)
	}
	return d, ca, cert, key
}

// A transport on a tlsutil.Dynamic config serves mutually verified peers,
// learns the caller's name, and follows an Update for new connections.
func TestDynamicTLS(t *testing.T) {
	sd, _, _, _ := dynamicFor(t, "k1", "server")
	srv := startWith(t, sd.Config(), func(tr *Transport) {
		tr.Handle("echo", func(ctx context.Context, r *Request) ([]byte, error) { return []byte(r.Peer), nil })
	})
	cd, _, _, _ := dynamicFor(t, "k1", "client")
	cli := startWith(t, cd.Config(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := cli.Call(ctx, srv.Addr().String(), "echo", nil)
	if err != nil || string(got) != "client" {
		t.Fatalf("call: %q %v", got, err)
	}
	if statelessResetKey(srv.serverTLS) == nil {
		t.Error("no stateless reset key from a GetCertificate config")
	}
	// The server now trusts only another CA: a new connection is refused.
	_, ca2, cert2, key2 := dynamicFor(t, "k2", "server")
	if err := sd.Update(ca2, cert2, key2); err != nil {
		t.Fatal(err)
	}
	cli2 := startWith(t, cd.Config(), nil)
	if _, err := cli2.Call(ctx, srv.Addr().String(), "echo", nil); err == nil {
		t.Fatal("a peer of a CA no longer trusted was served")
	}
}
