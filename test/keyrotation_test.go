package test

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// attackerCA derives the node CA from a gossip key exactly as meshgw does
// (HKDF-SHA256 → Ed25519, fixed template): what anyone holding the key can
// compute. It is written out here, not imported, so the test also pins the
// derivation a mixed-version mesh relies on.
func attackerCA(t *testing.T, key string) (certPEM, keyPEM []byte) {
	t.Helper()
	secret, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	seed, err := hkdf.Key(sha256.New, secret, []byte("meshgw"), "meshgw node-to-node CA v1", ed25519.SeedSize)
	if err != nil {
		t.Fatal(err)
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
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}

// mintedTLS is a node certificate named name minted from caPEM/caKeyPEM, in
// a client config that trusts every CA in roots (so a failed handshake is
// the server refusing us, not us refusing the server).
func mintedTLS(t *testing.T, name string, caPEM, caKeyPEM []byte, roots ...[]byte) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := tlsutil.GenerateCert(caPEM, caKeyPEM, name, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AppendCertsFromPEM(r)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, ClientCAs: pool,
		ServerName: tlsutil.ServerName, MinVersion: tls.VersionTLS13}
}

// rpcRefused reports whether a QUIC RPC call to addr with conf fails at
// TLS. A call that reaches the node gets an application error for the
// unknown method, which proves the handshake was accepted.
func rpcRefused(t *testing.T, conf *tls.Config, addr string) (bool, error) {
	t.Helper()
	tr := rpcClient(t, conf)
	defer tr.Close()
	return callRefused(tr, addr)
}

// rpcClient is a started transport with conf, closed at the test's end;
// its connections are pooled, so calls reuse the first handshake.
func rpcClient(t *testing.T, conf *tls.Config) *transport.Transport {
	t.Helper()
	tc := transport.DefaultConfig()
	tc.BindAddr = "127.0.0.1:0"
	tc.TLS = conf
	tr, err := transport.New(tc, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// callRefused is rpcRefused's call on tr's (pooled) connection to addr.
func callRefused(tr *transport.Transport, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tr.Call(ctx, addr, "meshgw.test/no-such-method", nil)
	if err == nil {
		return false, errors.New("an unknown method answered")
	}
	return tlsFailure(err), err
}

// raftRefused reports whether the Raft listener at addr refuses conf's
// client certificate. TLS 1.3 servers check the client certificate after
// the client's handshake is done, so the refusal arrives on the first read;
// an accepted connection just stays silent until the read deadline.
func raftRefused(conf *tls.Config, addr string) (bool, error) {
	c := conf.Clone()
	host, _, _ := net.SplitHostPort(addr)
	c.ServerName = host // dragonboat's clients verify the Raft IP
	d := &net.Dialer{Timeout: 3 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, c)
	if err != nil {
		return tlsFailure(err), err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, nil
	}
	return err != nil && tlsFailure(err), err
}

func tlsFailure(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "tls") || strings.Contains(s, "certificate") || strings.Contains(s, "crypto_error")
}

// keyringStep runs one `meshgw keyring` step as the README says and checks
// that every live node answered.
func keyringStep(t *testing.T, addr string, nodes int, step ...string) {
	t.Helper()
	out, stderr, code := CLI(t, append([]string{"keyring", "-http-addr", addr, "-format", "json"}, step...)...)
	var r struct {
		NumResp int `json:"num_resp"`
		NumErr  int `json:"num_err"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.NumErr != 0 || r.NumResp != nodes {
		t.Fatalf("keyring %v: code %d: %s %s", step, code, out, stderr)
	}
}

// Issue 11 item 4: a rotation done as the README says rotates the node TLS
// derived from the gossip key. A node that only knows the new key joins,
// is trusted and runs services; the removed key is useless: gossip refuses
// a node holding it, and a certificate minted from its derived CA is
// refused by the RPC layer at once (a connection it made before is
// closed) and by Raft after the rolling restart the README asks for.
func TestKeyRotationRotatesNodeTLS(t *testing.T) {
	k1, k2 := keygen(t), keygen(t)
	c := StartCluster(t, 3, Options{Extra: func(int) []string { return []string{"-encrypt", k1} }})
	WaitLeader(t, c.Nodes, "default")
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))

	ca1, ca1Key := attackerCA(t, k1)
	ca2, ca2Key := attackerCA(t, k2)
	intruder := mintedTLS(t, "intruder", ca1, ca1Key, ca1, ca2)
	if refused, err := rpcRefused(t, intruder, c.Nodes[0].RPC); refused {
		t.Fatalf("before the rotation a K1 certificate must be accepted (control): %v", err)
	}
	// A connection made while K1 is trusted, kept open across the rotation.
	held := rpcClient(t, intruder)
	if refused, err := callRefused(held, c.Nodes[1].RPC); refused {
		t.Fatalf("before the rotation a K1 certificate must be accepted (control): %v", err)
	}

	addr := c.Nodes[0].HTTP
	keyringStep(t, addr, 3, "-install", k2)
	keyringStep(t, addr, 3, "-use", k2)
	keyringStep(t, addr, 3, "-remove", k1)

	// The node closes that connection within a keyring poll or so, without
	// a restart: the next call has to handshake again, and is refused.
	removed := time.Now()
	for {
		refused, err := callRefused(held, c.Nodes[1].RPC)
		if refused {
			t.Logf("the connection made under K1 was refused %s after -remove", time.Since(removed).Round(time.Millisecond))
			break
		}
		if time.Since(removed) > 5*time.Second {
			t.Fatalf("a connection made under the removed key is still served 5s after -remove: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A fresh node with only the new key, the only node runs may go to.
	fresh := NewNode(t, "fresh", "-gossip-profile", "local", "-encrypt", k2, "-join", c.Nodes[0].Gossip,
		"-bootstrap-expect", "0", "-tag", "zone=fresh")
	fresh.Start()
	all := append(append([]*Node{}, c.Nodes...), fresh)
	want := allStatus(c, "alive")
	want["fresh"] = "alive"
	WaitMembers(t, 30*time.Second, all, want)

	putService(t, c.Nodes[1], map[string]any{"name": "pinned", "type": "exec", "command": []string{"cat"},
		"runner_tags": map[string]string{"zone": "fresh"}})
	runOnFresh := func(round string) {
		t.Helper()
		for i, n := range all {
			var r runResult
			body := map[string]any{"round": round, "i": i}
			if _, err := n.Do("POST", "/v1/services/pinned/run", body, &r); err != nil {
				t.Fatalf("%s: run via %s: %v", round, n.Name, err)
			}
			if r.Status != "succeeded" || r.Runner != "fresh" {
				t.Fatalf("%s: run via %s: %+v", round, n.Name, r)
			}
		}
	}
	runOnFresh("after rotation")

	// A node holding only the removed key cannot join, so it is never a runner.
	old := NewNode(t, "old", "-gossip-profile", "local", "-encrypt", k1, "-join", c.Nodes[0].Gossip,
		"-bootstrap-expect", "0", "-tag", "zone=fresh")
	old.Start()
	if err := old.Wait(30 * time.Second); err == nil {
		t.Fatal("a node holding only the removed key joined")
	}

	// The removed key cannot mint a node certificate the RPC layer accepts;
	// the new one can (control).
	for _, n := range all {
		if refused, err := rpcRefused(t, intruder, n.RPC); !refused {
			t.Errorf("%s accepted an RPC certificate minted from the removed key's CA (err %v)", n.Name, err)
		}
	}
	member := mintedTLS(t, "member", ca2, ca2Key, ca1, ca2)
	if refused, err := rpcRefused(t, member, c.Nodes[0].RPC); refused {
		t.Fatalf("a certificate of the new key's CA is refused: %v", err)
	}

	// Documented limit: dragonboat's listener keeps the CAs it loaded at
	// start until the agent restarts (logged, not asserted).
	refused, err := raftRefused(intruder, c.Nodes[0].Raft)
	t.Logf("before the restart, n1's Raft listener refuses the removed key's certificate: %v (%v)", refused, err)

	// The rolling restart the README asks for after -remove: Raft's
	// listener then drops the removed key's CA too, and the group and the
	// runs keep working across nodes restarted and not yet restarted.
	for _, n := range c.Nodes {
		n.Restart()
		WaitHealthy(t, 30*time.Second, n)
		WaitMembers(t, 30*time.Second, all, want)
		WaitLeader(t, c.Nodes, "default")
		putService(t, n, map[string]any{"name": "w-" + n.Name, "type": "exec", "command": []string{"true"}})
	}
	runOnFresh("after the rolling restart")
	for _, n := range c.Nodes {
		if refused, err := raftRefused(intruder, n.Raft); !refused {
			t.Errorf("%s's Raft listener accepted a certificate minted from the removed key's CA (err %v)", n.Name, err)
		}
		if refused, err := raftRefused(member, n.Raft); refused {
			t.Errorf("%s's Raft listener refused a certificate of the new key's CA: %v", n.Name, err)
		}
	}
}
