package gossip

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"
)

// startMesh starts n members with profile, all joining the first, and
// returns them and the time until every member saw all n alive.
func startMesh(b testing.TB, n int, profile string, serfDefaults bool) ([]*Gossip, time.Duration) {
	b.Helper()
	var gs []*Gossip
	var seed string
	start := time.Now()
	for i := 0; i < n; i++ {
		cfg := DefaultConfig()
		cfg.NodeName = fmt.Sprintf("m%02d", i)
		cfg.BindAddr = fmt.Sprintf("127.0.0.1:%d", freePort(b))
		cfg.Profile = profile
		if i > 0 {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.BindAddr
		}
		g, err := New(cfg, zerolog.Nop())
		if err != nil {
			b.Fatal(err)
		}
		if serfDefaults {
			useLibraryDefaults(g.serfCf.MemberlistConfig)
		}
		if err := g.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		gs = append(gs, g)
	}
	for {
		done := true
		for _, g := range gs {
			if len(g.Members(Filter{Status: StatusAlive})) != n {
				done = false
				break
			}
		}
		if done {
			return gs, time.Since(start)
		}
		// Generous: a member that missed another's alive broadcast only
		// learns it at the next push/pull (30 s, ×2 above 32 members).
		if time.Since(start) > 150*time.Second {
			b.Fatalf("%d members did not converge in 150 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// detect kills (no leave) the last member and returns the time until every
// survivor sees it failed.
func detect(b testing.TB, gs []*Gossip) time.Duration {
	victim := gs[len(gs)-1]
	name := victim.cfg.NodeName
	start := time.Now()
	victim.Shutdown()
	for {
		done := true
		for _, g := range gs[:len(gs)-1] {
			if statusOf(g, name) != StatusFailed {
				done = false
				break
			}
		}
		if done {
			return time.Since(start)
		}
		if time.Since(start) > 60*time.Second {
			b.Fatal("failure not detected")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkGossip measures join convergence and failure detection (a member
// stopped without leaving, seen failed by every survivor) per profile and
// mesh size. "serf-defaults" is memberlist's LAN config untouched, measured
// in the same run as the reference.
//
//	go test -run ^$ -bench BenchmarkGossip -benchtime 3x ./gossip
func BenchmarkGossip(b *testing.B) {
	for _, p := range []struct {
		name, profile string
		defaults      bool
	}{{"lan", "lan", false}, {"serf-defaults", "lan", true}, {"local", "local", false}, {"wan", "wan", false}} {
		for _, n := range []int{5, 20, 50} {
			if p.name == "wan" && n > 5 {
				continue
			}
			b.Run(fmt.Sprintf("%s/%d", p.name, n), func(b *testing.B) {
				var conv, det []time.Duration
				for i := 0; i < b.N; i++ {
					gs, c := startMesh(b, n, p.profile, p.defaults)
					conv = append(conv, c)
					det = append(det, detect(b, gs))
					for _, g := range gs {
						g.Shutdown()
					}
				}
				b.ReportMetric(ms(median(conv)), "ms/converge")
				b.ReportMetric(ms(median(det)), "ms/detect")
				b.ReportMetric(ms(minOf(det)), "ms/detect-min")
				b.ReportMetric(ms(maxOf(det)), "ms/detect-max")
				b.Logf("runs: converge %v detect %v", conv, det)
			})
		}
	}
}

// useLibraryDefaults puts memberlist's LAN failure-detection timings back.
func useLibraryDefaults(mc *memberlist.Config) {
	d := memberlist.DefaultLANConfig()
	mc.ProbeInterval, mc.ProbeTimeout = d.ProbeInterval, d.ProbeTimeout
	mc.SuspicionMult, mc.SuspicionMaxTimeoutMult = d.SuspicionMult, d.SuspicionMaxTimeoutMult
	mc.GossipInterval, mc.GossipNodes, mc.RetransmitMult = d.GossipInterval, d.GossipNodes, d.RetransmitMult
	mc.AwarenessMaxMultiplier = d.AwarenessMaxMultiplier
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// TestNoFlappingUnderCPUSaturation starts 5 lan members, saturates every CPU
// with busy processes for 30 s and asserts no member was ever seen failed
// (nor left). It is a soak: set MESHGW_SOAK=1 to run it.
func TestNoFlappingUnderCPUSaturation(t *testing.T) {
	if os.Getenv("MESHGW_SOAK") == "" {
		t.Skip("soak test: set MESHGW_SOAK=1 (runs 30 s with every CPU saturated)")
	}
	gs, _ := startMesh(t, 5, "lan", false)
	defer func() {
		for _, g := range gs {
			g.Shutdown()
		}
	}()
	var hogs []*exec.Cmd
	for i := 0; i < 2*runtime.NumCPU(); i++ {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	defer func() {
		for _, c := range hogs {
			c.Process.Kill()
			c.Wait()
		}
	}()
	end := time.Now().Add(30 * time.Second)
	suspects := 0
	for time.Now().Before(end) {
		for _, g := range gs {
			// Events too: a failure refuted between two polls still shows here.
			for drained := false; !drained; {
				select {
				case ev := <-g.Events():
					if ev.Type == EventFailed || ev.Type == EventLeave {
						t.Fatalf("%s got a %s event for %s under CPU saturation", g.cfg.NodeName, ev.Type, ev.Members[0].Name)
					}
				default:
					drained = true
				}
			}
			for _, m := range g.Members(Filter{}) {
				switch m.Status {
				case StatusFailed, StatusLeft:
					t.Fatalf("%s saw %s %s under CPU saturation", g.cfg.NodeName, m.Name, m.Status)
				case StatusSuspect:
					suspects++
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("30 s of saturation: no member failed; %d suspect observations (refuted)", suspects)
}
