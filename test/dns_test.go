package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// srvTargets asks addr for SRV of name over netw and returns "target:port"
// sorted, and the rcode.
func srvTargets(addr, netw, name string) ([]string, int, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeSRV)
	c := &mdns.Client{Net: netw, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	for _, rr := range r.Answer {
		if s, ok := rr.(*mdns.SRV); ok {
			out = append(out, fmt.Sprintf("%s:%d", s.Target, s.Port))
		}
	}
	sort.Strings(out)
	return out, r.Rcode, nil
}

func srvOf(nodes ...*Node) string {
	var out []string
	for _, n := range nodes {
		_, port, _ := strings.Cut(n.HTTP, ":")
		out = append(out, n.Name+".node.meshgw.:"+port)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// TestDNSAnswersLiveGateways: every node's DNS interface answers the live
// gateway nodes (SRV port = their HTTP API port), of the mesh and of the
// cluster, and the live runners; within 3 s of a kill -9 of one gateway
// the answers are exactly the survivors, on every survivor, over UDP and
// TCP; dig, where installed, agrees.
func TestDNSAnswersLiveGateways(t *testing.T) {
	dnsAddr := map[int]string{}
	c := StartCluster(t, 3, Options{Profile: "lan", Extra: func(i int) []string {
		dnsAddr[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		args := []string{"-dns", dnsAddr[i]}
		if i == 2 {
			args = append(args, "-roles", "gateway") // n3 runs nothing
		}
		return args
	}})
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	check := func(addr, netw, name, want string) error {
		got, rcode, err := srvTargets(addr, netw, name)
		if err != nil {
			return err
		}
		if rcode != mdns.RcodeSuccess || strings.Join(got, " ") != want {
			return fmt.Errorf("%s %s on %s: %s %v, want %s", netw, name, addr, mdns.RcodeToString[rcode], got, want)
		}
		return nil
	}
	Eventually(t, 10*time.Second, func() error {
		for i := range c.Nodes {
			for _, q := range []struct{ name, want string }{
				{"gateway.meshgw.", srvOf(n1, n2, n3)},
				{"default.gateway.meshgw.", srvOf(n1, n2, n3)},
				{"default.runner.meshgw.", srvOf(n1, n2)},
			} {
				if err := check(dnsAddr[i], "udp", q.name, q.want); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if _, rcode, err := srvTargets(dnsAddr[0], "udp", "nowhere.gateway.meshgw."); err != nil || rcode != mdns.RcodeNameError {
		t.Errorf("unknown cluster: %s %v, want NXDOMAIN", mdns.RcodeToString[rcode], err)
	}
	if _, rcode, err := srvTargets(dnsAddr[0], "udp", "example.com."); err != nil || rcode != mdns.RcodeRefused {
		t.Errorf("other zone: %s %v, want REFUSED", mdns.RcodeToString[rcode], err)
	}
	digCheck(t, dnsAddr[0], "default.runner.meshgw.", srvOf(n1, n2))

	n3.Kill()
	killed := time.Now()
	want := srvOf(n1, n2)
	var last error
	for {
		last = nil
		for _, i := range []int{0, 1} {
			for _, netw := range []string{"udp", "tcp"} {
				if err := check(dnsAddr[i], netw, "default.gateway.meshgw.", want); err != nil && last == nil {
					last = err
				}
			}
		}
		if last == nil {
			break
		}
		if time.Since(killed) > 3*time.Second {
			t.Fatalf("3 s after kill -9 of n3: %v", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("answers exact %v after kill -9 of n3", time.Since(killed).Round(10*time.Millisecond))
	digCheck(t, dnsAddr[1], "gateway.meshgw.", want)
}

// digCheck asks dig (UDP and TCP) for SRV of name, when dig is installed.
func digCheck(t *testing.T, addr, name, want string) {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Log("dig not installed (Debian package bind9-dnsutils): only the library client was used")
		return
	}
	host, port, _ := strings.Cut(addr, ":")
	for _, proto := range []string{"+notcp", "+tcp"} {
		out, err := exec.Command("dig", "@"+host, "-p", port, proto, "+short", "+time=2", "+tries=1", "SRV", name).Output()
		if err != nil {
			t.Fatalf("dig %s %s: %v", proto, name, err)
		}
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// "1 1 PORT TARGET"
			f := strings.Fields(line)
			if len(f) == 4 {
				got = append(got, f[3]+":"+f[2])
			}
		}
		sort.Strings(got)
		if strings.Join(got, " ") != want {
			t.Errorf("dig %s SRV %s: %q, want %s", proto, name, out, want)
		}
	}
}

// The README's DNS example runs as written (bash -e), with dig.
func TestReadmeDNSExampleRuns(t *testing.T) {
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not installed (Debian package bind9-dnsutils): the README's DNS example needs it")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, root, "## DNS")
	work := t.TempDir()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "meshgw"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := runBlock(t, work, block, 2*time.Minute)
	if err != nil {
		t.Fatalf("the DNS example failed: %v\n%s", err, out)
	}
	for _, want := range []string{"127.0.0.1\n", "1 1 6480 d1.node.meshgw.", "status: NXDOMAIN"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("DNS example output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("DNS example output:\n%s", out)
}
