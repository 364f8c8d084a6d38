package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"testing"
	"time"
)

func derived(t *testing.T, secret string) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := DeriveCA([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func certsOf(t *testing.T, pemData ...[]byte) []*x509.Certificate {
	t.Helper()
	out, err := parseCerts(bytes.Join(pemData, nil))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeriveCAIsDeterministic(t *testing.T) {
	c1, k1 := derived(t, "secret")
	c2, k2 := derived(t, "secret")
	c3, _ := derived(t, "other")
	if !bytes.Equal(c1, c2) || !bytes.Equal(k1, k2) {
		t.Fatal("same secret, different CA")
	}
	if bytes.Equal(c1, c3) {
		t.Fatal("different secrets, same CA")
	}
}

// A leaf signed by a node issuer key cross-signed by two CAs verifies
// against either CA alone, never against a third; and the issuer copy
// certified by a trusted CA, used as a root, verifies a chain that only
// names an untrusted CA (what the Raft CA bundle relies on).
func TestCrossSignedIssuer(t *testing.T) {
	ca1, ca1Key := derived(t, "k1")
	ca2, ca2Key := derived(t, "k2")
	ca3, _ := derived(t, "k3")
	intKey, err := NewIntermediateKey()
	if err != nil {
		t.Fatal(err)
	}
	x1, err := CrossSign(ca1, ca1Key, intKey, "n1")
	if err != nil {
		t.Fatal(err)
	}
	x2, err := CrossSign(ca2, ca2Key, intKey, "n1")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := GenerateCert(x2, intKey, "n1", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	both := certsOf(t, leaf, x1, x2)
	cases := []struct {
		name  string
		chain []*x509.Certificate
		roots [][]byte
		ok    bool
	}{
		{"both copies, old CA", both, [][]byte{ca1}, true},
		{"both copies, new CA", both, [][]byte{ca2}, true},
		{"both copies, foreign CA", both, [][]byte{ca3}, false},
		{"old copy only, new CA", certsOf(t, leaf, x1), [][]byte{ca2}, false},
		{"old copy only, new CA's copy as root", certsOf(t, leaf, x1), [][]byte{ca2, x2}, true},
		{"leaf alone, old CA", certsOf(t, leaf), [][]byte{ca1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pool := x509.NewCertPool()
			for _, r := range c.roots {
				pool.AppendCertsFromPEM(r)
			}
			err := verifyChain(c.chain, pool, time.Now())
			if c.ok != (err == nil) {
				t.Fatalf("want ok=%v, got %v", c.ok, err)
			}
			if !c.ok && !errors.Is(err, ErrForeignCA) {
				t.Fatalf("want ErrForeignCA, got %v", err)
			}
		})
	}
}

// pipeHandshake runs a TLS handshake between a client and a server config
// over a pipe and returns the server's error.
func pipeHandshake(t *testing.T, client, server *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	errc := make(chan error, 1)
	go func() {
		c := tls.Client(a, client)
		err := c.Handshake()
		if err == nil {
			// TLS 1.3: the server judges the client certificate after
			// the client is done; read its verdict.
			_, err = c.Read(make([]byte, 1))
		}
		errc <- err
		a.Close()
	}()
	s := tls.Server(b, server)
	err := s.Handshake()
	if err == nil {
		_, _ = s.Write([]byte{1})
	}
	<-errc
	return err
}

func staticConfig(t *testing.T, caPEM, caKeyPEM []byte, roots ...[]byte) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := GenerateCert(caPEM, caKeyPEM, "peer", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := NewConfig(bytes.Join(roots, nil), certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Update swaps what a Dynamic trusts for the next handshakes: a peer of
// the removed CA is refused at once, one of the new CA accepted.
func TestDynamicUpdateTakesEffect(t *testing.T) {
	ca1, ca1Key := derived(t, "k1")
	ca2, ca2Key := derived(t, "k2")
	certPEM, keyPEM, err := GenerateCert(ca1, ca1Key, "self", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDynamic(ca1, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	old := staticConfig(t, ca1, ca1Key, ca1, ca2)
	fresh := staticConfig(t, ca2, ca2Key, ca1, ca2)
	if err := pipeHandshake(t, old, d.Config()); err != nil {
		t.Fatalf("a peer of the trusted CA is refused: %v", err)
	}
	if err := pipeHandshake(t, fresh, d.Config()); err == nil {
		t.Fatal("a peer of a CA not yet trusted is accepted")
	}
	// Rotate: trust only CA2, present a certificate of CA2.
	cert2, key2, err := GenerateCert(ca2, ca2Key, "self", []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conf := d.Config() // made before the update: must follow it too
	if err := d.Update(ca2, cert2, key2); err != nil {
		t.Fatal(err)
	}
	if err := pipeHandshake(t, old, conf); err == nil || !errors.Is(err, ErrForeignCA) {
		t.Fatalf("a peer of the removed CA must be refused with ErrForeignCA, got %v", err)
	}
	if err := pipeHandshake(t, fresh, conf); err != nil {
		t.Fatalf("a peer of the new CA is refused: %v", err)
	}
	// As a client, the Dynamic checks the server against the current CAs.
	srv := staticConfig(t, ca1, ca1Key, ca1, ca2)
	if err := pipeHandshake(t, conf, srv); err == nil {
		t.Fatal("the server accepted a client that should have refused its CA")
	}
	// A certificate the new CAs do not verify is refused by Update.
	if err := d.Update(ca1, cert2, key2); err == nil {
		t.Fatal("Update accepted a certificate its CAs do not verify")
	}
	if d.Certificate().Leaf.Subject.CommonName != "self" {
		t.Fatal("certificate lost")
	}
}

func TestDynamicVerifyBounds(t *testing.T) {
	ca1, ca1Key := derived(t, "k1")
	certPEM, keyPEM, err := GenerateCert(ca1, ca1Key, "self", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDynamic(ca1, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Verify(nil); err == nil {
		t.Fatal("no certificate accepted")
	}
	long := certsOf(t, bytes.Repeat(certPEM, maxPeerChain+1))
	if err := d.Verify(long); err == nil {
		t.Fatal("an oversized chain accepted")
	}
	if err := d.Verify(certsOf(t, certPEM)); err != nil {
		t.Fatal(err)
	}
	// The "meshgw" name is required (node certificates all carry it).
	b, _ := pem.Decode(ca1)
	ca, _ := x509.ParseCertificate(b.Bytes)
	if err := d.Verify([]*x509.Certificate{ca}); err == nil {
		t.Fatal("a certificate without the meshgw name accepted")
	}
}
