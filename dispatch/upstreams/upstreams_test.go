package upstreams

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Unix(1_000_000, 0)} }
func req(ts ...Target) *Request      { return &Request{Service: "s", Key: "c/s", Targets: ts} }

func TestWeightedSplitIsExact(t *testing.T) {
	r := NewRegistry(Config{}, NewHealth(nil))
	q := req(Target{"http://a", 9}, Target{"http://b", 1})
	n := map[string]int{}
	for i := 0; i < 1000; i++ {
		u, err := r.Pick(q, nil)
		if err != nil {
			t.Fatal(err)
		}
		n[u]++
	}
	if n["http://a"] != 900 || n["http://b"] != 100 {
		t.Fatalf("split %v, want 900/100", n)
	}
}

func TestStickyKeepsUpstreamAndMovesOnlyTheLostOnes(t *testing.T) {
	h := NewHealth(nil)
	r := NewRegistry(Config{}, h)
	ts := []Target{{"http://a", 1}, {"http://b", 1}, {"http://c", 1}}
	first := map[string]string{}
	for i := 0; i < 300; i++ {
		q := req(ts...)
		q.Sticky = fmt.Sprint("user", i)
		u, _ := r.Pick(q, nil)
		again, _ := r.Pick(q, nil)
		if u != again {
			t.Fatalf("sticky value %s moved from %s to %s", q.Sticky, u, again)
		}
		first[q.Sticky] = u
	}
	h.Observe("n1", []Observation{{Key: HealthKey("c/s", "http://b"), Healthy: false, Certain: true, TTLms: 60000}})
	moved := 0
	for v, was := range first {
		q := req(ts...)
		q.Sticky = v
		u, _ := r.Pick(q, nil)
		if u == "http://b" {
			t.Fatal("picked an unhealthy upstream")
		}
		if was != "http://b" && u != was {
			moved++
		}
	}
	if moved != 0 {
		t.Fatalf("%d values of healthy upstreams moved", moved)
	}
}

func TestPassiveEjectionGrows(t *testing.T) {
	c := newClock()
	r := NewRegistry(Config{Now: c.now, BreakerMinRequests: 1000}, nil)
	q := req(Target{"http://a", 1}, Target{"http://b", 1})
	_, _ = r.Pick(q, nil)
	for i := 0; i < 3; i++ {
		r.Report("c/s", "http://a", ConnectFailed)
	}
	for i := 0; i < 10; i++ {
		if u, _ := r.Pick(q, nil); u != "http://b" {
			t.Fatalf("ejected upstream picked")
		}
	}
	c.add(1100 * time.Millisecond)
	for i := 0; i < 3; i++ {
		r.Report("c/s", "http://a", ServerError)
	}
	c.add(1100 * time.Millisecond) // the second ejection lasts 2s
	for i := 0; i < 10; i++ {
		if u, _ := r.Pick(q, nil); u != "http://b" {
			t.Fatalf("second ejection did not grow")
		}
	}
	c.add(time.Second)
	seen := false
	for i := 0; i < 4; i++ {
		if u, _ := r.Pick(q, nil); u == "http://a" {
			seen = true
		}
	}
	if !seen {
		t.Fatal("upstream not back after its ejection")
	}
}

func TestBreakerOpensAndHalfOpens(t *testing.T) {
	c := newClock()
	r := NewRegistry(Config{Now: c.now, EjectAfter: 1000}, nil)
	q := req(Target{"http://a", 1}, Target{"http://b", 1})
	_, _ = r.Pick(q, nil)
	for i := 0; i < 10; i++ {
		o := OK
		if i%2 == 1 {
			o = Failed
		}
		r.Report("c/s", "http://a", o)
	}
	for i := 0; i < 10; i++ {
		if u, _ := r.Pick(q, nil); u == "http://a" {
			t.Fatal("open circuit picked")
		}
	}
	c.add(5 * time.Second)
	probes := 0
	for i := 0; i < 10; i++ {
		if u, _ := r.Pick(q, nil); u == "http://a" {
			probes++
		}
	}
	if probes != 1 {
		t.Fatalf("half-open let %d probes through, want 1", probes)
	}
	r.Report("c/s", "http://a", OK)
	n := 0
	for i := 0; i < 10; i++ {
		if u, _ := r.Pick(q, nil); u == "http://a" {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("closed again: %d of 10 picks, want 5", n)
	}
}

func TestAllUnhealthy(t *testing.T) {
	h := NewHealth(nil)
	r := NewRegistry(Config{}, h)
	q := req(Target{"http://a", 1})
	h.Observe("n1", []Observation{{Key: HealthKey("c/s", "http://a"), Healthy: false, Certain: true, TTLms: 60000}})
	_, err := r.Pick(q, nil)
	var nh *NoHealthyError
	if !errors.As(err, &nh) {
		t.Fatalf("got %v, want NoHealthyError", err)
	}
	q.FailOpen = true
	if u, err := r.Pick(q, nil); err != nil || u != "http://a" {
		t.Fatalf("fail open: %q %v", u, err)
	}
	if _, err := r.Pick(q, map[string]bool{"http://a": true}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("all tried: %v", err)
	}
}

// The agreement rule: one observer whose checks time out (its CPU is
// saturated) does not take out an upstream the others see pass; a lone
// observer needs certainty; a majority takes it out.
func TestAgreement(t *testing.T) {
	c := newClock()
	h := NewHealth(c.now)
	k := HealthKey("c/s", "http://a")
	h.Observe("busy", []Observation{{Key: k, Healthy: false, Certain: false, TTLms: 3000}})
	if !h.Healthy(k) {
		t.Fatal("a lone observer timing out took it out")
	}
	h.Observe("n2", []Observation{{Key: k, Healthy: true, TTLms: 3000}})
	h.Observe("n3", []Observation{{Key: k, Healthy: true, TTLms: 3000}})
	if !h.Healthy(k) {
		t.Fatal("one saturated observer of three took it out")
	}
	h.Observe("busy", []Observation{{Key: k, Healthy: false, Certain: true, TTLms: 3000}})
	if !h.Healthy(k) {
		t.Fatal("one observer of three, even certain, took it out")
	}
	h.Observe("n2", []Observation{{Key: k, Healthy: false, Certain: true, TTLms: 3000}})
	if h.Healthy(k) {
		t.Fatal("a majority did not take it out")
	}
	c.add(4 * time.Second) // every report lapses
	h.Observe("n3", []Observation{{Key: k, Healthy: false, Certain: true, TTLms: 3000}})
	if h.Healthy(k) {
		t.Fatal("a lone certain observer did not take it out")
	}
	if !Agree(2, 1, 1) || Agree(3, 2, 0) || !Agree(0, 0, 0) {
		t.Fatal("Agree")
	}
}

func TestCheckerHysteresis(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	changed := make(chan struct{}, 16)
	c := NewChecker(nil, func() { changed <- struct{}{} })
	defer c.Close()
	c.Sync([]Check{{Key: "k", URL: srv.URL, Path: "/h", Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, HealthyAfter: 2, UnhealthyAfter: 3}})
	verdict := func() Observation { return c.Observations()[0] }
	fail.Store(true)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("never went unhealthy")
	}
	if o := verdict(); o.Healthy || !o.Certain {
		t.Fatalf("verdict %+v, want unhealthy and certain (a 500 is an answer)", o)
	}
	fail.Store(false)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("never came back")
	}
	if o := verdict(); !o.Healthy {
		t.Fatalf("verdict %+v", o)
	}
}

func TestCheckerRefusedIsCertainTimeoutIsNot(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := "http://" + ln.Addr().String()
	ln.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	c := NewChecker(nil, nil)
	defer c.Close()
	c.Sync([]Check{
		{Key: "refused", URL: refused, Path: "/", Interval: 20 * time.Millisecond, Timeout: 50 * time.Millisecond, HealthyAfter: 1, UnhealthyAfter: 1},
		{Key: "hang", URL: hang.URL, Path: "/", Interval: 60 * time.Millisecond, Timeout: 20 * time.Millisecond, HealthyAfter: 1, UnhealthyAfter: 1},
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := map[string]Observation{}
		for _, o := range c.Observations() {
			got[o.Key] = o
		}
		if !got["refused"].Healthy && !got["hang"].Healthy {
			if !got["refused"].Certain || got["hang"].Certain {
				t.Fatalf("refused %+v, timeout %+v", got["refused"], got["hang"])
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("verdicts %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTable(t *testing.T) {
	tb := NewTable([]Route{
		{Host: "*", Prefix: "/v2/", Strip: true, Service: "v2"},
		{Host: "*", Prefix: "/v2/admin", Service: "admin"},
		{Host: "api.example.com", Prefix: "/", Service: "api"},
		{Host: "*", Prefix: "/", Service: "root"},
	})
	for _, c := range []struct{ host, path, svc, out string }{
		{"x", "/v2/a/b", "v2", "/a/b"},
		{"x", "/v2", "v2", "/"},
		{"x", "/v2x", "root", "/v2x"},
		{"x", "/v2/admin/z", "admin", "/v2/admin/z"},
		{"API.example.com:8080", "/v2/a", "api", "/v2/a"},
		{"other", "/z", "root", "/z"},
	} {
		r, p, ok := tb.Match(c.host, c.path)
		if !ok || r.Service != c.svc || p != c.out {
			t.Errorf("Match(%q,%q) = %v %q %v, want %s %q", c.host, c.path, r.Service, p, ok, c.svc, c.out)
		}
	}
	if NewTable(tb.Routes()).Revision() != tb.Revision() || NewTable(nil).Revision() == tb.Revision() {
		t.Fatal("revision")
	}
}

// An observer whose checks time out (a saturated node: here its timeout
// is shorter than the upstream's answer time) goes unhealthy but
// uncertain; with another observer seeing the upstream pass, the shared
// verdict keeps it in rotation for everyone.
func TestSaturatedObserverDoesNotTakeHealthyUpstreamOut(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(60 * time.Millisecond)
	}))
	defer slow.Close()
	busy, fine := NewChecker(nil, nil), NewChecker(nil, nil)
	defer busy.Close()
	defer fine.Close()
	key := HealthKey("c/s", slow.URL)
	check := Check{Key: key, URL: slow.URL, Path: "/", Interval: 100 * time.Millisecond, HealthyAfter: 1, UnhealthyAfter: 2}
	saturated := check
	saturated.Timeout = 10 * time.Millisecond
	busy.Sync([]Check{saturated})
	check.Timeout = 90 * time.Millisecond
	fine.Sync([]Check{check})
	h := NewHealth(nil)
	r := NewRegistry(Config{}, h)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b := busy.Observations()[0]
		if !b.Healthy {
			if b.Certain {
				t.Fatalf("timeouts made a certain verdict: %+v", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the saturated observer never went unhealthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.Observe("busy", busy.Observations())
	if !h.Healthy(key) {
		t.Fatal("a lone uncertain observer took the upstream out")
	}
	h.Observe("fine", fine.Observations())
	if !h.Healthy(key) {
		t.Fatal("the saturated observer took a healthy upstream out")
	}
	if u, err := r.Pick(&Request{Service: "s", Key: "c/s", Targets: []Target{{slow.URL, 1}}}, nil); err != nil || u != slow.URL {
		t.Fatalf("pick: %q %v", u, err)
	}
}
