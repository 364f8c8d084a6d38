package test

import (
	"fmt"
	"testing"
	"time"
)

// TestThrottlePartition: 5 agents in network namespaces, a 50/s limit by
// service (on_manager_loss share) under load on every node; the cluster is
// cut 2|3 with the Raft leader (so the active throttle manager) on the
// small side, held 4 s, and healed. In no 1-s window do both sides together
// admit more than 50, and the large side keeps admitting. The cut is
// shorter than the throttle lease (30s by default), so the small side's
// shares stay reserved throughout (TestThrottleDeadNodeShareComesBack and
// the throttle unit tests cover a cut past the lease).
func TestThrottlePartition(t *testing.T) {
	if testing.Short() {
		t.Skip("throttle partition: 5 agents")
	}
	lab := newNetLab(t)
	c := StartNetCluster(t, lab, 5, Options{BootstrapExpect: 3})
	r := &throttleRig{c: c}
	r.newUpstream(t, lab.subnet+".1:0")
	leader, voters := waitOneGroup(t, c, 60*time.Second)
	var small, large []string
	small = append(small, leader)
	for _, n := range c.Nodes {
		switch {
		case n.Name == leader:
		case !voters[n.Name] && len(small) < 2:
			small = append(small, n.Name)
		default:
			large = append(large, n.Name)
		}
	}
	Eventually(t, 20*time.Second, func() error {
		_, err := c.Nodes[0].Do("PUT", "/v1/services/prate", map[string]any{"name": "prate", "type": "http",
			"upstream": r.upstream.URL, "limits": []map[string]any{{"rate": 50, "per": "1s"}}}, nil)
		return err
	})
	Eventually(t, 30*time.Second, func() error {
		for _, n := range c.Nodes {
			resp, err := r.send(n, "", "GET", "/svc/prate/warm", "", "")
			if err != nil || resp.StatusCode != 200 {
				return fmt.Errorf("warm-up on %s: %v %v", n.Name, resp, err)
			}
		}
		return nil
	})
	var res loadResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		res = r.load(t, "prate", []int{2, 1, 2, 1, 1}, 10*time.Millisecond, 7*time.Second)
	}()
	time.Sleep(1500 * time.Millisecond)
	lab.cut(small, large)
	cutAt := time.Now()
	time.Sleep(4 * time.Second)
	lab.heal()
	healAt := time.Now()
	<-done
	certain, amb := r.windows(res)
	t.Logf("sides %v | %v; cut %s for %s; per window %s (+%d straddling), refused %d",
		small, large, cutAt.Format("05.000"), healAt.Sub(cutAt).Round(10*time.Millisecond),
		sortedWindows(certain), amb, res.refused)
	for w, n := range certain {
		if n > 50 {
			t.Errorf("window %d admitted %d across both sides, over 50", w, n)
		}
	}
	// Each side while cut (whole windows from the second after the cut).
	onSmall := map[string]bool{}
	for _, n := range small {
		onSmall[n] = true
	}
	from, to := cutAt.Unix()+2, healAt.Unix()-1
	sides := map[bool]int{}
	for id, at := range res.sent {
		if w := at.Unix(); w >= from && w <= to {
			sides[onSmall[res.node[id]]]++
		}
	}
	t.Logf("while cut (%d whole windows): small side admitted %d, large side %d; other answers %v", to-from+1, sides[true], sides[false], res.other)
	// The small side serves no /svc/ request while cut whatever the
	// throttle does: its node reads the cluster's ACL state first, which
	// needs a quorum (503 no_quorum). Its fallback shares are the unit
	// tests' (throttle: TestFallbackShareUnderPartition,
	// TestRealTimeFallbackAfterCut); here the large side must go on
	// admitting within what the small side's shares leave.
	if sides[false] == 0 {
		t.Errorf("while cut, the large side admitted nothing")
	}
}
