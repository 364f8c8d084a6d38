package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := GenerateCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func mustCert(t *testing.T, ca, caKey []byte, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := GenerateCert(ca, caKey, name, []string{"node1.example", "10.0.0.7", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestGenerateCertContents(t *testing.T) {
	ca, caKey := mustCA(t)
	certPEM, _ := mustCert(t, ca, caKey, "node1")
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "node1" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	if strings.Join(c.DNSNames, ",") != "meshgw,node1.example" {
		t.Errorf("DNS SANs %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) {
		t.Errorf("IP SANs %v", c.IPAddresses)
	}
	if len(c.ExtKeyUsage) != 2 {
		t.Errorf("EKUs %v", c.ExtKeyUsage)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA || c.IsCA {
		t.Errorf("algorithm %v, IsCA %v", c.PublicKeyAlgorithm, c.IsCA)
	}
	if _, _, err := GenerateCert(ca, caKey, "../evil", nil, time.Hour); err == nil {
		t.Error("a path-like node name was accepted")
	}
	otherCA, otherKey := mustCA(t)
	if _, _, err := GenerateCert(ca, otherKey, "x", nil, time.Hour); err == nil {
		t.Error("a CA key that does not match the CA certificate was accepted")
	}
	_ = otherCA
}

// handshake runs a TLS 1.3 handshake over an in-memory pipe.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(5 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			// Read once so a client-side rejection of our certificate
			// (sent after the server's flight) reaches us.
			_, err = s.Read(make([]byte, 1))
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Write([]byte{1})
	}
	b.Close()
	serverErr = <-done
	return serverErr, clientErr
}

func TestMutualTLSAcceptsOwnCARefusesForeign(t *testing.T) {
	ca, caKey := mustCA(t)
	c1, k1 := mustCert(t, ca, caKey, "n1")
	c2, k2 := mustCert(t, ca, caKey, "n2")
	srv, err := NewConfig(ca, c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := NewConfig(ca, c2, k2)
	if err != nil {
		t.Fatal(err)
	}
	if se, ce := handshake(t, srv, cli); se != nil || ce != nil {
		t.Fatalf("same CA: server %v, client %v", se, ce)
	}
	if srv.ClientAuth != tls.RequireAndVerifyClientCert || cli.ServerName != ServerName {
		t.Fatalf("config: ClientAuth %v ServerName %q", srv.ClientAuth, cli.ServerName)
	}

	fca, fcaKey := mustCA(t)
	fc, fk := mustCert(t, fca, fcaKey, "intruder")
	foreign, err := NewConfig(fca, fc, fk)
	if err != nil {
		t.Fatal(err)
	}
	// A foreign client is refused by our server.
	if se, _ := handshake(t, srv, foreign); se == nil || !strings.Contains(se.Error(), "certificate") {
		t.Errorf("foreign client: server error %v", se)
	}
	// A foreign server is refused by our client.
	if _, ce := handshake(t, foreign, cli); ce == nil || !strings.Contains(ce.Error(), "unknown authority") {
		t.Errorf("foreign server: client error %v", ce)
	}
	// A node certificate from another CA is refused at load time.
	if _, err := NewConfig(ca, fc, fk); !errors.Is(err, ErrForeignCA) {
		t.Errorf("foreign node cert at load: %v", err)
	}
}

func TestExpiredCertRefused(t *testing.T) {
	ca, caKey := mustCA(t)
	now := time.Now()
	oldC, oldK, err := generateCert(ca, caKey, "old", nil, now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewConfig(ca, oldC, oldK); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired node cert at load: %v", err)
	}
	// A peer presenting an expired certificate fails the handshake.
	pair, err := tls.X509KeyPair(oldC, oldK)
	if err != nil {
		t.Fatal(err)
	}
	c1, k1 := mustCert(t, ca, caKey, "n1")
	srv, err := NewConfig(ca, c1, k1)
	if err != nil {
		t.Fatal(err)
	}
	expiredCli := srv.Clone()
	expiredCli.Certificates = []tls.Certificate{pair}
	if se, _ := handshake(t, srv, expiredCli); se == nil || !strings.Contains(se.Error(), "expired") {
		t.Errorf("expired client cert: server error %v", se)
	}
	// Expired CA.
	oldCA, oldCAKey, err := generateCA("old CA", now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c, k, err := generateCert(oldCA, oldCAKey, "n", nil, now.Add(-2*time.Hour), now.Add(time.Hour)); err == nil {
		if _, err := NewConfig(oldCA, c, k); err == nil {
			t.Error("a certificate of an expired CA was accepted")
		}
	}
}

func TestLoadFilesErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, err := EnsureDevFiles(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFiles(ca, cert, key); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.pem")
	for _, args := range [][3]string{{missing, cert, key}, {ca, missing, key}, {ca, cert, missing}} {
		_, err := LoadFiles(args[0], args[1], args[2])
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Errorf("missing file: %v", err)
		}
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not pem"), 0o600)
	if _, err := LoadFiles(garbage, cert, key); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage CA: %v", err)
	}
	// A key that does not belong to the certificate.
	_, _, key2, err := EnsureDevFiles(dir, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFiles(ca, cert, key2); err == nil {
		t.Error("mismatched key accepted")
	}
}

func TestEnsureDevFilesReuses(t *testing.T) {
	dir := t.TempDir()
	ca, cert, _, err := EnsureDevFiles(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	ca1, _ := os.ReadFile(ca)
	cert1, _ := os.ReadFile(cert)
	ca2f, cert2f, _, err := EnsureDevFiles(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(ca2f)
	cert2, _ := os.ReadFile(cert2f)
	if string(ca1) != string(ca2) || string(cert1) != string(cert2) {
		t.Error("EnsureDevFiles regenerated existing files")
	}
	// A second node in the same dir shares the CA.
	_, c3, k3, err := EnsureDevFiles(dir, "n3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFiles(ca, c3, k3); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFilesModesAndNoOverwrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	ca, caKey := mustCA(t)
	cf, kf, err := WriteCAFiles(dir, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cf) != CAFile || filepath.Base(kf) != CAKeyFile {
		t.Errorf("names %s %s", cf, kf)
	}
	if st, _ := os.Stat(kf); st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v", st.Mode().Perm())
	}
	if _, _, err := WriteCAFiles(dir, ca, caKey); !errors.Is(err, ErrExists) {
		t.Errorf("overwrite CA: %v", err)
	}
	c, k := mustCert(t, ca, caKey, "node1")
	cf, kf, err = WriteCertFiles(dir, "node1", c, k)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(cf) != "node1.pem" || filepath.Base(kf) != "node1-key.pem" {
		t.Errorf("names %s %s", cf, kf)
	}
	if st, _ := os.Stat(kf); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}
	before, _ := os.ReadFile(cf)
	if _, _, err := WriteCertFiles(dir, "node1", []byte("x"), []byte("y")); !errors.Is(err, ErrExists) {
		t.Errorf("overwrite cert: %v", err)
	}
	after, _ := os.ReadFile(cf)
	if string(before) != string(after) {
		t.Error("existing certificate was changed")
	}
	if _, _, err := WriteCertFiles(dir, "a/b", c, k); err == nil {
		t.Error("a path in the node name was accepted")
	}
	if _, err := LoadFiles(filepath.Join(dir, CAFile), cf, kf); err != nil {
		t.Fatal(err)
	}
}
