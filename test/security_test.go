package test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func keygen(t *testing.T) string {
	out, stderr, code := CLI(t, "keygen")
	if code != 0 {
		t.Fatal(stderr)
	}
	return strings.TrimSpace(out)
}

// A wrong or missing gossip key cannot join; keys rotate across the live
// mesh and a node holding only the retired key is refused afterwards.
func TestGossipEncryptionAndKeyRotation(t *testing.T) {
	k1, k2 := keygen(t), keygen(t)
	c := StartCluster(t, 3, Options{Extra: func(int) []string { return []string{"-encrypt", k1} }})
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))

	wrong := NewNode(t, "wrong", "-gossip-profile", "local", "-encrypt", keygen(t), "-join", c.Nodes[0].Gossip, "-bootstrap-expect", "0")
	wrong.Start()
	if err := wrong.Wait(30 * time.Second); err == nil {
		t.Fatal("a node with the wrong key started and joined")
	}
	if !wrong.logHas("key") {
		t.Error("the refused node's log does not say the key is the problem")
	}

	addr := c.Nodes[0].HTTP
	for _, step := range [][]string{{"-install", k2}, {"-use", k2}, {"-remove", k1}} {
		out, stderr, code := CLI(t, append([]string{"keyring", "-http-addr", addr, "-format", "json"}, step...)...)
		if code != 0 {
			t.Fatalf("keyring %v: %s %s", step, out, stderr)
		}
		var r struct {
			NumResp int `json:"num_resp"`
			NumErr  int `json:"num_err"`
		}
		if json.Unmarshal([]byte(out), &r) != nil || r.NumErr != 0 || r.NumResp != 3 {
			t.Fatalf("keyring %v: not every node answered: %s", step, out)
		}
	}
	out, _, code := CLI(t, "keyring", "-list", "-http-addr", c.Nodes[1].HTTP, "-format", "json")
	var list struct {
		Keys map[string]int `json:"keys"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || list.Keys[k2] != 3 || len(list.Keys) != 1 {
		t.Fatalf("after rotation: %s", out)
	}
	WaitMembers(t, 10*time.Second, c.Nodes, allStatus(c, "alive"))
	// A restart keeps the rotated key (the keyring file in the data dir).
	c.Nodes[2].Restart()
	WaitMembers(t, 30*time.Second, c.Nodes[:2], map[string]string{"n3": "alive"})

	old := NewNode(t, "old", "-gossip-profile", "local", "-encrypt", k1, "-join", c.Nodes[0].Gossip, "-bootstrap-expect", "0")
	old.Start()
	if err := old.Wait(30 * time.Second); err == nil {
		t.Fatal("a node holding only the removed key joined")
	}
}

// With -acl: every call but health needs a token; policies are enforced;
// a revoked token is refused on every node at once.
func TestACLTokens(t *testing.T) {
	dp := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // node 1's data-plane listener
	c := StartCluster(t, 3, Options{Extra: func(i int) []string {
		if i == 1 {
			return []string{"-acl", "-proxy", dp}
		}
		return []string{"-acl"}
	}})
	WaitHealthy(t, 30*time.Second, c.Nodes...)
	for _, path := range []string{"/v1/members", "/v1/services", "/v1/status", "/metrics", "/v1/executions", "/svc/web/x"} {
		if code, _ := c.Nodes[1].Do("GET", path, nil, nil); code != 401 {
			t.Errorf("%s without a token: %d, want 401", path, code)
		}
	}
	// The data plane is the same API handler: the same token checks.
	if resp, err := http.Get("http://" + dp + "/svc/web/x"); err != nil || resp.StatusCode != 401 {
		t.Errorf("data plane without a token: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := c.Nodes[1].Do("GET", "/v1/health", nil, nil); err != nil {
		t.Errorf("health must stay open: %v", err)
	}
	var out string
	Eventually(t, 60*time.Second, func() error { // 503 until the Raft group exists
		o, stderr, code := CLI(t, "acl", "bootstrap", "-http-addr", c.Nodes[0].HTTP, "-format", "json")
		if code != 0 {
			return fmt.Errorf("bootstrap: %s %s", o, stderr)
		}
		out = o
		return nil
	})
	var boot struct {
		Secret string `json:"secret_id"`
	}
	json.Unmarshal([]byte(out), &boot)
	if _, _, code := CLI(t, "acl", "bootstrap", "-http-addr", c.Nodes[1].HTTP); code == 0 {
		t.Error("a second bootstrap succeeded")
	}
	mgmt := boot.Secret
	out, stderr, code := CLI(t, "acl", "token", "create", "-http-addr", c.Nodes[1].HTTP, "-token", mgmt, "-policy", "run:ok-*", "-policy", "read")
	if code != 0 {
		t.Fatalf("create: %s %s", out, stderr)
	}
	var runTok struct {
		Accessor string `json:"accessor_id"`
		Secret   string `json:"secret_id"`
	}
	json.Unmarshal([]byte(out), &runTok)

	auth := func(n *Node, secret, method, path string, body string) int {
		req, _ := http.NewRequest(method, "http://"+n.HTTP+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	def := `{"name":"ok-echo","type":"exec","command":["echo","hi"]}`
	if code := auth(c.Nodes[2], runTok.Secret, "PUT", "/v1/services/ok-echo", def); code != 403 {
		t.Errorf("run-only token writing a service: %d, want 403", code)
	}
	if code := auth(c.Nodes[2], mgmt, "PUT", "/v1/services/ok-echo", def); code != 200 {
		t.Fatalf("management token writing a service: %d", code)
	}
	if code := auth(c.Nodes[0], runTok.Secret, "POST", "/v1/services/ok-echo/run", "{}"); code != 200 {
		t.Errorf("run-only token running a matching service: %d", code)
	}
	if code := auth(c.Nodes[0], runTok.Secret, "GET", "/v1/services/ok-echo", ""); code != 200 {
		t.Errorf("read policy: %d", code)
	}
	// login stores the token (mode 0600) for later commands.
	tokFile := filepath.Join(t.TempDir(), "token")
	t.Setenv("MESHGW_TOKEN_FILE", tokFile)
	if out, stderr, code := CLI(t, "login", "-http-addr", c.Nodes[0].HTTP, "-token", runTok.Secret); code != 0 {
		t.Fatalf("login: %s %s", out, stderr)
	}
	if st, err := os.Stat(tokFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", st, err)
	}
	if out, _, code := CLI(t, "services", "list", "-http-addr", c.Nodes[1].HTTP); code != 0 || !strings.Contains(out, "ok-echo") {
		t.Fatalf("client with the saved token: %d %s", code, out)
	}
	if _, stderr, code := CLI(t, "acl", "token", "revoke", runTok.Accessor, "-http-addr", c.Nodes[0].HTTP, "-token", mgmt); code != 0 {
		t.Fatalf("revoke: %s", stderr)
	}
	// Nodes cache a token's answer for up to a second (node/freshcache.go):
	// the revoking node refuses it at once, every node within a second.
	revoked := time.Now()
	if code := auth(c.Nodes[0], runTok.Secret, "GET", "/v1/services", ""); code != 401 {
		t.Errorf("revoked token on the revoking node: %d, want 401", code)
	}
	// The bound is on when a request is sent, not when its answer comes
	// back (on a loaded machine a read may take longer than the bound):
	// a request sent over a second after the revocation must be refused.
	for _, n := range c.Nodes {
		for {
			sent := time.Now()
			code := auth(n, runTok.Secret, "GET", "/v1/services", "")
			if code == 401 {
				break
			}
			if late := sent.Sub(revoked); late > time.Second {
				t.Fatalf("revoked token on %s: %d for a request sent %s after the revocation, want 401",
					n.Name, code, late.Round(time.Millisecond))
			}
		}
	}
}

// authCode sends one request to n with secret as its Bearer token ("" for
// none) and returns the status.
func authCode(t *testing.T, n *Node, secret, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTP+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// bootstrapACL bootstraps n's cluster's ACLs (retrying while its group
// forms) and returns the management secret.
func bootstrapACL(t *testing.T, n *Node) string {
	t.Helper()
	var boot struct {
		Secret string `json:"secret_id"`
	}
	Eventually(t, 60*time.Second, func() error {
		o, stderr, code := CLI(t, "acl", "bootstrap", "-http-addr", n.HTTP, "-format", "json")
		if code != 0 {
			return fmt.Errorf("bootstrap on %s: %s %s", n.Name, o, stderr)
		}
		return json.Unmarshal([]byte(o), &boot)
	})
	return boot.Secret
}

// A token belongs to its cluster: red's token is refused on blue through
// any node, blue's works on blue through a node of red (but mints blue
// tokens only through blue), and a node of red started without -acl opens
// neither blue nor, once red's state says its ACLs are on, red.
func TestTokenBelongsToItsCluster(t *testing.T) {
	c := StartCluster(t, 2, Options{Cluster: "red", Extra: func(i int) []string {
		if i == 0 {
			return []string{"-acl"}
		}
		return nil
	}})
	redACL, redOpen := c.Nodes[0], c.Nodes[1]
	blue := c.NewNode(t, "b1", "-cluster", "blue", "-bootstrap-expect", "1", "-gossip-profile", "local",
		"-join", c.Nodes[0].Gossip, "-acl")
	blue.Start()
	WaitHealthy(t, 30*time.Second, blue)
	redTok, blueTok := bootstrapACL(t, redACL), bootstrapACL(t, blue)

	def := `{"name":"echo","type":"exec","command":["echo","hi"]}`
	if code := authCode(t, blue, blueTok, "PUT", "/v1/services/echo", def); code != 200 {
		t.Fatalf("blue's token writing on blue: %d", code)
	}
	calls := [][3]string{
		{"GET", "/v1/services?cluster=blue", ""},
		{"PUT", "/v1/services/red-made?cluster=blue", strings.Replace(def, "echo", "red-made", 1)},
		{"POST", "/v1/services/echo/run?cluster=blue", "{}"},
		{"GET", "/v1/executions?cluster=blue", ""},
	}
	for _, n := range []*Node{redACL, redOpen, blue} {
		for _, call := range calls {
			if code := authCode(t, n, redTok, call[0], call[1], call[2]); code != 401 && code != 403 {
				t.Errorf("red's token on blue via %s: %s %s: %d, want 401", n.Name, call[0], call[1], code)
			}
			if code := authCode(t, n, "", call[0], call[1], call[2]); code != 401 {
				t.Errorf("no token on blue via %s: %s %s: %d, want 401", n.Name, call[0], call[1], code)
			}
		}
	}
	for _, n := range []*Node{redACL, redOpen} {
		if code := authCode(t, n, blueTok, "POST", "/v1/services/echo/run?cluster=blue", "{}"); code != 200 {
			t.Errorf("blue's token running on blue via %s: %d, want 200", n.Name, code)
		}
		if code := authCode(t, n, blueTok, "GET", "/v1/services", ""); code != 401 {
			t.Errorf("blue's token on red via %s: %d, want 401", n.Name, code)
		}
	}
	// blue's tokens are minted only through a node of blue: blue's replica
	// refuses ACL writes forwarded by a node of red (issue 11 item 8).
	mint := `{"policies":["manage"]}`
	for _, n := range []*Node{redACL, redOpen} {
		if code := authCode(t, n, blueTok, "POST", "/v1/acl/tokens?cluster=blue", mint); code != 403 {
			t.Errorf("blue's manage token minting a blue token via %s: %d, want 403", n.Name, code)
		}
	}
	if code := authCode(t, blue, blueTok, "POST", "/v1/acl/tokens", mint); code != 200 {
		t.Errorf("blue's manage token minting a blue token via blue: %d, want 200", code)
	}
	if code := authCode(t, blue, blueTok, "GET", "/v1/services/red-made", ""); code != 404 {
		t.Errorf("a call refused on blue left a service behind: %d", code)
	}
	// redOpen runs no -acl, but red's state says its ACLs are on.
	Eventually(t, 10*time.Second, func() error {
		if code := authCode(t, redOpen, "", "GET", "/v1/services", ""); code != 401 {
			return fmt.Errorf("red's node without -acl, no token: %d, want 401", code)
		}
		return nil
	})
	if code := authCode(t, redOpen, redTok, "GET", "/v1/services", ""); code != 200 {
		t.Errorf("red's token on red's node without -acl: %d", code)
	}
}

// Garbage sent to every port leaves every node healthy and the state as it was.
func TestGarbageToEveryPort(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitLeader(t, c.Nodes, "default")
	if _, err := c.Nodes[0].Do("PUT", "/v1/services/keep", svcDef("keep"), nil); err != nil {
		t.Fatal(err)
	}
	var before []map[string]any
	c.Nodes[0].Do("GET", "/v1/services", nil, &before)
	junk := make([]byte, 4096)
	for round := 0; round < 20; round++ {
		rand.Read(junk)
		for _, n := range c.Nodes {
			for _, a := range []string{n.Gossip, n.RPC} {
				if u, err := net.Dial("udp", a); err == nil {
					u.Write(junk[:1+round*200])
					u.Close()
				}
			}
			for _, a := range []string{n.Gossip, n.Raft, n.HTTP} {
				if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
					conn.SetDeadline(time.Now().Add(time.Second))
					conn.Write(junk[:1+round*200])
					conn.Close()
				}
			}
		}
	}
	// Malformed HTTP too.
	for _, raw := range []string{"GET / HTTP/9.9\r\n\r\n", "POST /v1/services/x/run HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{", strings.Repeat("A", 100000)} {
		if conn, err := net.Dial("tcp", c.Nodes[1].HTTP); err == nil {
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			fmt.Fprint(conn, raw)
			conn.Close()
		}
	}
	WaitHealthy(t, 10*time.Second, c.Nodes...)
	WaitMembers(t, 10*time.Second, c.Nodes, allStatus(c, "alive"))
	for _, n := range c.Nodes {
		var after []map[string]any
		if _, err := n.Do("GET", "/v1/services", nil, &after); err != nil {
			t.Fatal(err)
		}
		if len(after) != len(before) {
			t.Errorf("%s: state changed: %d services, want %d", n.Name, len(after), len(before))
		}
		if !n.Running() {
			t.Errorf("%s died", n.Name)
		}
	}
	if _, err := c.Nodes[2].Do("PUT", "/v1/services/still", svcDef("still"), nil); err != nil {
		t.Errorf("writes after the garbage: %v", err)
	}
}

// The client API serves HTTPS when given a certificate.
func TestHTTPSClientAPI(t *testing.T) {
	dir := t.TempDir()
	CLI(t, "tls", "ca", "create", "-dir", dir)
	if _, stderr, code := CLI(t, "tls", "cert", "create", "-dir", dir, "-node", "api"); code != 0 {
		t.Fatal(stderr)
	}
	dp := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // the data plane is served over HTTPS too
	n := NewNode(t, "secure", "-dev", "-http-cert-file", filepath.Join(dir, "api.pem"), "-http-key-file", filepath.Join(dir, "api-key.pem"), "-proxy", dp)
	n.Start()
	pem, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, addr := range []string{n.HTTP, dp} {
		Eventually(t, 20*time.Second, func() error {
			resp, err := cl.Get("https://" + addr + "/v1/health")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		})
	}
	if resp, err := http.Get("http://" + dp + "/v1/health"); err == nil && resp.StatusCode == 200 {
		t.Error("the data plane answered plain HTTP while -http-cert-file is set")
	}
	if out, stderr, code := CLI(t, "members", "-http-addr", "https://"+n.HTTP, "-http-ca-file", filepath.Join(dir, "ca.pem")); code != 0 || !strings.Contains(out, "secure") {
		t.Fatalf("CLI over https: %d %s %s", code, out, stderr)
	}
}

// A node whose TLS its peers refuse (a foreign CA) gossips as alive, but
// is never a bootstrap candidate, runner or forwarding target; members and
// runners show it refused, and its own log says why. It is the seed and
// has the smallest name, so the old code picked it as the group's first
// voter and the group never formed.
func TestForeignCANodeIsNeverChosen(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := CLI(t, "tls", "ca", "create", "-dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	if _, stderr, code := CLI(t, "tls", "cert", "create", "-dir", dir, "-node", "a-foreign"); code != 0 {
		t.Fatal(stderr)
	}
	x := NewNode(t, "a-foreign", "-bootstrap-expect", "1", "-gossip-profile", "local",
		"-ca-file", filepath.Join(dir, "ca.pem"), "-cert-file", filepath.Join(dir, "a-foreign.pem"),
		"-key-file", filepath.Join(dir, "a-foreign-key.pem"))
	x.Start()
	WaitHealthy(t, 20*time.Second, x)
	c := StartCluster(t, 2, Options{BootstrapExpect: 1, Extra: func(int) []string { return []string{"-join", x.Gossip} }})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	start := time.Now()
	Eventually(t, 30*time.Second, func() error {
		g, err := n1.Group("default")
		if err != nil || g.Leader == "" {
			return fmt.Errorf("no group on n1: %v %+v", err, g)
		}
		return nil
	})
	t.Logf("group formed on n1 %s after the cluster started", time.Since(start).Round(time.Millisecond))
	Eventually(t, 20*time.Second, func() error {
		_, err := n2.Do("PUT", "/v1/services/echo", svcDef("echo"), nil)
		return err
	})
	for _, path := range []string{"/v1/members", "/v1/runners"} {
		var ms []struct {
			Name    string `json:"name"`
			Status  string `json:"status"`
			Refused string `json:"refused"`
		}
		if _, err := n2.Do("GET", path, nil, &ms); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range ms {
			if m.Name == x.Name {
				found = true
				if m.Refused == "" {
					t.Errorf("%s: %s shown as %q, not refused", path, m.Name, m.Status)
				}
			} else if m.Refused != "" {
				t.Errorf("%s: %s refused: %s", path, m.Name, m.Refused)
			}
		}
		if !found {
			t.Errorf("%s does not list %s", path, x.Name)
		}
	}
	failed := 0
	for i := 0; i < 30; i++ {
		var res struct {
			Runner string `json:"runner"`
			Status string `json:"status"`
		}
		if _, err := c.Nodes[i%2].Do("POST", "/v1/services/echo/run", map[string]any{}, &res); err != nil || res.Status != "succeeded" {
			failed++
			t.Logf("run %d: %v %+v", i, err, res)
		} else if res.Runner == x.Name {
			t.Errorf("run %d ran on the refused node", i)
		}
	}
	if failed > 0 {
		t.Errorf("%d of 30 runs failed", failed)
	}
	Eventually(t, 15*time.Second, func() error {
		if !x.logHas("every peer refuses TLS with this node") {
			return errors.New("the refused node's log does not say that its peers refuse its TLS")
		}
		if !n1.logHas("TLS with this peer is refused") {
			return errors.New("n1's log does not name the refused peer")
		}
		return nil
	})
}
