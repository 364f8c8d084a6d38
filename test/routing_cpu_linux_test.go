package test

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cpuStarver confines one process to a tiny CPU quota with a cgroup of
// its own: cgroup v2 (cpu.max) when the unified hierarchy has the cpu
// controller, else cgroup v1's cpu controller (cpu.cfs_quota_us), which
// hybrid hosts still use for cpu.
type cpuStarver struct {
	version int    // 1 or 2
	dir     string // the process's new cgroup
	back    string // the cgroup.procs file of its old cgroup
	pid     int
}

// cgroupMounts returns the cgroup2 mount point and the mount point of
// the v1 hierarchy holding the cpu controller ("" when absent).
func cgroupMounts() (v2, v1cpu string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 {
			continue
		}
		switch fs[2] {
		case "cgroup2":
			if v2 == "" {
				v2 = fs[1]
			}
		case "cgroup":
			for _, o := range strings.Split(fs[3], ",") {
				if o == "cpu" {
					v1cpu = fs[1]
				}
			}
		}
	}
	return v2, v1cpu
}

// procCgroup is pid's cgroup path in the v2 hierarchy (v1 == false) or
// in the v1 hierarchy with the cpu controller.
func procCgroup(pid int, v1 bool) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if !v1 && parts[0] == "0" && parts[1] == "" {
			return parts[2], nil
		}
		if v1 {
			for _, c := range strings.Split(parts[1], ",") {
				if c == "cpu" {
					return parts[2], nil
				}
			}
		}
	}
	return "", fmt.Errorf("pid %d: no cgroup line for %s in %q", pid, map[bool]string{true: "v1 cpu", false: "v2"}[v1], b)
}

// newCPUStarver moves pid into a fresh cgroup (no limit yet), or skips
// the test saying why cgroups cannot do it here.
func newCPUStarver(t *testing.T, pid int) *cpuStarver {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starving a node of CPU needs a cgroup of its own: run as root")
	}
	v2, v1 := cgroupMounts()
	name := fmt.Sprintf("meshgw-test-%d-%d", os.Getpid(), pid)
	s := &cpuStarver{pid: pid}
	var why []string
	if v2 != "" {
		ctl, err := os.ReadFile(filepath.Join(v2, "cgroup.controllers"))
		switch {
		case err != nil:
			why = append(why, fmt.Sprintf("cgroup v2 at %s: %v", v2, err))
		case !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " cpu "):
			why = append(why, fmt.Sprintf("cgroup v2 at %s has no cpu controller (controllers: %q)", v2, strings.TrimSpace(string(ctl))))
		default:
			// A child of the root: the root may hold processes and still
			// delegate controllers.
			if err := os.WriteFile(filepath.Join(v2, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
				why = append(why, fmt.Sprintf("cgroup v2: enabling +cpu in %s/cgroup.subtree_control: %v", v2, err))
				break
			}
			old, err := procCgroup(pid, false)
			if err != nil {
				why = append(why, err.Error())
				break
			}
			s.version, s.dir, s.back = 2, filepath.Join(v2, name), filepath.Join(v2, old, "cgroup.procs")
		}
	}
	if s.version == 0 && v1 != "" {
		old, err := procCgroup(pid, true)
		if err != nil {
			why = append(why, err.Error())
		} else {
			s.version, s.dir, s.back = 1, filepath.Join(v1, name), filepath.Join(v1, old, "cgroup.procs")
		}
	}
	if s.version == 0 {
		t.Skipf("cannot starve a node of CPU here: no usable cgroup cpu controller (%s)", strings.Join(append(why, "no cgroup v1 cpu hierarchy"), "; "))
	}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Skipf("cannot create cgroup %s: %v", s.dir, err)
	}
	t.Cleanup(s.cleanup)
	if err := os.WriteFile(filepath.Join(s.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		t.Fatalf("moving pid %d into %s: %v", pid, s.dir, err)
	}
	t.Logf("cgroup v%d %s holds pid %d", s.version, s.dir, pid)
	return s
}

// limit sets the quota: quotaUs of CPU time per periodUs; quotaUs < 0
// lifts the limit.
func (s *cpuStarver) limit(t *testing.T, quotaUs, periodUs int) {
	t.Helper()
	var err error
	if s.version == 2 {
		v := fmt.Sprintf("%d %d", quotaUs, periodUs)
		if quotaUs < 0 {
			v = fmt.Sprintf("max %d", periodUs)
		}
		err = os.WriteFile(filepath.Join(s.dir, "cpu.max"), []byte(v), 0)
	} else {
		if quotaUs < 0 {
			err = os.WriteFile(filepath.Join(s.dir, "cpu.cfs_quota_us"), []byte("-1"), 0)
		} else {
			// The period first would be refused when the old quota
			// exceeds it; the quota first when it exceeds the old period.
			err = errors.Join(os.WriteFile(filepath.Join(s.dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(periodUs)), 0),
				os.WriteFile(filepath.Join(s.dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quotaUs)), 0))
		}
	}
	if err != nil {
		t.Fatalf("cgroup v%d %s: setting the cpu quota to %d/%d µs: %v", s.version, s.dir, quotaUs, periodUs, err)
	}
}

// throttled reports how many periods the cgroup was throttled in.
func (s *cpuStarver) throttled() int {
	b, err := os.ReadFile(filepath.Join(s.dir, "cpu.stat"))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "nr_throttled" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return -1
}

// cleanup moves the process back (if it still lives) and removes the
// cgroup, which the kernel allows once it is empty.
func (s *cpuStarver) cleanup() {
	if s.version == 2 {
		_ = os.WriteFile(filepath.Join(s.dir, "cpu.max"), []byte("max"), 0)
	} else {
		_ = os.WriteFile(filepath.Join(s.dir, "cpu.cfs_quota_us"), []byte("-1"), 0)
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, "cgroup.procs")); err == nil {
		for _, p := range strings.Fields(string(b)) {
			_ = os.WriteFile(s.back, []byte(p), 0)
		}
	}
	for i := 0; i < 50; i++ {
		if err := os.Remove(s.dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "routing test: cgroup %s left behind: %v\n", s.dir, os.Remove(s.dir))
}

// pid is the agent's process id (0 when it is not running).
func (n *Node) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// upstreamView is one upstream in GET /v1/routes, with its observers.
type upstreamView struct {
	URL        string `json:"url"`
	InRotation bool   `json:"in_rotation"`
	Healthy    bool   `json:"healthy"`
	Why        string `json:"why"`
	Observers  []struct {
		Node    string `json:"node"`
		Healthy bool   `json:"healthy"`
		Certain bool   `json:"certain"`
	} `json:"observers"`
}

func (u upstreamView) observer(name string) (healthy, certain, ok bool) {
	for _, o := range u.Observers {
		if o.Node == name {
			return o.Healthy, o.Certain, true
		}
	}
	return false, false, false
}

// serviceUpstreams is how n sees service's upstreams, by URL.
func serviceUpstreams(n *Node, service string) (map[string]upstreamView, error) {
	var rv struct {
		Services []struct {
			Service   string         `json:"service"`
			Upstreams []upstreamView `json:"upstreams"`
		} `json:"services"`
	}
	if err := n.GetJSON("/v1/routes", &rv); err != nil {
		return nil, err
	}
	for _, s := range rv.Services {
		if s.Service == service {
			out := map[string]upstreamView{}
			for _, u := range s.Upstreams {
				out[u.URL] = u
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("%s does not list service %s", n.Name, service)
}

// TestRoutingStarvedObserver: a runner whose CPU is starved for real (a
// cgroup quota of 1% of one core) has its health checks time out and says
// so, yet the two other runners keep both healthy upstreams in rotation
// and serve through both without a failure; once it has CPU again every
// node agrees again; and an upstream that really dies is still taken out
// on every node (so the agreement rule is not simply "never").
func TestRoutingStarvedObserver(t *testing.T) {
	var dp []string
	for i := 0; i < 3; i++ {
		dp = append(dp, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	c := StartCluster(t, 3, Options{Extra: func(i int) []string { return []string{"-proxy", dp[i]} }})
	leader := WaitLeader(t, c.Nodes, "default")
	// Starve a follower: a starved Raft leader would only add an election
	// to what this test is about.
	si := 0
	for i, n := range c.Nodes {
		if n.Name != leader {
			si = i
		}
	}
	starved := c.Nodes[si]
	var others []*Node
	var otherDP []string
	for i, n := range c.Nodes {
		if i != si {
			others, otherDP = append(others, n), append(otherDP, dp[i])
		}
	}
	pid := starved.pid()
	if pid == 0 {
		t.Fatalf("%s is not running", starved.Name)
	}
	cg := newCPUStarver(t, pid)

	a, b := startNamedUpstream(t, "a"), startNamedUpstream(t, "b")
	// The timeout leaves the two fed runners room on a busy CI machine; the
	// starved one, given 1 ms of CPU every 100 ms, still misses it.
	const interval, timeout, unhealthyAfter, healthyAfter = 400 * time.Millisecond, 300 * time.Millisecond, 2, 2
	putService(t, c.Nodes[0], map[string]any{"name": "starve", "type": "http",
		"upstreams": []map[string]any{{"url": a.url()}, {"url": b.url()}},
		"health": map[string]any{"path": "/health", "interval": interval.String(), "timeout": timeout.String(),
			"healthy_after": healthyAfter, "unhealthy_after": unhealthyAfter}})
	urls := []string{a.url(), b.url()}

	// allAgree: every node in nodes has both upstreams in rotation, and
	// lists every node of the cluster as an observer saying healthy.
	allAgree := func(nodes []*Node) error {
		for _, n := range nodes {
			ups, err := serviceUpstreams(n, "starve")
			if err != nil {
				return err
			}
			for _, u := range urls {
				v := ups[u]
				if !v.InRotation || !v.Healthy {
					return fmt.Errorf("%s: %s in rotation %v, healthy %v (%s)", n.Name, u, v.InRotation, v.Healthy, v.Why)
				}
				for _, o := range c.Nodes {
					if h, _, ok := v.observer(o.Name); !ok || !h {
						return fmt.Errorf("%s: observer %s of %s: listed %v, healthy %v", n.Name, o.Name, u, ok, h)
					}
				}
			}
		}
		return nil
	}
	Eventually(t, 10*time.Second, func() error { return allAgree(c.Nodes) })

	// Idempotent load through the two other data planes for the whole test.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	type tally struct {
		sent, failed atomic.Int64
		mu           sync.Mutex
		by           map[string]int
		firstErr     string
	}
	load := func() (*tally, func()) {
		tl := &tally{by: map[string]int{}}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, addr := range otherDP {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body, err := getVia(client, addr, "", "/svc/starve/ping")
					tl.sent.Add(1)
					tl.mu.Lock()
					if err != nil || code != 200 {
						tl.failed.Add(1)
						if tl.firstErr == "" {
							tl.firstErr = fmt.Sprintf("via %s: %d %q %v", addr, code, body, err)
						}
					} else if f := strings.Fields(body); len(f) > 0 {
						tl.by[f[0]]++
					}
					tl.mu.Unlock()
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		var once sync.Once
		return tl, func() { once.Do(func() { close(stop); wg.Wait() }) }
	}
	check := func(t *testing.T, phase string, tl *tally) {
		t.Helper()
		tl.mu.Lock()
		defer tl.mu.Unlock()
		t.Logf("%s: %d requests through %v, %d failed, by upstream %v", phase, tl.sent.Load(), otherDP, tl.failed.Load(), tl.by)
		if tl.failed.Load() != 0 {
			t.Fatalf("%s: %d of %d requests failed; first: %s", phase, tl.failed.Load(), tl.sent.Load(), tl.firstErr)
		}
		if tl.by["a"] == 0 || tl.by["b"] == 0 {
			t.Fatalf("%s: requests did not reach both healthy upstreams: %v", phase, tl.by)
		}
	}

	t.Run("starved", func(t *testing.T) {
		tl, stop := load()
		defer stop()
		before := cg.throttled()
		// 1 ms of CPU every 100 ms. Harsher (a longer period) and the
		// starved node's gossip and RPCs fail so often that the others
		// declare it dead and stop hearing it at all.
		cg.limit(t, 1000, 100000)
		start := time.Now()
		// From the quota on, at every poll, the two others keep both
		// upstreams in rotation. Meanwhile the starved runner's checks
		// time out and it says so: its verdict on each upstream must
		// reach another node as unhealthy (and not certain: timeouts) at
		// least once, for at least one upstream (a starved node's reports
		// are too erratic to count on hearing both: CI saw one of them
		// only, in 15 s), and then the hold lasts many check intervals more.
		// A starved node flaps, and its reports reach one peer and not the
		// other (its RPCs time out too, and a peer may declare it dead for
		// a while), so the verdicts need not all be bad at one moment nor
		// reach both others.
		hold := 10 * interval
		heardBy := map[string]string{} // upstream → "node@when" it was first heard unhealthy
		var allHeard time.Time         // when a first failing verdict was heard
		polls, bad := 0, 0
		for deadline := start.Add(15 * time.Second); allHeard.IsZero() || time.Since(allHeard) < hold; time.Sleep(interval / 4) {
			if allHeard.IsZero() && time.Now().After(deadline) {
				t.Fatalf("%s never reported an upstream unhealthy to another node within %s of its CPU quota (heard: %v): not starved enough, or too starved to be heard",
					starved.Name, deadline.Sub(start), heardBy)
			}
			for _, n := range others {
				ups, err := serviceUpstreams(n, "starve")
				if err != nil {
					t.Fatal(err)
				}
				for _, u := range urls {
					v := ups[u]
					if !v.InRotation || !v.Healthy {
						t.Fatalf("%s took healthy %s out while only starved %s fails it: in rotation %v, healthy %v (%s), observers %+v",
							n.Name, u, starved.Name, v.InRotation, v.Healthy, v.Why, v.Observers)
					}
					h, certain, ok := v.observer(starved.Name)
					if !ok || h {
						continue
					}
					if certain {
						t.Fatalf("%s: starved %s is certain %s is unhealthy: its failures were timeouts", n.Name, starved.Name, u)
					}
					bad++
					if heardBy[u] == "" {
						heardBy[u] = fmt.Sprintf("%s@%s", n.Name, time.Since(start).Round(time.Millisecond))
					}
				}
			}
			polls++
			if allHeard.IsZero() && len(heardBy) > 0 {
				allHeard = time.Now()
				t.Logf("%s's checks failed (timeouts) and the others heard it %s after the quota (%v)",
					starved.Name, time.Since(start).Round(time.Millisecond), heardBy)
			}
		}
		t.Logf("both upstreams stayed in rotation on both others for %s under starvation, %s of it after a failing verdict was heard; %d polls, the starved verdict unhealthy in %d of %d",
			time.Since(start).Round(time.Millisecond), hold, polls, bad, polls*len(others)*len(urls))
		throttled := cg.throttled() - before
		t.Logf("cgroup v%d throttled %s in %d periods", cg.version, starved.Name, throttled)
		if throttled <= 0 {
			t.Fatalf("cgroup v%d %s was never throttled: the node was not starved", cg.version, cg.dir)
		}
		stop()
		check(t, "while starved", tl)
	})

	t.Run("recovered", func(t *testing.T) {
		cg.limit(t, -1, 100000)
		start := time.Now()
		Eventually(t, 15*time.Second, func() error { return allAgree(c.Nodes) })
		t.Logf("every node agrees both upstreams are healthy %s after the quota was lifted", time.Since(start).Round(time.Millisecond))
	})

	t.Run("dead upstream", func(t *testing.T) {
		tl, stop := load()
		defer stop()
		time.Sleep(300 * time.Millisecond) // load before the kill
		b.kill()
		start := time.Now()
		Eventually(t, 10*time.Second, func() error {
			for _, n := range c.Nodes {
				ups, err := serviceUpstreams(n, "starve")
				if err != nil {
					return err
				}
				if v := ups[b.url()]; v.Healthy || v.InRotation {
					return fmt.Errorf("%s: dead %s in rotation %v, healthy %v", n.Name, b.url(), v.InRotation, v.Healthy)
				}
				if v := ups[a.url()]; !v.InRotation {
					return fmt.Errorf("%s: live %s out of rotation (%s)", n.Name, a.url(), v.Why)
				}
			}
			return nil
		})
		took := time.Since(start)
		bound := time.Duration(unhealthyAfter)*interval + 1500*time.Millisecond
		t.Logf("dead upstream out on every node %s after the kill (bound %s)", took.Round(time.Millisecond), bound)
		if took > bound {
			t.Errorf("dead upstream out after %s, want within unhealthy_after × interval (+ sharing) = %s", took, bound)
		}
		stop()
		tl.mu.Lock()
		failed, sent, first := tl.failed.Load(), tl.sent.Load(), tl.firstErr
		tl.mu.Unlock()
		t.Logf("%d requests during the kill, %d failed", sent, failed)
		if failed != 0 {
			t.Fatalf("%d of %d idempotent requests failed while the dead upstream left; first: %s", failed, sent, first)
		}
	})
}
