package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

// bin is the meshgw binary under test, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test harness:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	if b := os.Getenv("MESHGW_BIN"); b != "" {
		bin = b
		return m.Run(), nil
	}
	dir, err := os.MkdirTemp("", "meshgw-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		return 0, err
	}
	bin = filepath.Join(dir, "meshgw")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/meshgw")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build meshgw: %v\n%s", err, out)
	}
	return m.Run(), nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// freePort returns a loopback port that is free on TCP and UDP.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

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
			// The kernel may hand a just-closed port out again: never give
			// one port to two listeners of this test process.
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

// Node is one agent process.
type Node struct {
	t       testing.TB
	Name    string
	Gossip  string // host:port
	RPC     string
	Raft    string
	HTTP    string
	DataDir string
	LogPath string
	Args    []string // extra flags, kept across restarts
	// Wrap, when set, runs the agent through a launcher (the partition
	// suite's `ip netns exec NS`), which must exec the binary in place so
	// signals reach the agent itself.
	Wrap    []string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	mu      sync.Mutex
}

// Options shape a cluster.
type Options struct {
	Profile         string               // gossip profile; "local" by default (the failure-detection tests pass "lan")
	BootstrapExpect int                  // default: min(cluster size, 3)
	Cluster         string               // -cluster; the agent's default when empty
	Roles           string               // -roles for every node; the agent's default (both) when empty
	Extra           func(i int) []string // extra flags for node i
}

// Cluster is a set of agents started by one test. Its nodes share one CA
// (CA) for node-to-node TLS unless their flags choose their own (-ca-file or
// -encrypt).
type Cluster struct {
	t     testing.TB
	Nodes []*Node
	CA    *CA
	opts  Options
}

// CA is a test certificate authority written to a temp dir; it issues one
// certificate per node name.
type CA struct {
	t               testing.TB
	Dir             string
	certPEM, keyPEM []byte
}

// NewCA creates a CA with transport/tlsutil in a fresh temp dir.
func NewCA(t testing.TB) *CA {
	t.Helper()
	certPEM, keyPEM, err := tlsutil.GenerateCA("meshgw test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, _, err := tlsutil.WriteCAFiles(dir, certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	return &CA{t: t, Dir: dir, certPEM: certPEM, keyPEM: keyPEM}
}

// Flags returns -ca-file/-cert-file/-key-file for node name, issuing its
// certificate on first use, valid for loopback and the extra IPs in ips
// (Raft's TLS checks the peer's IP).
func (ca *CA) Flags(name string, ips ...string) []string {
	ca.t.Helper()
	cert, key := tlsutil.CertFileNames(name)
	cert, key = filepath.Join(ca.Dir, cert), filepath.Join(ca.Dir, key)
	if _, err := os.Stat(cert); err != nil {
		certPEM, keyPEM, err := tlsutil.GenerateCert(ca.certPEM, ca.keyPEM, name, append([]string{"127.0.0.1", "localhost"}, ips...), 24*time.Hour)
		if err != nil {
			ca.t.Fatal(err)
		}
		if _, _, err := tlsutil.WriteCertFiles(ca.Dir, name, certPEM, keyPEM); err != nil {
			ca.t.Fatal(err)
		}
	}
	return []string{"-ca-file", filepath.Join(ca.Dir, tlsutil.CAFile), "-cert-file", cert, "-key-file", key}
}

// StartCluster starts n agents joined to the first one.
func StartCluster(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Profile == "" {
		opts.Profile = "local"
	}
	if opts.BootstrapExpect == 0 {
		opts.BootstrapExpect = min(n, 3)
	}
	c := &Cluster{t: t, CA: NewCA(t), opts: opts}
	for i := 0; i < n; i++ {
		c.Add(t, fmt.Sprintf("n%d", i+1), i)
		if i == 0 {
			// -join is fatal when the seed does not answer: let it listen first.
			WaitHealthy(t, 30*time.Second, c.Nodes[0])
		}
	}
	return c
}

// NewNode prepares (but does not start) an agent with fresh ports and its
// own data dir and log file. The test's cleanup kills whatever process the
// node runs then (also after Restart), and dumps the end of its log if the
// test failed.
func NewNode(t testing.TB, name string, args ...string) *Node {
	addr := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	dir := t.TempDir()
	n := &Node{t: t, Name: name, Gossip: addr(), RPC: addr(), Raft: addr(), HTTP: addr(),
		DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, name+".log"), Args: args}
	t.Cleanup(func() {
		n.mu.Lock()
		done := n.done
		n.mu.Unlock()
		if done != nil {
			n.signal(syscall.SIGCONT)
			n.signal(syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			n.dumpLog()
		}
	})
	return n
}

// NewNode prepares (but does not start) an agent that shares the cluster's
// CA, unless args choose their own node-to-node TLS.
func (c *Cluster) NewNode(t testing.TB, name string, args ...string) *Node {
	if !ownTLS(args) {
		args = append(args, c.CA.Flags(name)...)
	}
	return NewNode(t, name, args...)
}

func ownTLS(args []string) bool {
	for _, a := range args {
		switch strings.TrimLeft(a, "-") {
		case "ca-file", "encrypt":
			return true
		}
		if strings.HasPrefix(a, "-ca-file=") || strings.HasPrefix(a, "--ca-file=") ||
			strings.HasPrefix(a, "-encrypt=") || strings.HasPrefix(a, "--encrypt=") {
			return true
		}
	}
	return false
}

// Add starts one more agent joined to the cluster.
func (c *Cluster) Add(t testing.TB, name string, i int) *Node {
	n := c.NewNode(t, name, c.agentArgs(i)...)
	n.Start()
	c.Nodes = append(c.Nodes, n)
	return n
}

// agentArgs are the flags Add gives node i: the cluster's options, joined
// to the first node.
func (c *Cluster) agentArgs(i int) []string {
	args := []string{"-gossip-profile", c.opts.Profile, "-bootstrap-expect", fmt.Sprint(c.opts.BootstrapExpect),
		"-autopilot-dead-after", "3s"}
	if c.opts.Cluster != "" {
		args = append(args, "-cluster", c.opts.Cluster)
	}
	if c.opts.Roles != "" {
		args = append(args, "-roles", c.opts.Roles)
	}
	if len(c.Nodes) > 0 {
		args = append(args, "-join", c.Nodes[0].Gossip)
	}
	if c.opts.Extra != nil {
		args = append(args, c.opts.Extra(i)...)
	}
	return args
}

// Start launches the agent process; the test's cleanup kills it.
func (n *Node) Start() {
	n.t.Helper()
	if err := n.start(); err != nil {
		n.t.Fatal(err)
	}
}

func (n *Node) start() error {
	args := append([]string{"agent", "-node", n.Name, "-bind", n.Gossip, "-rpc", n.RPC, "-raft", n.Raft,
		"-http", n.HTTP, "-data-dir", n.DataDir, "-log-format", "json"}, n.Args...)
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	argv := append(append(append([]string{}, n.Wrap...), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr() // dies with the test binary, even on a -timeout panic
	cmd.Env = append(os.Environ(), "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=1")
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	n.mu.Lock()
	n.cmd, n.done, n.exitErr = cmd, make(chan struct{}), nil
	done := n.done
	n.mu.Unlock()
	go func() {
		err := cmd.Wait()
		f.Close()
		n.mu.Lock()
		n.exitErr = err
		n.mu.Unlock()
		close(done)
	}()
	return nil
}

func (n *Node) signal(s syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(s)
	}
}

// Running reports whether the process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL (no leave) and waits for the process to end.
func (n *Node) Kill() {
	n.signal(syscall.SIGKILL)
	n.Wait(10 * time.Second)
}

// Pause stops the process (SIGSTOP): it holds its sockets but answers nothing.
func (n *Node) Pause() { n.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (n *Node) Resume() { n.signal(syscall.SIGCONT) }

// Term sends SIGTERM and waits for a graceful exit; it returns the exit error.
func (n *Node) Term() error {
	n.signal(syscall.SIGTERM)
	return n.Wait(30 * time.Second)
}

// Wait waits for the process to end.
func (n *Node) Wait(d time.Duration) error {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done == nil {
		return nil // never started
	}
	select {
	case <-done:
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.exitErr
	case <-time.After(d):
		n.t.Fatalf("%s did not exit within %s", n.Name, d)
		return nil
	}
}

// Restart starts the node again with the same name, data dir and ports.
func (n *Node) Restart() {
	n.t.Helper()
	if n.Running() {
		n.Kill()
	}
	n.Start()
}

func (n *Node) dumpLog() {
	data, err := os.ReadFile(n.LogPath)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var keep []string
	for _, l := range lines {
		if !strings.Contains(l, `"level":"debug"`) && !strings.Contains(l, `"level":"trace"`) {
			keep = append(keep, l)
		}
	}
	if len(keep) > 100 {
		keep = keep[len(keep)-100:]
	}
	n.t.Logf("---- last log lines of %s (%s) ----\n%s", n.Name, n.LogPath, strings.Join(keep, "\n"))
}

// Do sends an HTTP request to the node's API; body may be nil.
func (n *Node) Do(method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		if b, ok := body.([]byte); ok {
			rd = bytes.NewReader(b)
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, "http://"+n.HTTP+path, rd)
	if err != nil {
		return 0, err
	}
	c := &http.Client{Timeout: 15 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s on %s: %d %s", method, path, n.Name, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w (%s)", path, err, data)
		}
	}
	return resp.StatusCode, nil
}

// GetJSON GETs path and decodes the answer into out; a non-2xx status is an
// error carrying the body.
func (n *Node) GetJSON(path string, out any) error {
	_, err := n.Do("GET", path, nil, out)
	return err
}

// PutJSON PUTs body as JSON to path and decodes the answer into out (nil:
// discard).
func (n *Node) PutJSON(path string, body, out any) error {
	_, err := n.Do("PUT", path, body, out)
	return err
}

// Member is the API's member JSON.
type Member struct {
	Name    string            `json:"name"`
	Addr    string            `json:"addr"`
	Status  string            `json:"status"`
	Cluster string            `json:"cluster"`
	Roles   []string          `json:"roles"`
	Tags    map[string]string `json:"tags"`
}

// Members returns name → status as n sees the mesh.
func (n *Node) Members() (map[string]string, error) {
	var ms []Member
	if _, err := n.Do("GET", "/v1/members", nil, &ms); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, m := range ms {
		out[m.Name] = m.Status
	}
	return out, nil
}

// Eventually polls f until it returns nil; at the deadline it fails the
// test with the last error.
func Eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitMembers waits until each of nodes sees every name in want with the
// wanted status.
func WaitMembers(t testing.TB, d time.Duration, nodes []*Node, want map[string]string) {
	t.Helper()
	Eventually(t, d, func() error {
		for _, n := range nodes {
			got, err := n.Members()
			if err != nil {
				return err
			}
			for name, st := range want {
				if got[name] != st {
					return fmt.Errorf("%s sees %s as %q, want %q (all: %v)", n.Name, name, got[name], st, got)
				}
			}
		}
		return nil
	})
}

// WaitHealthy waits until every node answers /v1/health.
func WaitHealthy(t testing.TB, d time.Duration, nodes ...*Node) {
	t.Helper()
	Eventually(t, d, func() error {
		for _, n := range nodes {
			if _, err := n.Do("GET", "/v1/health", nil, nil); err != nil {
				return err
			}
		}
		return nil
	})
}

// CLI runs the meshgw binary as a client and returns stdout, stderr, exit code.
func CLI(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// logHas reports whether the node's log contains s.
func (n *Node) logHas(s string) bool {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// Others returns the cluster's nodes except skip.
func (c *Cluster) Others(skip ...*Node) []*Node {
	var out []*Node
outer:
	for _, n := range c.Nodes {
		for _, s := range skip {
			if n == s {
				continue outer
			}
		}
		out = append(out, n)
	}
	return out
}

// GroupStatus is one Raft group as /v1/status reports it.
type GroupStatus struct {
	Cluster      string `json:"cluster"`
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	Local        bool   `json:"local"`
	Replicas     []struct {
		Node string `json:"node"`
	} `json:"replicas"`
}

// Group returns the node's view of cluster's Raft group from /v1/status.
func (n *Node) Group(cluster string) (GroupStatus, error) {
	var st struct {
		Groups []GroupStatus `json:"groups"`
	}
	if _, err := n.Do("GET", "/v1/status", nil, &st); err != nil {
		return GroupStatus{}, err
	}
	for _, g := range st.Groups {
		if g.Cluster == cluster {
			return g, nil
		}
	}
	return GroupStatus{}, fmt.Errorf("%s hosts no replica of %s", n.Name, cluster)
}

// WaitLeader waits until every node of nodes reports cluster's Raft group
// with the same leader, and returns the leader's name.
func WaitLeader(t testing.TB, nodes []*Node, cluster string) string {
	t.Helper()
	var leader string
	Eventually(t, 60*time.Second, func() error {
		leader = ""
		for _, n := range nodes {
			g, err := n.Group(cluster)
			if err != nil {
				return err
			}
			if g.Leader == "" || (leader != "" && g.Leader != leader) {
				return fmt.Errorf("%s sees leader %q", n.Name, g.Leader)
			}
			leader = g.Leader
		}
		return nil
	})
	return leader
}
