package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

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
// them in DataDir/tls where the agent owns the CA. keys is the local gossip
// keyring (primary first; nil when gossip is not encrypted): with no CA
// files and not -dev, the TLS is derived from it and follows rotations
// (keyTLS, returned non-nil).
func resolveTLS(cfg config.Runtime, hosts []string, keys [][]byte, log zerolog.Logger) (tlsMaterial, *keyTLS, error) {
	if cfg.CAFile != "" {
		tc, err := tlsutil.LoadFiles(cfg.CAFile, cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return tlsMaterial{}, nil, fmt.Errorf("-ca-file/-cert-file/-key-file: %w; they must be PEM files: "+
				"the cluster's CA certificate, and this node's certificate signed by it and its key "+
				"(meshgw tls ca create, then meshgw tls cert create -node NAME)", err)
		}
		if err := certNamesNode(tc, cfg.NodeName); err != nil {
			return tlsMaterial{}, nil, fmt.Errorf("-cert-file %s: %w", cfg.CertFile, err)
		}
		return tlsMaterial{mode: tlsFiles, caFile: cfg.CAFile, certFile: cfg.CertFile, keyFile: cfg.KeyFile}, nil, nil
	}
	dir := filepath.Join(cfg.DataDir, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tlsMaterial{}, nil, fmt.Errorf("tls dir: %w", err)
	}
	if cfg.Dev {
		ca, cert, key, err := tlsutil.EnsureDevFiles(dir, cfg.NodeName)
		if err != nil {
			return tlsMaterial{}, nil, fmt.Errorf("dev TLS material: %w", err)
		}
		return tlsMaterial{mode: tlsDev, caFile: ca, certFile: cert, keyFile: key}, nil, nil
	}
	if len(keys) > 0 {
		// The keyring, not -encrypt: after a rotation and a restart the
		// data dir's keyring holds the current keys, -encrypt the first.
		kt, err := newKeyTLS(dir, cfg.NodeName, hosts, keys, log)
		if err != nil {
			return tlsMaterial{}, nil, err
		}
		return kt.files, kt, nil
	}
	if cfg.Encrypt == "" && cfg.RequireTLSCA && (cfg.IsSet("require-tls-ca") || !loopbackOnly(cfg)) {
		return tlsMaterial{}, nil, fmt.Errorf("node-to-node TLS needs a cluster secret: give -encrypt KEY (meshgw keygen; the CA is derived from it) " +
			"or -ca-file/-cert-file/-key-file (meshgw tls ca create); refusing the built-in shared CA (-require-tls-ca, on by default " +
			"for nodes reachable off their host; -require-tls-ca=false accepts it)")
	}
	caPEM, caKeyPEM, err := tlsutil.DeriveCA([]byte(builtinSeed))
	if err != nil {
		return tlsMaterial{}, nil, err
	}
	certPEM, keyPEM, err := tlsutil.GenerateCert(caPEM, caKeyPEM, cfg.NodeName, hosts, 10*365*24*time.Hour)
	if err != nil {
		return tlsMaterial{}, nil, fmt.Errorf("node certificate: %w", err)
	}
	m := tlsMaterial{mode: tlsBuiltin,
		caFile:   filepath.Join(dir, "builtin-ca.pem"),
		certFile: filepath.Join(dir, "builtin-node.pem"),
		keyFile:  filepath.Join(dir, "builtin-node-key.pem")}
	for _, f := range []struct {
		path string
		data []byte
	}{{m.caFile, caPEM}, {m.certFile, certPEM}, {m.keyFile, keyPEM}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return tlsMaterial{}, nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return m, nil, nil
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

// certNamesNode checks that the node certificate is for this node: peers
// take a caller's name from its certificate and refuse one whose
// certificate names another node than its gossip name, so a mismatch is
// better refused at start than seen as a foreign node by every peer.
func certNamesNode(tc *tls.Config, node string) error {
	if len(tc.Certificates) == 0 || len(tc.Certificates[0].Certificate) == 0 {
		return fmt.Errorf("no certificate")
	}
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		return fmt.Errorf("parse the certificate: %w", err)
	}
	if leaf.Subject.CommonName != node {
		return fmt.Errorf("the certificate is for node %q, not this node %q (-node): "+
			"peers know a node by the name in its certificate; create one with "+
			"`meshgw tls cert create -node %s`", leaf.Subject.CommonName, node, node)
	}
	return nil
}
