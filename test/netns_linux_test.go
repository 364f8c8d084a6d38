package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// netLab is a private network for one test: every agent in its own network
// namespace, each joined by a veth pair to a bridge that lives in a
// namespace of the lab's own, plus one veth from the root namespace into the
// bridge so the test process reaches the agents' HTTP APIs at their IPs.
// Links are cut with firewall rules inside the agents' namespaces (by peer
// IP, both directions, dropped on arrival); the test's own address (.1) is
// never cut.
//
// Names carry the test process's pid, so concurrent runs never share a
// namespace, and a sweep at start removes what a killed run left behind.
type netLab struct {
	t      testing.TB
	id     string // unique per lab: "<pid>-<seq>"
	short  string // the id squeezed into interface names (<= 15 bytes)
	subnet string // "10.77.X"
	bridge string // the bridge namespace
	fw     string // "iptables" or "nft"

	mu    sync.Mutex
	hosts map[string]labHost // by node name
	nss   []string           // namespaces to delete, bridge first
}

type labHost struct {
	ns, ip string
}

var labSeq atomic.Int32

const labNSPrefix = "meshgw-part-"

// newNetLab builds the bridge namespace and the root veth, or skips the
// test with the reason when this machine cannot (not root, no `ip netns`,
// no iptables or nft). Its cleanup deletes every namespace and link it made,
// after the test's agents are killed (their cleanups run first).
func newNetLab(t testing.TB) *netLab {
	t.Helper()
	skipWithoutNetLab(t)
	l := &netLab{t: t, hosts: map[string]labHost{}, fw: "nft"}
	if lookPath("iptables") {
		l.fw = "iptables"
	}
	sweepStaleLabs(t)
	pid, seq := os.Getpid(), labSeq.Add(1)
	l.id = fmt.Sprintf("%d-%d", pid, seq)
	// Interface names: "m" + 5 pid digits + seq letter + role + index.
	l.short = fmt.Sprintf("m%05d%c", pid%100000, 'a'+rune(seq%26))
	l.bridge = labNSPrefix + l.id + "-br"
	if out, err := l.cmd("ip", "netns", "add", l.bridge); err != nil {
		t.Skipf("partition suite: `ip netns add` fails here (%v: %s); skipped", err, out)
	}
	l.nss = append(l.nss, l.bridge)
	t.Cleanup(l.destroy)
	l.subnet = l.freeSubnet(pid + int(seq)*37)
	l.must("ip", "-n", l.bridge, "link", "set", "lo", "up")
	l.must("ip", "-n", l.bridge, "link", "add", "br0", "type", "bridge")
	l.must("ip", "-n", l.bridge, "link", "set", "br0", "up")
	root, rootPeer := l.short+"r0", l.short+"r1"
	l.must("ip", "link", "add", root, "type", "veth", "peer", "name", rootPeer)
	l.must("ip", "link", "set", rootPeer, "netns", l.bridge)
	l.must("ip", "-n", l.bridge, "link", "set", rootPeer, "master", "br0", "up")
	l.must("ip", "addr", "add", l.subnet+".1/24", "dev", root)
	l.must("ip", "link", "set", root, "up")
	return l
}

// skipWithoutNetLab skips the test, saying why, where a netLab cannot be
// built: not root, or no ip, or neither iptables nor nft.
func skipWithoutNetLab(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition suite: needs root for network namespaces (ip netns); skipped")
	}
	if !lookPath("ip") {
		t.Skip("partition suite: no `ip` command (iproute2); skipped")
	}
	if !lookPath("iptables") && !lookPath("nft") {
		t.Skip("partition suite: neither iptables nor nft is installed (.ci/run installs iptables); skipped")
	}
}

func lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// sweepStaleLabs deletes the namespaces of lab runs whose process is gone
// (a run killed by -timeout never reaches its cleanup). Only names with
// this suite's prefix are touched.
func sweepStaleLabs(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(labNSPrefix) + `(\d+)-`)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		name := f[0]
		m := re.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pid == os.Getpid() || procAlive(pid) {
			continue
		}
		if b, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Logf("sweep stale namespace %s: %v %s", name, err, b)
		}
	}
}

func procAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// freeSubnet picks 10.77.X.0/24 with no address or route on this host.
func (l *netLab) freeSubnet(seed int) string {
	for i := 0; i < 250; i++ {
		s := fmt.Sprintf("10.77.%d", (seed+i)%250+2)
		addrs, _ := l.cmd("ip", "-4", "addr", "show", "to", s+".0/24")
		routes, _ := l.cmd("ip", "-4", "route", "show", "to", "match", s+".1")
		if strings.TrimSpace(addrs) == "" && !strings.Contains(routes, s+".") {
			return s
		}
	}
	l.t.Fatal("netlab: no free 10.77.X.0/24")
	return ""
}

// cmd runs one command with a deadline and returns its combined output.
func (l *netLab) cmd(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

func (l *netLab) must(name string, args ...string) {
	l.t.Helper()
	if out, err := l.cmd(name, args...); err != nil {
		l.t.Fatalf("netlab: %v: %s", err, strings.TrimSpace(out))
	}
}

// addHost makes node name's namespace with address .(10+i) on the bridge.
func (l *netLab) addHost(name string, i int) labHost {
	l.t.Helper()
	h := labHost{ns: labNSPrefix + l.id + "-" + name, ip: fmt.Sprintf("%s.%d", l.subnet, 10+i)}
	l.must("ip", "netns", "add", h.ns)
	l.mu.Lock()
	l.nss = append(l.nss, h.ns)
	l.hosts[name] = h
	l.mu.Unlock()
	side, peer := fmt.Sprintf("%sh%d", l.short, i), fmt.Sprintf("%sp%d", l.short, i)
	l.must("ip", "link", "add", side, "type", "veth", "peer", "name", peer)
	l.must("ip", "link", "set", side, "netns", l.bridge)
	l.must("ip", "-n", l.bridge, "link", "set", side, "master", "br0", "up")
	l.must("ip", "link", "set", peer, "netns", h.ns)
	l.must("ip", "-n", h.ns, "link", "set", peer, "name", "eth0")
	l.must("ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
	l.must("ip", "-n", h.ns, "link", "set", "eth0", "up")
	l.must("ip", "-n", h.ns, "link", "set", "lo", "up")
	return h
}

// host returns node name's namespace and address.
func (l *netLab) host(name string) labHost {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hosts[name]
	if !ok {
		l.t.Fatalf("netlab: no host %s", name)
	}
	return h
}

// cut drops all traffic between every node of a and every node of b, in
// both directions: each node's namespace drops what arrives from the other
// side's addresses. Dropping on arrival only, not on the way out, keeps the
// cut silent: a sender's packets vanish as in a real partition, where a
// rule on OUTPUT would fail its sendto at once with EPERM. The test's
// address stays reachable from both sides.
func (l *netLab) cut(a, b []string) {
	l.t.Helper()
	peers := map[string][]string{}
	for _, x := range a {
		for _, y := range b {
			peers[x] = append(peers[x], l.host(y).ip)
			peers[y] = append(peers[y], l.host(x).ip)
		}
	}
	// Every namespace at about the same moment: the cut is one event.
	var wg sync.WaitGroup
	errs := make(chan error, len(peers))
	for name, ips := range peers {
		wg.Add(1)
		go func(ns string, ips []string) {
			defer wg.Done()
			if err := l.block(ns, ips); err != nil {
				errs <- err
			}
		}(l.host(name).ns, ips)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		l.t.Fatalf("netlab: cut: %v", err)
	}
}

const nftTable = "meshgw_cut"

func (l *netLab) block(ns string, ips []string) error {
	sort.Strings(ips)
	if l.fw == "iptables" {
		if out, err := l.cmd("ip", "netns", "exec", ns, "iptables", "-w", "5", "-A", "INPUT",
			"-s", strings.Join(ips, ","), "-j", "DROP"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	script := fmt.Sprintf(`table inet %s {
	chain in { type filter hook input priority -10; policy accept; ip saddr { %s } drop; }
}
`, nftTable, strings.Join(ips, ", "))
	c := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	c.Stdin = strings.NewReader(script)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	return nil
}

// heal removes every rule cut made.
func (l *netLab) heal() {
	l.t.Helper()
	l.mu.Lock()
	var nss []string
	for _, h := range l.hosts {
		nss = append(nss, h.ns)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, len(nss))
	for _, ns := range nss {
		wg.Add(1)
		go func(ns string) {
			defer wg.Done()
			if l.fw == "iptables" {
				if out, err := l.cmd("ip", "netns", "exec", ns, "iptables", "-w", "5", "-F", "INPUT"); err != nil {
					errs <- fmt.Errorf("%v: %s", err, out)
				}
				return
			}
			// No table (nothing was cut here) is fine.
			out, err := l.cmd("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", nftTable)
			if err != nil && !strings.Contains(out, "No such file") {
				errs <- fmt.Errorf("%v: %s", err, out)
			}
		}(ns)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		l.t.Fatalf("netlab: heal: %v", err)
	}
}

// destroy deletes the namespaces (which takes their veths, and so the root
// veth's peer, with them) and the root veth.
func (l *netLab) destroy() {
	l.mu.Lock()
	nss := append([]string(nil), l.nss...)
	l.mu.Unlock()
	for i := len(nss) - 1; i >= 0; i-- {
		if out, err := l.cmd("ip", "netns", "del", nss[i]); err != nil {
			l.t.Logf("netlab cleanup: %v: %s", err, out)
		}
	}
	// Gone with its peer's namespace; deleted here in case it was not.
	_, _ = l.cmd("ip", "link", "del", l.short+"r0")
}

// StartNetCluster starts n agents of one cluster, each in its own namespace
// of lab, with the same flags StartCluster gives (fast gossip profile,
// bootstrap-expect, autopilot-dead-after, -join to the first node). Every
// agent listens on the standard ports of its own address.
func StartNetCluster(t testing.TB, lab *netLab, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Profile == "" {
		opts.Profile = "local"
	}
	if opts.BootstrapExpect == 0 {
		opts.BootstrapExpect = min(n, 3)
	}
	c := &Cluster{t: t, CA: NewCA(t), opts: opts}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("n%d", i+1)
		h := lab.addHost(name, i+1)
		c.CA.Flags(name, h.ip) // issued now, for its address; NewNode reuses it
		node := c.NewNode(t, name, c.agentArgs(i)...)
		node.Gossip, node.RPC, node.Raft, node.HTTP = h.ip+":7946", h.ip+":7947", h.ip+":7948", h.ip+":7480"
		node.Wrap = []string{"ip", "netns", "exec", h.ns}
		node.Start()
		c.Nodes = append(c.Nodes, node)
		if i == 0 {
			// -join is fatal when the seed does not answer: let it listen first.
			WaitHealthy(t, 30*time.Second, node)
		}
	}
	return c
}
