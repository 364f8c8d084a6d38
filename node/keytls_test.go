package node

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

func keyOf(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func poolOf(t *testing.T, pemData []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pemData) {
		t.Fatal("no certificate in PEM data")
	}
	return p
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func chainOf(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := mustRead(t, path); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func verifyChainAgainst(chain []*x509.Certificate, roots *x509.CertPool) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

func minted(t *testing.T, key []byte) []*x509.Certificate {
	t.Helper()
	ca, caKey, err := tlsutil.DeriveCA(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := tlsutil.GenerateCert(ca, caKey, "intruder", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{parsePEMCert(certPEM)}
}

// The derived TLS follows the keyring: install adds the new key's CA to
// what is trusted, remove drops the old one (a certificate minted from it
// is refused), and the node keeps sending the old key's issuer copy so
// Raft listeners that loaded only the old CA at start still accept it,
// across a restart too.
func TestKeyTLSFollowsKeyring(t *testing.T) {
	k1, k2 := keyOf(1), keyOf(2)
	ca1, _, _ := tlsutil.DeriveCA(k1)
	ca2, _, _ := tlsutil.DeriveCA(k2)
	dir := t.TempDir()
	kt, err := newKeyTLS(dir, "n1", []string{"127.0.0.1"}, [][]byte{k1}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := kt.dyn.Verify(minted(t, k1)); err != nil {
		t.Fatalf("with K1 installed a K1 certificate must be accepted: %v", err)
	}
	if err := kt.dyn.Verify(minted(t, k2)); err == nil {
		t.Fatal("K2 trusted before it was installed")
	}
	for _, step := range [][][]byte{{k1, k2}, {k2, k1}, {k2}} { // install, use, remove
		if _, err := kt.Refresh(step); err != nil {
			t.Fatal(err)
		}
	}
	if err := kt.dyn.Verify(minted(t, k1)); err == nil {
		t.Fatal("a certificate minted from the removed key's CA is accepted")
	}
	if err := kt.dyn.Verify(minted(t, k2)); err != nil {
		t.Fatalf("a certificate of the new key is refused: %v", err)
	}
	if changed, _ := kt.Refresh([][]byte{k2}); changed {
		t.Fatal("a refresh with the same keys changed something")
	}
	bundle := mustRead(t, kt.files.caFile)
	if !bytes.Equal(bundle, ca2) {
		t.Fatalf("the Raft CA file must hold only the installed key's CA:\n%s", bundle)
	}
	chain := chainOf(t, kt.files.certFile)
	for name, ca := range map[string][]byte{"old": ca1, "new": ca2} {
		if err := verifyChainAgainst(chain, poolOf(t, ca)); err != nil {
			t.Errorf("the node's chain does not verify against the %s CA: %v", name, err)
		}
	}
	// A restart with the rotated keyring keeps the old issuer copy.
	kt2, err := newKeyTLS(dir, "n1", []string{"127.0.0.1"}, [][]byte{k2}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyChainAgainst(chainOf(t, kt2.files.certFile), poolOf(t, ca1)); err != nil {
		t.Fatalf("after a restart the chain lost the old key's copy: %v", err)
	}
	if err := kt2.dyn.Verify(minted(t, k1)); err == nil {
		t.Fatal("after a restart the removed key is trusted again")
	}
}

// A peer's issuer copy certified by an installed key's CA goes into the
// Raft CA bundle, so the chain the peer's Raft listener loaded at start
// (naming only the removed key's CA) still verifies; copies naming
// another node or signed only by a removed key's CA are ignored.
func TestKeyTLSLearnsPeerIssuers(t *testing.T) {
	k1, k2 := keyOf(1), keyOf(2)
	self, err := newKeyTLS(t.TempDir(), "n1", nil, [][]byte{k2}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := newKeyTLS(t.TempDir(), "n2", nil, [][]byte{k1}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	startChain := chainOf(t, peer.files.certFile) // what n2's Raft listener keeps sending
	if err := verifyChainAgainst(startChain, poolOf(t, mustRead(t, self.files.caFile))); err == nil {
		t.Fatal("precondition: n2's start chain should not verify against K2 alone")
	}
	if changed, err := self.Learn("n2", peer.Issuers()); changed || err != nil {
		t.Fatalf("copies signed only by a key n1 does not hold were kept (changed %v, err %v)", changed, err)
	}
	if _, err := peer.Refresh([][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	if changed, _ := self.Learn("n3", peer.Issuers()); changed {
		t.Fatal("copies naming n2 were kept for n3")
	}
	if changed, err := self.Learn("n2", peer.Issuers()); !changed || err != nil {
		t.Fatalf("n2's K2 copy not learned (changed %v, err %v)", changed, err)
	}
	if !self.Complete("n2") {
		t.Fatal("n2's copies cover K2, yet it would be asked again")
	}
	if err := verifyChainAgainst(startChain, poolOf(t, mustRead(t, self.files.caFile))); err != nil {
		t.Fatalf("n2's start chain must verify against n1's Raft CA file: %v", err)
	}
	if _, err := self.Learn("n2", bytes.Repeat([]byte("x"), maxIssuersBody+1)); err == nil {
		t.Fatal("an oversized answer accepted")
	}
	// A peer gossip forgot leaves the bundle.
	if err := self.Prune(map[string]bool{"n2": true}); err != nil || !self.Complete("n2") {
		t.Fatalf("a known peer was pruned (err %v)", err)
	}
	if err := self.Prune(map[string]bool{}); err != nil || self.Complete("n2") {
		t.Fatalf("a forgotten peer was kept (err %v)", err)
	}
	if b := mustRead(t, self.files.caFile); bytes.Count(b, []byte("BEGIN CERTIFICATE")) != 1 {
		t.Fatalf("the Raft CA file still lists a forgotten peer:\n%s", b)
	}
	if _, err := self.Learn("n2", peer.Issuers()); err != nil {
		t.Fatal(err)
	}
	// Once K2 is removed too, what it certified leaves the bundle.
	k3 := keyOf(3)
	if _, err := self.Refresh([][]byte{k3}); err != nil {
		t.Fatal(err)
	}
	ca3, _, _ := tlsutil.DeriveCA(k3)
	if b := mustRead(t, self.files.caFile); !bytes.Equal(b, ca3) {
		t.Fatalf("the Raft CA file kept copies certified by a removed key:\n%s", b)
	}
}

// A connection made before a rotation is checked again with VerifyPeer:
// a member whose chain of that time names only the removed key's CA passes
// once its issuer copy certified by an installed key is learned; a
// certificate minted from the removed key's CA does not.
func TestKeyTLSVerifyPeerAfterRemoval(t *testing.T) {
	k1, k2 := keyOf(1), keyOf(2)
	self, err := newKeyTLS(t.TempDir(), "n1", nil, [][]byte{k1, k2}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := newKeyTLS(t.TempDir(), "n2", nil, [][]byte{k1}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	before := chainOf(t, peer.files.certFile) // sent on a connection made with K1 only
	intruder := minted(t, k1)
	for name, chain := range map[string][]*x509.Certificate{"member": before, "intruder": intruder} {
		if err := self.VerifyPeer(chain); err != nil {
			t.Fatalf("control: the %s's chain must pass while K1 is installed: %v", name, err)
		}
	}
	if _, err := self.Refresh([][]byte{k2}); err != nil { // -remove K1
		t.Fatal(err)
	}
	if err := self.VerifyPeer(intruder); err == nil {
		t.Fatal("a certificate minted from the removed key's CA passes")
	}
	if err := self.VerifyPeer(before); err == nil {
		t.Fatal("the member's K1-only chain passes with no K2 copy of its issuer known")
	}
	if _, err := peer.Refresh([][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	if _, err := self.Learn("n2", peer.Issuers()); err != nil {
		t.Fatal(err)
	}
	if err := self.VerifyPeer(before); err != nil {
		t.Fatalf("the member's older chain with its learned K2 copy: %v", err)
	}
	// An intruder naming n2 is not certified by n2's copies.
	ca1, ca1Key, _ := tlsutil.DeriveCA(k1)
	asN2, _, err := tlsutil.GenerateCert(ca1, ca1Key, "n2", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := self.VerifyPeer([]*x509.Certificate{parsePEMCert(asN2)}); err == nil {
		t.Fatal("an intruder naming n2 passes with n2's learned copies")
	}
}
