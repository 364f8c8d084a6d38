package node

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/gossip"
)

// A member failed and then alive again is one flap; one that failed and
// left, or that only joined, is none.
func TestFlapTrackerCountsComebacks(t *testing.T) {
	m := newMetrics()
	f := flapTracker{m: m, failed: map[string]bool{}}
	ev := func(typ gossip.EventType, name string, st gossip.Status) {
		f.event(gossip.Event{Type: typ, Members: []gossip.Member{{Name: name, Status: st}}})
	}
	ev(gossip.EventJoin, "a", gossip.StatusAlive)
	ev(gossip.EventJoin, "b", gossip.StatusAlive)
	ev(gossip.EventFailed, "a", gossip.StatusFailed)
	ev(gossip.EventJoin, "a", gossip.StatusAlive) // back: a flap
	ev(gossip.EventFailed, "b", gossip.StatusFailed)
	ev(gossip.EventReap, "b", gossip.StatusLeft)
	ev(gossip.EventJoin, "b", gossip.StatusAlive) // a new life, not a flap
	if n := counterValue(t, m.gossipFlaps); n != 1 {
		t.Fatalf("flaps = %v, want 1", n)
	}
	if n := counterValue(t, m.gossipEvents.WithLabelValues("join")); n != 4 {
		t.Fatalf("join events = %v, want 4", n)
	}
	if len(f.failed) != 0 {
		t.Fatalf("still tracked as failed: %v", f.failed)
	}
}

func TestCodeClass(t *testing.T) {
	for code, want := range map[int]string{0: "aborted", 101: "1xx", 200: "2xx", 299: "2xx", 404: "4xx", 499: "4xx",
		503: "5xx", 600: "aborted"} {
		if got := codeClass(code); got != want {
			t.Errorf("codeClass(%d) = %s, want %s", code, got, want)
		}
	}
}

// counterValue reads one counter through a registry of its own.
func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", mfs, err)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}
