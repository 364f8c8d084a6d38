package tlsutil

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync/atomic"
	"time"
)

// DeriveCA deterministically derives a CA certificate and key from secret
// (a gossip key): every node holding the same secret builds the same CA, so
// a mesh that shares a gossip key gets mutually authenticated TLS with no
// files to copy. The derivation is fixed (v1): nodes of other meshgw
// versions must derive the same CA from the same key.
func DeriveCA(secret []byte) (certPEM, keyPEM []byte, err error) {
	seed, err := hkdf.Key(sha256.New, secret, []byte("meshgw"), "meshgw node-to-node CA v1", ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: derive CA: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meshgw derived cluster CA", Organization: []string{"meshgw"}},
		NotBefore:             time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2124, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	// Ed25519 signatures are deterministic, so the certificate bytes are
	// identical on every node (no randomness is read).
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: derive CA certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: derive CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}

// NewIntermediateKey returns a fresh ECDSA P-256 key, PKCS#8 PEM, for a
// node's own issuing certificate (see CrossSign).
func NewIntermediateKey() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: generate intermediate key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: marshal intermediate key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// CrossSign issues, with the CA, an intermediate CA certificate for the
// node's intermediate key (subject "meshgw node NAME issuer", path length
// 0). Every CA that cross-signs the same key yields a certificate with the
// same subject and key, so one leaf signed by that key, sent with several
// such certificates, verifies against any of those CAs: a peer trusting
// only the old or only the new CA of a rotation accepts it.
func CrossSign(caCertPEM, caKeyPEM, intKeyPEM []byte, name string) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA certificate: %w", err)
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: CA key: %w", err)
	}
	if !publicKeysEqual(ca.PublicKey, caKey.Public()) {
		return nil, errors.New("tlsutil: CA key does not match the CA certificate")
	}
	intKey, err := parseKey(intKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: intermediate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshgw node " + name + " issuer", Organization: []string{"meshgw"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              ca.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	// The subject key ID is computed from the key, so it is the same in
	// every cross-signed copy: the leaf's authority key ID matches each.
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, intKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: cross-sign %q: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// maxPeerChain bounds the certificates a peer may send: a node sends its
// leaf and a few cross-signed intermediates, never more.
const maxPeerChain = 16

// Dynamic is a mutual-TLS configuration whose trusted CAs and own
// certificate can be replaced while connections are made (key rotation).
// Handshakes read the current state atomically; connections already up
// are not re-checked by it: pass Verify to transport's Reverify for that.
type Dynamic struct {
	cur atomic.Pointer[dynState]
}

type dynState struct {
	pool *x509.CertPool
	cert *tls.Certificate
}

// NewDynamic builds a Dynamic from PEM data, checked like Update.
func NewDynamic(caPEM, certPEM, keyPEM []byte) (*Dynamic, error) {
	d := &Dynamic{}
	if err := d.Update(caPEM, certPEM, keyPEM); err != nil {
		return nil, err
	}
	return d, nil
}

// Update replaces the trusted CAs (every CERTIFICATE in caPEM) and this
// node's certificate (certPEM: the leaf, then any intermediates). The
// certificate must verify against the new CAs; on error nothing changes.
func (d *Dynamic) Update(caPEM, certPEM, keyPEM []byte) error {
	cas, err := parseCerts(caPEM)
	if err != nil {
		return fmt.Errorf("tlsutil: CA: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("tlsutil: certificate/key pair: %w", err)
	}
	chain := make([]*x509.Certificate, 0, len(pair.Certificate))
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("tlsutil: certificate: %w", err)
		}
		chain = append(chain, c)
	}
	pair.Leaf = chain[0]
	if err := verifyChain(chain, pool, time.Now()); err != nil {
		return err
	}
	d.cur.Store(&dynState{pool: pool, cert: &pair})
	return nil
}

// Certificate is this node's current certificate.
func (d *Dynamic) Certificate() *tls.Certificate { return d.cur.Load().cert }

// Verify checks a peer's chain (leaf first) against the current CAs: it
// must chain to one of them, carry the "meshgw" name and be valid now.
func (d *Dynamic) Verify(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("tlsutil: peer sent no certificate")
	}
	if len(chain) > maxPeerChain {
		return fmt.Errorf("tlsutil: peer sent %d certificates, at most %d", len(chain), maxPeerChain)
	}
	if err := verifyChain(chain, d.cur.Load().pool, time.Now()); err != nil {
		return err
	}
	if err := chain[0].VerifyHostname(ServerName); err != nil {
		return fmt.Errorf("tlsutil: peer certificate: %w", err)
	}
	return nil
}

// Config returns a mutual-TLS config for both sides of a connection that
// always uses the current state: the certificate comes from
// GetCertificate/GetClientCertificate and the peer is checked by
// VerifyConnection (full and resumed handshakes) against the current CAs.
// The standard checks are turned off only because they would read a CA
// pool fixed at creation; VerifyConnection does the same checks instead.
// MinVersion is TLS 1.3; NextProtos is left to the caller.
func (d *Dynamic) Config() *tls.Config {
	return &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return d.Certificate(), nil },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return d.Certificate(), nil
		},
		ClientAuth:         tls.RequireAnyClientCert,
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies against the current CAs
		VerifyConnection:   func(cs tls.ConnectionState) error { return d.Verify(cs.PeerCertificates) },
		ServerName:         ServerName,
		MinVersion:         tls.VersionTLS13,
	}
}

// verifyChain checks chain[0] against pool, with chain[1:] as
// intermediates, classified like verify.
func verifyChain(chain []*x509.Certificate, pool *x509.CertPool, now time.Time) error {
	var inter *x509.CertPool
	if len(chain) > 1 {
		inter = x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
	}
	return verify(chain[0], inter, pool, now)
}
