package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
)

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a loopback port free on TCP and UDP.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err == nil {
			u.Close()
			// Never hand one port to two listeners of this process: the
			// kernel may give a just-closed port out again.
			portsMu.Lock()
			taken := portsGiven[p]
			portsGiven[p] = true
			portsMu.Unlock()
			if !taken {
				return p
			}
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
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

// testConfig is a loopback agent config with fast timers.
func testConfig(t testing.TB, name string, mod func(*config.Runtime)) config.Runtime {
	cfg := config.Default()
	cfg.NodeName = name
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	cfg.BindAddr, cfg.RPCAddr, cfg.RaftAddr, cfg.HTTPAddr = addr(), addr(), addr(), addr()
	cfg.DataDir = t.TempDir()
	cfg.GossipProfile = "local"
	cfg.BootstrapExpect = 3
	cfg.AutopilotDeadAfter = 2 * time.Second
	cfg.LeaveTimeout = 2 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

func startAgent(t testing.TB, cfg config.Runtime) *Agent {
	t.Helper()
	log := zerolog.Nop()
	if os.Getenv("MESHGW_TEST_LOG") != "" {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, NoColor: true}).Level(zerolog.InfoLevel).With().Timestamp().Str("node", cfg.NodeName).Logger()
	}
	a, err := New(cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		a.Shutdown()
		t.Fatal(err)
	}
	t.Cleanup(a.Shutdown)
	return a
}

func getJSON(addr, path string, v any) (int, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if v != nil {
		if err := json.Unmarshal(buf.Bytes(), v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: %w", buf.String(), err)
		}
	}
	return resp.StatusCode, nil
}

func memberStatus(addr string) (map[string]string, error) {
	var ms []httpapi.Member
	if _, err := getJSON(addr, "/v1/members", &ms); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range ms {
		out[m.Name] = m.Status
	}
	return out, nil
}

func TestMeshOfThreeAgents(t *testing.T) {
	a1 := startAgent(t, testConfig(t, "a1", nil))
	join := []string{a1.cfg.BindAddr}
	a2 := startAgent(t, testConfig(t, "a2", func(c *config.Runtime) { c.Join = join }))
	a3 := startAgent(t, testConfig(t, "a3", func(c *config.Runtime) { c.Join = join; c.Roles = []string{"gateway"} }))
	want := func(addr string, exp map[string]string) func() error {
		return func() error {
			got, err := memberStatus(addr)
			if err != nil {
				return err
			}
			for k, v := range exp {
				if got[k] != v {
					return fmt.Errorf("%s sees %v, want %v", addr, got, exp)
				}
			}
			return nil
		}
	}
	all := map[string]string{"a1": "alive", "a2": "alive", "a3": "alive"}
	for _, a := range []*Agent{a1, a2, a3} {
		eventually(t, 10*time.Second, want(a.HTTPAddr(), all))
	}
	var runners []httpapi.Member
	if code, err := getJSON(a1.HTTPAddr(), "/v1/runners", &runners); err != nil || code != 200 || len(runners) != 2 {
		t.Fatalf("runners: %d %v %+v", code, err, runners)
	}
	if code, _ := getJSON(a1.HTTPAddr(), "/v1/members?status=bogus", nil); code != 400 {
		t.Fatalf("bad filter: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, want(a1.HTTPAddr(), map[string]string{"a3": "left"}))
	a2.Shutdown() // like kill -9: no leave
	eventually(t, 15*time.Second, want(a1.HTTPAddr(), map[string]string{"a2": "failed"}))
}

func TestPortInUseNamesTheAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := testConfig(t, "busy", func(c *config.Runtime) { c.HTTPAddr = l.Addr().String() })
	a, err := New(cfg, "test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	err = a.Start(context.Background())
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(l.Addr().String())) {
		t.Fatalf("want an error naming %s, got %v", l.Addr(), err)
	}
}

// TestTLSPolicy: outside -dev, a node reachable off its host must have a
// cluster secret for node-to-node TLS; the built-in CA is only for
// loopback-only nodes or an explicit -require-tls-ca=false.
func TestTLSPolicy(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	loop := []string{"-bind", "127.0.0.1:1", "-rpc", "127.0.0.1:2", "-raft", "localhost:3"}
	wild := []string{"-bind", "0.0.0.0:1", "-rpc", "127.0.0.1:2", "-raft", "127.0.0.1:3"}
	cases := []struct {
		name string
		args []string
		want tlsMode // "" = refused
	}{
		{"loopback, nothing given", loop, tlsBuiltin},
		{"loopback, required explicitly", append(loop, "-require-tls-ca"), ""},
		{"reachable, nothing given", wild, ""},
		{"reachable, rpc on all interfaces", []string{"-bind", "127.0.0.1:1", "-rpc", ":2", "-raft", "127.0.0.1:3"}, ""},
		{"reachable, opted out", append(wild, "-require-tls-ca=false"), tlsBuiltin},
		{"reachable, gossip key", append(wild, "-encrypt", key), tlsDerived},
		{"dev", []string{"-dev"}, tlsDev},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-node", "n1", "-data-dir", t.TempDir()}, c.args...)
			cfg, err := config.NewBuilder(args).Build()
			if err != nil {
				t.Fatal(err)
			}
			var keys [][]byte // what gossip's keyring holds for this config
			if cfg.Encrypt != "" {
				k, _ := base64.StdEncoding.DecodeString(cfg.Encrypt)
				keys = [][]byte{k}
			}
			m, _, err := resolveTLS(cfg, []string{"127.0.0.1"}, keys, zerolog.Nop())
			if c.want == "" {
				if err == nil || !strings.Contains(err.Error(), "-encrypt") {
					t.Fatalf("want a refusal naming -encrypt, got mode %q err %v", m.mode, err)
				}
				return
			}
			if err != nil || m.mode != c.want {
				t.Fatalf("want mode %q, got %q (err %v)", c.want, m.mode, err)
			}
		})
	}
}
