package node

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// filesTLS points cfg at a certificate for certName from the CA in dir.
func filesTLS(t *testing.T, dir, certName string) func(*config.Runtime) {
	return func(c *config.Runtime) {
		ca, cert, key, err := tlsutil.EnsureDevFiles(dir, certName)
		if err != nil {
			t.Fatal(err)
		}
		c.CAFile, c.CertFile, c.KeyFile = ca, cert, key
		c.BootstrapExpect = 1
	}
}

// A valid certificate of the mesh's CA for a name gossip does not know
// calls nothing: not even dispatch.exec, which would run its command.
func TestCertificateOfNoMemberCallsNothing(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, testConfig(t, "a1", filesTLS(t, dir, "a1")))
	ca, cert, key, err := tlsutil.EnsureDevFiles(dir, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.BindAddr, tcfg.TLS = "127.0.0.1:0", tc
	ghost, err := transport.New(tcfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := ghost.Start(); err != nil {
		t.Fatal(err)
	}
	defer ghost.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ghost.Stream(ctx, a.cfg.RPCAddr, dispatch.MethodExec)
	var got []string
	if err == nil {
		err = s.Send([]byte(`{"id":"x","attempt":1,"service":"s","command":["echo","pwned"],"timeout_ms":5000}`))
		for err == nil {
			var b []byte
			if b, err = s.Recv(); err == nil {
				got = append(got, string(b))
			}
		}
		s.Close()
	}
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != transport.CodeForbidden {
		t.Errorf("ghost's dispatch.exec: %v (frames %q), want %s", err, got, transport.CodeForbidden)
	}
	if strings.Contains(strings.Join(got, ""), "pwned") {
		t.Errorf("ghost's command ran: %q", got)
	}
}

// A node whose certificate names another node does not start: peers
// know a node by the name in its certificate.
func TestCertificateForAnotherNodeRefusedAtStart(t *testing.T) {
	cfg := testConfig(t, "a1", filesTLS(t, t.TempDir(), "n5"))
	a, err := New(cfg, "test", zerolog.Nop())
	if err == nil {
		a.Shutdown()
		t.Fatal("an agent named a1 started with a certificate for n5")
	}
	if !strings.Contains(err.Error(), `for node "n5", not this node "a1"`) {
		t.Fatalf("error does not say why: %v", err)
	}
}

// The gate lets live members in, refuses failed and unknown names, and
// finds a member that joined since its last look without waiting for
// the cache to expire.
func TestMemberGate(t *testing.T) {
	now := time.Unix(1000, 0)
	ms := []gossip.Member{{Name: "a", Status: gossip.StatusAlive}, {Name: "f", Status: gossip.StatusFailed}}
	g := newMemberGate(func() []gossip.Member { return ms })
	g.now = func() time.Time { return now }
	if err := g.authorize("a", "m"); err != nil {
		t.Fatalf("alive member: %v", err)
	}
	for _, name := range []string{"f", "nobody"} {
		if err := g.authorize(name, "m"); err == nil {
			t.Errorf("%s let in", name)
		}
	}
	ms = append(ms, gossip.Member{Name: "new", Status: gossip.StatusSuspect})
	now = now.Add(memberGateMiss)
	if err := g.authorize("new", "m"); err != nil {
		t.Fatalf("a member that just joined: %v", err)
	}
}
