package node

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

// Node TLS derived from the gossip keyring (-encrypt without CA files).
//
// Every installed gossip key derives a CA (tlsutil.DeriveCA). This node
// trusts exactly the CAs of the keys installed now: a key installed with
// `meshgw keyring -install` is trusted within keyPollInterval, a key
// removed with `-remove` stops being trusted as fast, so the removed key
// can no longer mint a certificate this node accepts. The RPC connections
// already up are checked again then (VerifyPeer, Agent.dropUntrusted): those
// the removed key's CA authenticated are closed.
//
// The node's own certificate is signed by a per-node intermediate key,
// and that key is cross-signed by the CA of every key the node has held
// (kept in the data dir). The node sends all those cross-signed copies
// with its certificate, so a peer accepts it whichever of the keys it
// trusts: at every step of a rotation, and by Raft listeners that still
// trust only the CAs they loaded at start (dragonboat reads its TLS files
// once; see README "Securing a mesh"). Sending a copy signed by a removed
// key's CA grants nothing to that key's holders: trust is only ever the
// installed keys' CAs.
type keyTLS struct {
	dir, name string
	hosts     []string
	log       zerolog.Logger
	dyn       *tlsutil.Dynamic
	files     tlsMaterial

	mu        sync.Mutex
	applied   [32]byte // hash of the keys last applied
	cas       []*x509.Certificate
	caPEM     []byte // the installed keys' CAs
	intKeyPEM []byte
	crosses   [][]byte // cross-signed intermediates, oldest first
	leafPEM   []byte
	leafKey   []byte
	// learned: peer → its issuer copies signed by an installed key's CA,
	// fetched over RPC; the Raft CA bundle lists them (see raftBundle).
	learned map[string][]*x509.Certificate
}

const (
	// keyPollInterval: how often the local keyring is compared with what
	// the TLS state was derived from (rotations reach a node through
	// serf's key queries, which offer no hook).
	keyPollInterval = 250 * time.Millisecond
	// maxCrosses bounds the cross-signed copies kept and sent: those of
	// installed keys always, then the newest of removed ones.
	maxCrosses = 8

	intKeyFile   = "derived-issuer-key.pem"
	intCertsFile = "derived-issuer-certs.pem"
)

// newKeyTLS builds the derived TLS state of this node from keys (the local
// keyring, primary first), reusing the issuer key and cross-signed copies
// kept in dir, and writes the files the Raft transport reads.
func newKeyTLS(dir, name string, hosts []string, keys [][]byte, log zerolog.Logger) (*keyTLS, error) {
	k := &keyTLS{dir: dir, name: name, hosts: hosts, log: log, learned: map[string][]*x509.Certificate{},
		files: tlsMaterial{mode: tlsDerived,
			caFile:   filepath.Join(dir, "derived-ca.pem"),
			certFile: filepath.Join(dir, "derived-node.pem"),
			keyFile:  filepath.Join(dir, "derived-node-key.pem")}}
	if err := k.load(); err != nil {
		return nil, err
	}
	if _, err := k.Refresh(keys); err != nil {
		return nil, err
	}
	return k, nil
}

// load reads the issuer key and its cross-signed copies, creating the key
// when missing (a new node, or a data dir from an older version).
func (k *keyTLS) load() error {
	keyPath := filepath.Join(k.dir, intKeyFile)
	data, err := os.ReadFile(keyPath)
	switch {
	case err == nil:
		k.intKeyPEM = data
		certs, err := os.ReadFile(filepath.Join(k.dir, intCertsFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("derived TLS: %w", err)
		}
		for rest := certs; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			if _, err := x509.ParseCertificate(b.Bytes); err == nil && b.Type == "CERTIFICATE" {
				k.crosses = append(k.crosses, pem.EncodeToMemory(b))
			}
		}
	case errors.Is(err, os.ErrNotExist):
		if k.intKeyPEM, err = tlsutil.NewIntermediateKey(); err != nil {
			return err
		}
		if err := writeAtomic(keyPath, k.intKeyPEM); err != nil {
			return err
		}
	default:
		return fmt.Errorf("derived TLS: %w", err)
	}
	return nil
}

// Refresh makes the TLS state follow keys: trust their CAs (only), make
// sure a cross-signed copy exists for each, and rewrite the Raft files.
// It does nothing (and reports false) when keys are those last applied.
func (k *keyTLS) Refresh(keys [][]byte) (changed bool, err error) {
	if len(keys) == 0 {
		return false, errors.New("derived TLS: the gossip keyring is empty")
	}
	h := sha256.New()
	for _, key := range keys {
		h.Write([]byte{byte(len(key))})
		h.Write(key)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	k.mu.Lock()
	defer k.mu.Unlock()
	if sum == k.applied && k.leafPEM != nil {
		return false, nil
	}
	var (
		bundle []byte
		cas    []*x509.Certificate
	)
	installed := make([]bool, len(k.crosses))
	for _, key := range keys {
		caPEM, caKeyPEM, err := tlsutil.DeriveCA(key)
		if err != nil {
			return false, err
		}
		bundle = append(bundle, caPEM...)
		if ca := parsePEMCert(caPEM); ca != nil {
			cas = append(cas, ca)
		}
		i := k.crossOf(caPEM)
		if i < 0 {
			c, err := tlsutil.CrossSign(caPEM, caKeyPEM, k.intKeyPEM, k.name)
			if err != nil {
				return false, fmt.Errorf("derived TLS: %w", err)
			}
			k.crosses = append(k.crosses, c)
			installed = append(installed, true)
			continue
		}
		installed[i] = true
	}
	// Keep every installed key's copy and the newest of the others.
	var kept [][]byte
	extra := maxCrosses - len(keys)
	for i := len(k.crosses) - 1; i >= 0; i-- {
		if installed[i] || extra > 0 {
			if !installed[i] {
				extra--
			}
			kept = append([][]byte{k.crosses[i]}, kept...)
		}
	}
	k.crosses = kept
	if err := writeAtomic(filepath.Join(k.dir, intCertsFile), bytes.Join(k.crosses, nil)); err != nil {
		return false, err
	}
	if k.leafPEM == nil {
		// The leaf is signed by the issuer key, which every copy names
		// alike, so it stays valid across rotations: only the copies sent
		// with it change.
		var err error
		k.leafPEM, k.leafKey, err = tlsutil.GenerateCert(k.crosses[len(k.crosses)-1], k.intKeyPEM, k.name, k.hosts, 10*365*24*time.Hour)
		if err != nil {
			return false, fmt.Errorf("derived TLS: node certificate: %w", err)
		}
		if err := writeAtomic(k.files.keyFile, k.leafKey); err != nil {
			return false, err
		}
	}
	chain := append(append([]byte{}, k.leafPEM...), bytes.Join(k.crosses, nil)...)
	if k.dyn == nil {
		d, err := tlsutil.NewDynamic(bundle, chain, k.leafKey)
		if err != nil {
			return false, fmt.Errorf("derived TLS: %w", err)
		}
		k.dyn = d
	} else if err := k.dyn.Update(bundle, chain, k.leafKey); err != nil {
		return false, fmt.Errorf("derived TLS: %w", err)
	}
	k.cas, k.caPEM = cas, bundle
	for peer, copies := range k.learned {
		if k.learned[peer] = k.signedByInstalled(copies); len(k.learned[peer]) == 0 {
			delete(k.learned, peer)
		}
	}
	// Raft's outbound connections read these files on every dial.
	if err := writeAtomic(k.files.certFile, chain); err != nil {
		return false, err
	}
	if err := writeAtomic(k.files.caFile, k.raftBundle()); err != nil {
		return false, err
	}
	if k.applied != ([32]byte{}) {
		k.log.Info().Int("trusted_cas", len(keys)).Int("issuer_copies", len(k.crosses)).
			Msg("gossip keyring changed: node TLS now trusts the CAs of the installed keys only")
	}
	k.applied = sum
	return true, nil
}

// raftBundle is the CA file the Raft transport verifies peers with: the
// installed keys' CAs, plus the issuer copies peers sent us that one of
// those CAs signed. The copies are needed because a peer's Raft listener
// keeps sending the certificate chain it loaded at start (dragonboat reads
// its files once), which may name only a CA removed since; the peer's own
// issuer, certified by a CA trusted now, verifies that chain. Trusting such
// a copy trusts no more than the CA that signed it (path length 0).
func (k *keyTLS) raftBundle() []byte {
	out := append([]byte{}, k.caPEM...)
	peers := make([]string, 0, len(k.learned))
	for p := range k.learned {
		peers = append(peers, p)
	}
	sort.Strings(peers)
	for _, p := range peers {
		for _, c := range k.learned[p] {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	return out
}

// signedByInstalled keeps the certificates one of the installed keys' CAs
// signed.
func (k *keyTLS) signedByInstalled(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		for _, ca := range k.cas {
			if c.CheckSignatureFrom(ca) == nil {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// VerifyPeer checks again, against the keys installed now, the chain a
// peer sent when its connection was made (transport.Reverify). A member's
// chain of that time may carry only the issuer copy of a key removed since,
// while its issuer is certified by an installed key too: a copy learned
// from it (Learn) then completes the chain. A certificate minted from a
// removed key's CA, or by an issuer no installed key certified, fails.
func (k *keyTLS) VerifyPeer(chain []*x509.Certificate) error {
	err := k.dyn.Verify(chain)
	if err == nil || len(chain) == 0 {
		return err
	}
	k.mu.Lock()
	copies := k.learned[chain[0].Subject.CommonName]
	k.mu.Unlock()
	if len(copies) == 0 {
		return err
	}
	alt := append([]*x509.Certificate{chain[0]}, copies...)
	if len(alt) > maxCrosses+1 {
		alt = alt[:maxCrosses+1]
	}
	return k.dyn.Verify(alt)
}

// Issuers is what this node answers to methodTLSIssuers: its cross-signed
// issuer copies, PEM.
func (k *keyTLS) Issuers() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return bytes.Join(k.crosses, nil)
}

// maxIssuersBody bounds a peer's answer to methodTLSIssuers.
const maxIssuersBody = 64 << 10

// Learn takes peer's answer to methodTLSIssuers: the copies that name
// peer's issuer and that an installed key's CA signed are kept for the
// Raft CA bundle, anything else is ignored. It reports whether the bundle
// changed.
func (k *keyTLS) Learn(peer string, data []byte) (bool, error) {
	if len(data) > maxIssuersBody {
		return false, fmt.Errorf("issuers of %s: %d bytes, at most %d", peer, len(data), maxIssuersBody)
	}
	var got []*x509.Certificate
	for rest := data; len(got) < 2*maxCrosses; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || b.Type != "CERTIFICATE" {
			continue
		}
		if c.IsCA && c.MaxPathLenZero && c.Subject.CommonName == "meshgw node "+peer+" issuer" {
			got = append(got, c)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	got = k.signedByInstalled(got)
	if sameCerts(got, k.learned[peer]) {
		return false, nil
	}
	if len(got) == 0 {
		delete(k.learned, peer)
	} else {
		k.learned[peer] = got
	}
	if err := writeAtomic(k.files.caFile, k.raftBundle()); err != nil {
		return false, err
	}
	k.log.Info().Str("peer", peer).Int("issuer_copies", len(got)).Msg("Raft CA bundle: peer issuer certified by an installed key")
	return true, nil
}

// Prune forgets the copies of peers not in known (gossip no longer lists
// them), so the Raft CA file does not grow with churn.
func (k *keyTLS) Prune(known map[string]bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := len(k.learned)
	for p := range k.learned {
		if !known[p] {
			delete(k.learned, p)
		}
	}
	if len(k.learned) == n {
		return nil
	}
	return writeAtomic(k.files.caFile, k.raftBundle())
}

// Complete reports whether peer's learned copies cover every installed
// key's CA (then asking it again is useless until the keyring changes).
func (k *keyTLS) Complete(peer string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ca := range k.cas {
		found := false
		for _, c := range k.learned[peer] {
			if c.CheckSignatureFrom(ca) == nil {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func parsePEMCert(data []byte) *x509.Certificate {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil
	}
	return c
}

// crossOf returns the index of the cross-signed copy issued by the CA in
// caPEM, or -1.
func (k *keyTLS) crossOf(caPEM []byte) int {
	b, _ := pem.Decode(caPEM)
	if b == nil {
		return -1
	}
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return -1
	}
	for i, c := range k.crosses {
		cb, _ := pem.Decode(c)
		if cb == nil {
			continue
		}
		cert, err := x509.ParseCertificate(cb.Bytes)
		if err == nil && cert.CheckSignatureFrom(ca) == nil {
			return i
		}
	}
	return -1
}

// writeAtomic replaces path with data (mode 0600) so that a reader (the
// Raft transport dialing) never sees a half-written file.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(data)
	if err2 := tmp.Sync(); err == nil {
		err = err2
	}
	if err2 := tmp.Close(); err == nil {
		err = err2
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o600)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
