package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// freePort returns a port free on both TCP and UDP of 127.0.0.1.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met within %s: %v", d, err)
}

type node struct {
	g   *Gossip
	cfg Config
}

func startNode(t testing.TB, name string, mod func(*Config)) *node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Profile = "local"
	cfg.RPCAddr = "127.0.0.1:1"
	if mod != nil {
		mod(&cfg)
	}
	g, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown() })
	return &node{g: g, cfg: cfg}
}

func statusOf(g *Gossip, name string) Status {
	for _, m := range g.Members(Filter{}) {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

func wantStatus(nodes []*node, name string, want Status) func() error {
	return func() error {
		for _, n := range nodes {
			if got := statusOf(n.g, name); got != want {
				return fmt.Errorf("%s sees %s as %q, want %q", n.cfg.NodeName, name, got, want)
			}
		}
		return nil
	}
}

func TestJoinFailLeaveAndFilters(t *testing.T) {
	seed := startNode(t, "n0", nil)
	nodes := []*node{seed}
	for i := 1; i < 5; i++ {
		i := i
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i), func(c *Config) {
			c.Join = []string{seed.cfg.BindAddr}
			if i%2 == 0 {
				c.Roles = []string{"gateway"}
				c.UserTags = map[string]string{"zone": "b"}
			}
		}))
	}
	eventually(t, 5*time.Second, func() error {
		for _, n := range nodes {
			if got := len(n.g.Members(Filter{Status: StatusAlive})); got != 5 {
				return fmt.Errorf("%s sees %d alive", n.cfg.NodeName, got)
			}
		}
		return nil
	})
	if got := len(seed.g.Members(Filter{Role: "runner"})); got != 3 {
		t.Errorf("runners = %d, want 3", got)
	}
	if got := seed.g.Members(Filter{Tags: map[string]string{"zone": "b"}}); len(got) != 2 || got[0].Tags["zone"] != "b" {
		t.Errorf("tag filter: %+v", got)
	}
	m := seed.g.Members(Filter{})[1]
	if m.Cluster != "default" || m.RPCAddr != "127.0.0.1:1" {
		t.Errorf("tags not decoded: %+v", m)
	}

	nodes[4].g.Shutdown() // like kill -9: no leave
	eventually(t, 10*time.Second, wantStatus(nodes[:4], "n4", StatusFailed))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[3].g.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	nodes[3].g.Shutdown()
	eventually(t, 10*time.Second, wantStatus(nodes[:3], "n3", StatusLeft))
}

func TestRetryJoinWaitsForSeed(t *testing.T) {
	seedPort := freePort(t)
	seedAddr := fmt.Sprintf("127.0.0.1:%d", seedPort)
	early := startNode(t, "early", func(c *Config) {
		c.RetryJoin = []string{seedAddr}
		c.RetryInterval = 50 * time.Millisecond
		c.RetryMaxInterval = 200 * time.Millisecond
	})
	seed := startNode(t, "seed", func(c *Config) { c.BindAddr = seedAddr })
	eventually(t, 10*time.Second, wantStatus([]*node{early, seed}, "early", StatusAlive))
	eventually(t, 10*time.Second, wantStatus([]*node{early, seed}, "seed", StatusAlive))
}

func TestRestartWithSameNameIsAliveAgain(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) {
		c.Join = []string{a.cfg.BindAddr}
		c.SnapshotPath = dir + "/serf.snap"
	})
	eventually(t, 5*time.Second, wantStatus([]*node{a}, "b", StatusAlive))
	b.g.Shutdown()
	eventually(t, 10*time.Second, wantStatus([]*node{a}, "b", StatusFailed))
	// Restart from the snapshot only: no -join given.
	b2 := startNode(t, "b", func(c *Config) {
		c.BindAddr = b.cfg.BindAddr
		c.SnapshotPath = dir + "/serf.snap"
	})
	eventually(t, 10*time.Second, wantStatus([]*node{a, b2}, "b", StatusAlive))
	eventually(t, 10*time.Second, wantStatus([]*node{b2}, "a", StatusAlive))
}

func TestEncryptionKeysAndRotation(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	key1, _ := DecodeKey(k1)
	dir := t.TempDir()
	enc := func(name string) func(*Config) {
		return func(c *Config) { c.EncryptKey = key1; c.KeyringFile = dir + "/" + name + ".keyring" }
	}
	a := startNode(t, "a", enc("a"))
	nodes := []*node{a}
	for _, n := range []string{"b", "c"} {
		f := enc(n)
		nodes = append(nodes, startNode(t, n, func(c *Config) { f(c); c.Join = []string{a.cfg.BindAddr} }))
	}
	eventually(t, 5*time.Second, func() error {
		if n := len(a.g.Members(Filter{Status: StatusAlive})); n != 3 {
			return fmt.Errorf("%d alive", n)
		}
		return nil
	})
	// A node without the key cannot join.
	plain := DefaultConfig()
	plain.NodeName, plain.Profile = "plain", "local"
	plain.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	plain.Join = []string{a.cfg.BindAddr}
	g, err := New(plain, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err == nil {
		t.Error("a node without the key joined an encrypted mesh")
	}
	g.Shutdown()

	for _, step := range []func() (KeyResponse, error){
		func() (KeyResponse, error) { return a.g.InstallKey(k2) },
		func() (KeyResponse, error) { return a.g.UseKey(k2) },
		func() (KeyResponse, error) { return a.g.RemoveKey(k1) },
	} {
		r, err := step()
		if err != nil || r.NumErr != 0 || r.NumResp != 3 {
			t.Fatalf("key rotation step: %+v %v", r, err)
		}
	}
	r, err := nodes[1].g.ListKeys()
	if err != nil || len(r.Keys) != 1 || r.Keys[k2] != 3 {
		t.Fatalf("after rotation: %+v %v", r, err)
	}
	// A node holding only the old key is refused now.
	old := startNodeErr(t, "old", func(c *Config) { c.EncryptKey = key1; c.Join = []string{a.cfg.BindAddr} })
	if old == nil {
		t.Error("a node with only the removed key joined")
	}
}

func startNodeErr(t *testing.T, name string, mod func(*Config)) error {
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Profile = name, "local"
	cfg.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mod(&cfg)
	g, err := New(cfg, zerolog.Nop())
	if err != nil {
		return err
	}
	defer g.Shutdown()
	return g.Start(context.Background())
}

func TestValidateAndTags(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err == nil {
		t.Error("missing NodeName accepted")
	}
	c.NodeName = "x"
	c.UserTags = map[string]string{"big": string(make([]byte, 600))}
	if err := c.Validate(); err == nil {
		t.Error("oversize tags accepted")
	}
	c.UserTags = map[string]string{"zone": "a"}
	c.Profile = "fast"
	if err := c.Validate(); err == nil {
		t.Error("unknown profile accepted")
	}
	c.Profile = "lan"
	c.RPCAddr = "10.0.0.1:7947"
	var m Member
	decodeTags(c.tags(true), &m)
	if m.Cluster != "default" || m.RPCAddr != "10.0.0.1:7947" || m.Tags["zone"] != "a" || len(m.Roles) != 2 || !m.Hosting {
		t.Errorf("round trip: %+v", m)
	}
	if _, err := DecodeKey("short"); err == nil {
		t.Error("bad key accepted")
	}
}

// TestHostingTagReachesPeers: SetHosting before and after Start shows in
// the peers' Members, and clearing it does too.
func TestHostingTagReachesPeers(t *testing.T) {
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	hosting := func(want bool) func() error {
		return func() error {
			for _, m := range b.g.Members(Filter{}) {
				if m.Name == "a" && m.Hosting != want {
					return fmt.Errorf("b sees a hosting=%v", m.Hosting)
				}
			}
			return nil
		}
	}
	eventually(t, 5*time.Second, wantStatus([]*node{a, b}, "a", StatusAlive))
	if err := a.g.SetHosting(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, hosting(true))
	if !a.g.Local().Hosting {
		t.Error("a's own member has no hosting tag")
	}
	if err := a.g.SetHosting(false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, hosting(false))

	// Set before Start: announced from the first join.
	c := DefaultConfig()
	c.NodeName = "pre"
	c.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.Profile = "local"
	c.Join = []string{a.cfg.BindAddr}
	g, err := New(c, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetHosting(true); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Shutdown() })
	eventually(t, 5*time.Second, func() error {
		for _, m := range a.g.Members(Filter{}) {
			if m.Name == "pre" && m.Hosting {
				return nil
			}
		}
		return errors.New("a does not see pre hosting")
	})
}

func TestGarbageToGossipPort(t *testing.T) {
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	for i := 0; i < 50; i++ {
		if u, err := net.Dial("udp", a.cfg.BindAddr); err == nil {
			u.Write([]byte(fmt.Sprintf("garbage %d \x00\xff\x01", i)))
			u.Close()
		}
		if c, err := net.Dial("tcp", a.cfg.BindAddr); err == nil {
			c.Write([]byte("\xff\xfe garbage stream"))
			c.Close()
		}
	}
	eventually(t, 5*time.Second, wantStatus([]*node{a, b}, "a", StatusAlive))
	eventually(t, 5*time.Second, wantStatus([]*node{a, b}, "b", StatusAlive))
}

func TestWrongKeyCannotJoinAndSaysWhy(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	key1, _ := DecodeKey(k1)
	key2, _ := DecodeKey(k2)
	a := startNode(t, "a", func(c *Config) { c.EncryptKey = key1 })
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"wrongkey", key2}, {"nokey", nil}} {
		err := startNodeErr(t, tc.name, func(c *Config) { c.EncryptKey = tc.key; c.Join = []string{a.cfg.BindAddr} })
		if err == nil {
			t.Fatalf("%s joined an encrypted mesh", tc.name)
		}
		if !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("%s: not classified as a key mismatch: %v", tc.name, err)
		}
		if !strings.Contains(err.Error(), a.cfg.BindAddr) {
			t.Errorf("%s: error does not name the seed: %v", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	if n := len(a.g.Members(Filter{})); n != 1 {
		t.Errorf("encrypted node sees %d members, want only itself", n)
	}
}

func TestTagSizeLimitIsExact(t *testing.T) {
	c := DefaultConfig()
	c.NodeName = "x"
	c.UserTags = map[string]string{"k": ""}
	base := encodedSize(c.tags(true))
	// Grow the value to land exactly on the limit, then one byte over. Values
	// ≥ 32 bytes use a 2-byte msgpack str8 header, so probe around the limit.
	var at, over int
	for n := 0; n < 600; n++ {
		c.UserTags["k"] = strings.Repeat("v", n)
		switch s := encodedSize(c.tags(true)); {
		case s <= maxMeta:
			at = n
		case over == 0:
			over = n
		}
	}
	if base >= maxMeta || at == 0 || over != at+1 {
		t.Fatalf("base %d, largest fitting value %d, first too big %d", base, at, over)
	}
	c.UserTags["k"] = strings.Repeat("v", at)
	if err := c.Validate(); err != nil {
		t.Errorf("tags of exactly %d bytes refused: %v", encodedSize(c.tags(true)), err)
	}
	// serf itself must accept what Validate accepts.
	c.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.Profile = "local"
	g, err := New(c, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(context.Background()); err != nil {
		t.Fatalf("serf refused tags Validate accepted: %v", err)
	}
	// Validate counts the hosting tag: setting it later must fit too.
	if err := g.SetHosting(true); err != nil {
		t.Fatalf("serf refused the hosting tag on tags Validate accepted: %v", err)
	}
	g.Shutdown()
	c.UserTags["k"] = strings.Repeat("v", over)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tags") {
		t.Errorf("tags of %d bytes accepted: %v", encodedSize(c.tags(true)), err)
	}
}

func TestLibraryLogLevelsAndRateLimit(t *testing.T) {
	var buf strings.Builder
	l := newLibLogger(zerolog.New(&buf))
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	l.Printf("[INFO] serf: EventMemberJoin: a 127.0.0.1")
	l.Printf("[WARN] memberlist: Was able to connect to b over TCP but UDP probes failed")
	l.Printf("[ERR] memberlist: Failed to send ping: boom")
	for i := 0; i < 100; i++ {
		l.Printf("[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=127.0.0.1:9")
	}
	out := buf.String()
	for _, want := range []string{
		`{"level":"debug","message":"memberlist: Stream connection from=127.0.0.1:1"}`,
		`{"level":"debug","message":"serf: EventMemberJoin: a 127.0.0.1"}`,
		`{"level":"warn","message":"memberlist: Was able to connect`,
		`{"level":"error","message":"memberlist: Failed to send ping: boom"}`,
		`{"level":"warn","message":"memberlist: failed to receive: No installed keys`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if n := strings.Count(out, "failed to receive"); n > 10 {
		t.Errorf("%d receive warnings logged from 100 garbage packets; want rate-limited", n)
	}
}

func TestEventsDeliveredAndDroppedWhenFull(t *testing.T) {
	a := startNode(t, "a", func(c *Config) { c.EventBuffer = 1 })
	startNode(t, "b", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	startNode(t, "c", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	eventually(t, 5*time.Second, func() error {
		if a.g.Dropped() == 0 {
			return fmt.Errorf("no event dropped with a 1-slot buffer never drained")
		}
		return nil
	})
	ev := <-a.g.Events()
	if ev.Type != EventJoin || len(ev.Members) == 0 {
		t.Errorf("first event %+v, want a join", ev)
	}
}

func TestRestartOnNewAddressIsAliveAgain(t *testing.T) {
	a := startNode(t, "a", nil)
	b := startNode(t, "b", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	eventually(t, 5*time.Second, wantStatus([]*node{a}, "b", StatusAlive))
	b.g.Shutdown() // kill -9
	eventually(t, 10*time.Second, wantStatus([]*node{a}, "b", StatusFailed))
	b2 := startNode(t, "b", func(c *Config) { c.Join = []string{a.cfg.BindAddr} })
	if b2.cfg.BindAddr == b.cfg.BindAddr {
		t.Fatal("test needs a new address")
	}
	eventually(t, 10*time.Second, func() error {
		for _, m := range a.g.Members(Filter{}) {
			if m.Name == "b" && (m.Status != StatusAlive || m.Addr != b2.cfg.BindAddr) {
				return fmt.Errorf("a sees b as %s at %s, want alive at %s", m.Status, m.Addr, b2.cfg.BindAddr)
			}
		}
		return nil
	})
	eventually(t, 10*time.Second, wantStatus([]*node{b2}, "a", StatusAlive))
}
