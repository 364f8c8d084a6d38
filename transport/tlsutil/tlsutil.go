package tlsutil

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServerName is the DNS SAN every node certificate carries and the name a
// client verifies the server certificate against.
const ServerName = "meshgw"

// File names used in a certificate directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// Errors that classify a certificate problem. They are wrapped with the file
// or certificate they concern.
var (
	// ErrForeignCA: the certificate was not signed by the cluster CA.
	ErrForeignCA = errors.New("tlsutil: certificate not signed by the cluster CA")
	// ErrExpired: the certificate is expired or not yet valid.
	ErrExpired = errors.New("tlsutil: certificate expired or not yet valid")
	// ErrExists: a file that would be written already exists.
	ErrExists = errors.New("tlsutil: file already exists")
)

// CertFileNames returns the certificate and key file names of node name.
func CertFileNames(name string) (certFile, keyFile string) {
	return name + ".pem", name + "-key.pem"
}

// GenerateCA creates a self-signed ECDSA P-256 CA certificate valid for
// validity from now, and returns it and its PKCS#8 key, PEM encoded.
func GenerateCA(cn string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	return generateCA(cn, now.Add(-time.Minute), now.Add(validity))
}

func generateCA(cn string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if cn == "" {
		return nil, nil, errors.New("tlsutil: CA common name is empty")
	}
	if !notAfter.After(notBefore) {
		return nil, nil, errors.New("tlsutil: CA validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"meshgw"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: create CA certificate: %w", err)
	}
	return encode(der, key)
}

// GenerateCert creates a node certificate signed by the CA: ECDSA P-256,
// CN = name, ServerAuth and ClientAuth usages, DNS SANs "meshgw" plus every
// non-IP host, IP SANs for every IP host. The validity is clamped to the CA's.
func GenerateCert(caCertPEM, caKeyPEM []byte, name string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	return generateCert(caCertPEM, caKeyPEM, name, hosts, now.Add(-time.Minute), now.Add(validity))
}

func generateCert(caCertPEM, caKeyPEM []byte, name string, hosts []string, notBefore, notAfter time.Time) (certPEM, keyPEM []byte, err error) {
	if err := ValidName(name); err != nil {
		return nil, nil, err
	}
	if !notAfter.After(notBefore) {
		return nil, nil, errors.New("tlsutil: certificate validity must be positive")
	}
	ca, err := parseCert(caCertPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: CA certificate: %w", err)
	}
	if !ca.IsCA {
		return nil, nil, errors.New("tlsutil: CA certificate is not a CA")
	}
	caKey, err := parseKey(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: CA key: %w", err)
	}
	if !publicKeysEqual(ca.PublicKey, caKey.Public()) {
		return nil, nil, errors.New("tlsutil: CA key does not match the CA certificate")
	}
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"meshgw"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{ServerName},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "" || h == ServerName:
		case net.ParseIP(h) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(h))
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: create certificate %q: %w", name, err)
	}
	return encode(der, key)
}

// ValidName reports whether name is usable as a node name in a certificate
// and as a file name: 1–128 characters of [A-Za-z0-9._-], not starting with '.'.
func ValidName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' {
		return fmt.Errorf("tlsutil: invalid node name %q", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("tlsutil: invalid node name %q: character %q", name, c)
		}
	}
	return nil
}

// NewConfig builds the mutual-TLS config from PEM data: the node presents
// its certificate, requires and verifies the peer's against the CA (both as
// server and as client) and, as client, expects ServerName "meshgw". The
// node certificate itself must be valid now and signed by the CA.
// MinVersion is TLS 1.3 (QUIC requires it). NextProtos is left to the caller.
func NewConfig(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	for _, c := range cas {
		pool.AddCert(c)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate/key pair: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
	}
	if err := verify(leaf, nil, pool, time.Now()); err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ServerName:   ServerName,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// verify checks leaf against the CA pool for both usages and classifies the
// failure as ErrExpired or ErrForeignCA.
func verify(leaf *x509.Certificate, intermediates, pool *x509.CertPool, now time.Time) error {
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: %q valid from %s to %s", ErrExpired, leaf.Subject.CommonName,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return fmt.Errorf("%w: %q: %v", ErrExpired, leaf.Subject.CommonName, err)
		}
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return fmt.Errorf("%w: %q: %v", ErrForeignCA, leaf.Subject.CommonName, err)
		}
		return fmt.Errorf("tlsutil: verify %q: %w", leaf.Subject.CommonName, err)
	}
	return nil
}

// LoadFiles reads the CA, node certificate and key files and returns the
// mutual-TLS config (see NewConfig). Errors name the file concerned.
func LoadFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA file: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read key file: %w", err)
	}
	cfg, err := NewConfig(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: load %s, %s (CA %s): %w", certFile, keyFile, caFile, err)
	}
	return cfg, nil
}

// WriteCAFiles writes ca.pem (0644) and ca-key.pem (0600) into dir (created
// 0700 if missing). It refuses to overwrite: if either file exists it returns
// ErrExists and writes nothing.
func WriteCAFiles(dir string, certPEM, keyPEM []byte) (certFile, keyFile string, err error) {
	return writePair(dir, CAFile, CAKeyFile, certPEM, keyPEM)
}

// WriteCertFiles writes NAME.pem (0644) and NAME-key.pem (0600) into dir,
// refusing to overwrite like WriteCAFiles.
func WriteCertFiles(dir, name string, certPEM, keyPEM []byte) (certFile, keyFile string, err error) {
	if err := ValidName(name); err != nil {
		return "", "", err
	}
	c, k := CertFileNames(name)
	return writePair(dir, c, k, certPEM, keyPEM)
}

func writePair(dir, certName, keyName string, certPEM, keyPEM []byte) (string, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("tlsutil: create dir: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return "", "", fmt.Errorf("%w: %s", ErrExists, f)
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", "", fmt.Errorf("tlsutil: %w", err)
		}
	}
	if err := writeExcl(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeExcl(certFile, certPEM, 0o644); err != nil {
		_ = os.Remove(keyFile)
		return "", "", err
	}
	return certFile, keyFile, nil
}

func writeExcl(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		return fmt.Errorf("tlsutil: %w", err)
	}
	_, err = f.Write(data)
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("tlsutil: write %s: %w", path, err)
	}
	return nil
}

// EnsureDevFiles makes dir hold an ephemeral development CA and a
// certificate for nodeName (hosts localhost, 127.0.0.1, ::1), reusing the
// files already there, and returns their paths. For -dev and tests only.
func EnsureDevFiles(dir, nodeName string) (caFile, certFile, keyFile string, err error) {
	if err := ValidName(nodeName); err != nil {
		return "", "", "", err
	}
	caFile, caKeyFile := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	c, k := CertFileNames(nodeName)
	certFile, keyFile = filepath.Join(dir, c), filepath.Join(dir, k)
	if !exists(caFile) || !exists(caKeyFile) {
		certPEM, keyPEM, err := GenerateCA("meshgw dev CA", 10*365*24*time.Hour)
		if err != nil {
			return "", "", "", err
		}
		if _, _, err := WriteCAFiles(dir, certPEM, keyPEM); err != nil {
			return "", "", "", fmt.Errorf("tlsutil: dev CA in %s: %w", dir, err)
		}
	}
	if exists(certFile) && exists(keyFile) {
		return caFile, certFile, keyFile, nil
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return "", "", "", fmt.Errorf("tlsutil: read CA file: %w", err)
	}
	caKeyPEM, err := os.ReadFile(caKeyFile)
	if err != nil {
		return "", "", "", fmt.Errorf("tlsutil: read CA key file: %w", err)
	}
	certPEM, keyPEM, err := GenerateCert(caPEM, caKeyPEM, nodeName, []string{"localhost", "127.0.0.1", "::1"}, 10*365*24*time.Hour)
	if err != nil {
		return "", "", "", fmt.Errorf("tlsutil: dev certificate in %s: %w", dir, err)
	}
	if _, _, err := WriteCertFiles(dir, nodeName, certPEM, keyPEM); err != nil {
		return "", "", "", fmt.Errorf("tlsutil: dev certificate in %s: %w", dir, err)
	}
	return caFile, certFile, keyFile, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlsutil: serial number: %w", err)
	}
	return serial, nil
}

func encode(der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return certPEM, keyPEM, nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	certs, err := parseCerts(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return out, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok1 := a.(interface{ Equal(crypto.PublicKey) bool })
	if ok1 {
		return ea.Equal(b)
	}
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}
