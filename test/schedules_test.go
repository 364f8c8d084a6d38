package test

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

type schedExec struct {
	ID          string    `json:"execution_id"`
	Status      string    `json:"status"`
	Schedule    string    `json:"schedule"`
	ScheduledAt time.Time `json:"scheduled_at"`
	CreatedAt   time.Time `json:"created_at"`
	FinishedAt  time.Time `json:"finished_at"`
}

type schedStatus struct {
	Name          string    `json:"name"`
	Next          time.Time `json:"next"`
	LastFired     time.Time `json:"last_fired"`
	LastExecution string    `json:"last_execution"`
	State         *struct {
		Fired   uint64 `json:"fired"`
		Skipped uint64 `json:"skipped"`
		Missed  uint64 `json:"missed"`
	} `json:"state"`
}

func schedExecs(t *testing.T, n *Node, service string) []schedExec {
	t.Helper()
	var es []schedExec
	Eventually(t, 20*time.Second, func() error {
		return n.GetJSON("/v1/executions?limit=1000&service="+service, &es)
	})
	return es
}

// TestScheduleFiresOncePerTickAcrossLeaderKill: a schedule firing every
// second over 3 agents fires each tick exactly once, none missing, across
// a kill -9 of the leader (the scheduler role's node); a second schedule
// with overlap forbid never starts a run while its previous one runs, and
// records the ticks it skipped. The CLI lists both with next and last
// firing.
func TestScheduleFiresOncePerTickAcrossLeaderKill(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	leader := byName(c.Nodes, WaitLeader(t, c.Nodes, "default"))
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	n1 := c.Nodes[0]
	for _, svc := range []map[string]any{
		{"name": "tick", "type": "exec", "command": []string{"true"}, "retries": 3},
		{"name": "slow", "type": "exec", "command": []string{"sleep", "1.2"}, "retries": 3},
	} {
		if err := n1.PutJSON("/v1/services/"+svc["name"].(string), svc, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A bad definition is refused naming the field.
	if code, err := n1.Do("PUT", "/v1/schedules/bad", map[string]any{"service": "tick", "cron": "* * *"}, nil); code != 400 ||
		!strings.Contains(err.Error(), `"path":"cron"`) {
		t.Fatalf("bad cron: %d %v", code, err)
	}
	for _, s := range []map[string]any{
		{"name": "every-second", "service": "tick", "cron": "* * * * * *", "input": map[string]any{"k": 1}},
		{"name": "no-overlap", "service": "slow", "cron": "* * * * * *", "overlap": "forbid"},
	} {
		if err := n1.PutJSON("/v1/schedules/"+s["name"].(string), s, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Three firings on the first leader, then kill -9 it.
	Eventually(t, 20*time.Second, func() error {
		if es := schedExecs(t, n1, "tick"); len(es) < 3 {
			return fmt.Errorf("%d firings so far", len(es))
		}
		return nil
	})
	killed := time.Now()
	leader.Kill()
	rest := c.Others(leader)
	// Four more seconds after the survivors elect a new leader and its
	// scheduler starts.
	var last time.Time
	Eventually(t, 30*time.Second, func() error {
		var s schedStatus
		if err := rest[0].GetJSON("/v1/schedules/every-second", &s); err != nil {
			return err
		}
		last = s.LastFired
		if s.LastFired.Before(killed.Add(4 * time.Second)) {
			return fmt.Errorf("last fired %v, killed at %v", s.LastFired, killed)
		}
		var nov schedStatus
		if err := rest[0].GetJSON("/v1/schedules/no-overlap", &nov); err != nil {
			return err
		}
		if nov.State == nil || nov.State.Fired < 3 || nov.State.Skipped == 0 {
			return fmt.Errorf("no-overlap: %+v, want 3 firings and skipped ticks", nov.State)
		}
		return nil
	})
	out, stderr, code := CLI(t, "schedules", "list", "-http-addr", rest[0].HTTP)
	if code != 0 || !strings.Contains(out, "every-second") || !strings.Contains(out, "no-overlap") ||
		!strings.Contains(out, "NEXT") || !strings.Contains(out, "LAST") {
		t.Fatalf("schedules list: %d %s %s", code, out, stderr)
	}
	t.Logf("schedules list:\n%s", out)
	// every-second's row: its next firing after its last, the last recent.
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "every-second ") {
			continue
		}
		ts := regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`).FindAllString(line, -1)
		if len(ts) < 2 {
			t.Fatalf("every-second lists %d times, want next and last: %q", len(ts), line)
		}
		next, _ := time.Parse(time.RFC3339, ts[0])
		lastFired, _ := time.Parse(time.RFC3339, ts[1])
		if !next.After(lastFired) || time.Since(lastFired) > 10*time.Second {
			t.Errorf("every-second: next %v, last %v (now %v)", next, lastFired, time.Now().UTC())
		}
	}
	for _, name := range []string{"every-second", "no-overlap"} {
		if _, stderr, code := CLI(t, "schedules", "delete", name, "-http-addr", rest[0].HTTP); code != 0 {
			t.Fatalf("delete %s: %s", name, stderr)
		}
	}

	es := schedExecs(t, rest[0], "tick")
	seen := map[int64]int{}
	var ticks []int64
	for _, e := range es {
		if e.Schedule != "every-second" || e.ScheduledAt.IsZero() || e.ScheduledAt.Nanosecond() != 0 {
			t.Errorf("execution %s: schedule %q at %v", e.ID, e.Schedule, e.ScheduledAt)
			continue
		}
		s := e.ScheduledAt.Unix()
		if seen[s]++; seen[s] == 1 {
			ticks = append(ticks, s)
		}
	}
	sort.Slice(ticks, func(i, j int) bool { return ticks[i] < ticks[j] })
	for s, n := range seen {
		if n != 1 {
			t.Errorf("tick %s fired %d times", time.Unix(s, 0).UTC().Format(time.TimeOnly), n)
		}
	}
	if len(ticks) == 0 || ticks[0] > killed.Unix() || ticks[len(ticks)-1] < last.Unix() {
		t.Fatalf("ticks %v do not span the kill at %v", ticks, killed)
	}
	for s := ticks[0]; s <= ticks[len(ticks)-1]; s++ {
		if seen[s] == 0 {
			t.Errorf("tick %s missing (kill at %s)", time.Unix(s, 0).UTC().Format(time.TimeOnly), killed.UTC().Format(time.TimeOnly))
		}
	}
	t.Logf("%d ticks fired once each, from %s to %s, leader %s killed at %s", len(ticks),
		time.Unix(ticks[0], 0).UTC().Format(time.TimeOnly), time.Unix(ticks[len(ticks)-1], 0).UTC().Format(time.TimeOnly),
		leader.Name, killed.UTC().Format(time.TimeOnly))

	// overlap forbid: no firing starts before the previous one ended.
	slow := schedExecs(t, rest[0], "slow")
	sort.Slice(slow, func(i, j int) bool { return slow[i].ScheduledAt.Before(slow[j].ScheduledAt) })
	if len(slow) < 3 {
		t.Fatalf("no-overlap fired %d times", len(slow))
	}
	for i := 1; i < len(slow); i++ {
		prev, cur := slow[i-1], slow[i]
		if cur.ScheduledAt.Sub(prev.ScheduledAt) < 2*time.Second {
			t.Errorf("no-overlap fired at %v and %v: the first (%s) was still running", prev.ScheduledAt, cur.ScheduledAt, prev.Status)
		}
	}
}
