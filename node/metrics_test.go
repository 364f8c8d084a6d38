package node

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
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

// What the client got and why: upstream errors are those that left it
// without an upstream's answer, labelled by the API error code.
func TestObserveProxyReasons(t *testing.T) {
	m := newMetrics()
	busy := httpapi.Errorf(http.StatusTooManyRequests, "busy", "all runners busy")
	unreachable := httpapi.Errorf(http.StatusBadGateway, "runner_unreachable", "gone")
	m.observeProxy("c", "web", 0, time.Millisecond, nil)
	m.observeProxy("c", "web", 404, time.Millisecond, nil) // the upstream's own 404
	m.observeProxy("c", "web", 502, time.Millisecond, nil) // the runner's proxy: upstream down
	m.observeProxy("c", "web", 0, time.Millisecond, busy)
	m.observeProxy("c", "web", 0, time.Millisecond, unreachable)
	m.observeProxy("c", "web", 200, time.Millisecond, fmt.Errorf("proxy: %w", dispatch.ErrProxyAborted))
	for _, c := range []struct {
		code string
		want float64
	}{{"2xx", 2}, {"4xx", 2}, {"5xx", 2}} {
		if n := counterValue(t, m.proxyRequests.WithLabelValues("c", "web", c.code)); n != c.want {
			t.Errorf("%s = %v, want %v", c.code, n, c.want)
		}
	}
	for _, r := range []string{"upstream_unreachable", "busy", "runner_unreachable", "aborted"} {
		if n := counterValue(t, m.proxyUpstream.WithLabelValues("c", "web", r)); n != 1 {
			t.Errorf("upstream errors %s = %v, want 1", r, n)
		}
	}
}

// A request's metrics resolve their label children once: an answer
// without an error allocates nothing, and still counts where With(...)
// would have.
func TestObserveAllocatesNothing(t *testing.T) {
	m := newMetrics()
	m.observeProxy("c", "web", 200, time.Millisecond, nil)
	m.observeRequest(svcRouteForTest, 200, time.Millisecond)
	if n := testing.AllocsPerRun(100, func() {
		m.observeProxy("c", "web", 200, time.Millisecond, nil)
		m.observeRequest(svcRouteForTest, 200, time.Millisecond)
	}); n != 0 {
		t.Errorf("%v allocations per request", n)
	}
	if n := counterValue(t, m.proxyRequests.WithLabelValues("c", "web", "2xx")); n != 102 {
		t.Errorf("proxy 2xx = %v, want 102", n)
	}
	if n := counterValue(t, m.httpRequests.WithLabelValues(svcRouteForTest, "2xx")); n != 102 {
		t.Errorf("http 2xx = %v, want 102", n)
	}
	m.observeProxy("c", "web", 0, time.Millisecond, httpapi.Errorf(http.StatusBadGateway, "runner_unreachable", "gone"))
	if n := counterValue(t, m.proxyRequests.WithLabelValues("c", "web", "5xx")); n != 1 {
		t.Errorf("proxy 5xx = %v, want 1", n)
	}
}

const svcRouteForTest = "/svc/{name}/{path...}"
