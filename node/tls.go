package node

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// tlsMode says where the node-to-node TLS material came from.
type tlsMode string

const (
	tlsFiles   tlsMode = "files"   // -ca-file/-cert-file/-key-file: the operator's CA
	tlsDev     tlsMode = "dev"     // -dev: an ephemeral CA of this node only
	tlsDerived tlsMode = "derived" // a CA derived from the gossip key: the key is the cluster secret
	tlsBuiltin tlsMode = "builtin" // the shared built-in CA: encrypted, but not a secret
)

// tlsMaterial are the files the RPC and Raft transports load.
type tlsMaterial struct {
	mode                      tlsMode
	caFile, certFile, keyFile string
}

// builtinSeed seeds the CA used when neither CA files nor a gossip key are
// given. It is public: links are encrypted and mutually authenticated
// against it, but anyone with a meshgw binary holds it too.
const builtinSeed = "meshgw built-in development CA v1: not a secret"

// resolveTLS returns the node-to-node TLS files for this agent, creating
// them in DataDir/tls where the agent owns the CA.
func resolveTLS(cfg config.Runtime, hosts []string) (tlsMaterial, error) {
	if cfg.CAFile != "" {
		if _, err := tlsutil.LoadFiles(cfg.CAFile, cfg.CertFile, cfg.KeyFile); err != nil {
			return tlsMaterial{}, fmt.Errorf("-ca-file/-cert-file/-key-file: %w", err)
		}
		return tlsMaterial{mode: tlsFiles, caFile: cfg.CAFile, certFile: cfg.CertFile, keyFile: cfg.KeyFile}, nil
	}
	dir := filepath.Join(cfg.DataDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tlsMaterial{}, fmt.Errorf("tls dir: %w", err)
	}
	if cfg.Dev {
		ca, cert, key, err := tlsutil.EnsureDevFiles(dir, cfg.NodeName)
		if err != nil {
			return tlsMaterial{}, fmt.Errorf("dev TLS material: %w", err)
		}
		return tlsMaterial{mode: tlsDev, caFile: ca, certFile: cert, keyFile: key}, nil
	}
	if cfg.Encrypt == "" && cfg.RequireTLSCA && (cfg.IsSet("require-tls-ca") || !loopbackOnly(cfg)) {
		return tlsMaterial{}, fmt.Errorf("node-to-node TLS needs a cluster secret: give -encrypt KEY (meshgw keygen; the CA is derived from it) " +
			"or -ca-file/-cert-file/-key-file (meshgw tls ca create); refusing the built-in shared CA (-require-tls-ca, on by default " +
			"for nodes reachable off their host; -require-tls-ca=false accepts it)")
	}
	mode, secret := tlsBuiltin, []byte(builtinSeed)
	if cfg.Encrypt != "" {
		key, err := base64.StdEncoding.DecodeString(cfg.Encrypt)
		if err != nil {
			return tlsMaterial{}, fmt.Errorf("-encrypt: not base64: %w", err)
		}
		mode, secret = tlsDerived, key
	}
	caPEM, caKeyPEM, err := derivedCA(secret)
	if err != nil {
		return tlsMaterial{}, err
	}
	certPEM, keyPEM, err := tlsutil.GenerateCert(caPEM, caKeyPEM, cfg.NodeName, hosts, 10*365*24*time.Hour)
	if err != nil {
		return tlsMaterial{}, fmt.Errorf("node certificate: %w", err)
	}
	m := tlsMaterial{mode: mode,
		caFile:   filepath.Join(dir, "derived-ca.pem"),
		certFile: filepath.Join(dir, "derived-node.pem"),
		keyFile:  filepath.Join(dir, "derived-node-key.pem")}
	for _, f := range []struct {
		path string
		data []byte
	}{{m.caFile, caPEM}, {m.certFile, certPEM}, {m.keyFile, keyPEM}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return tlsMaterial{}, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return m, nil
}

// loopbackOnly reports whether every listener that peers reach (gossip,
// RPC, Raft) is bound to a loopback address: such a node can only be
// reached from its own host, so the built-in CA exposes nothing.
func loopbackOnly(cfg config.Runtime) bool {
	for _, addr := range []string{cfg.BindAddr, cfg.RPCAddr, cfg.RaftAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return false
		}
		if host == "localhost" {
			continue
		}
		if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// derivedCA deterministically derives a CA certificate and key from secret:
// every node holding the same secret builds the same CA, so a mesh that
// shares a gossip key gets mutually authenticated TLS with no files to copy.
func derivedCA(secret []byte) (certPEM, keyPEM []byte, err error) {
	seed, err := hkdf.Key(sha256.New, secret, []byte("meshgw"), "meshgw node-to-node CA v1", ed25519.SeedSize)
	if err != nil {
		return nil, nil, fmt.Errorf("derive CA: %w", err)
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
		return nil, nil, fmt.Errorf("derive CA certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("derive CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}
