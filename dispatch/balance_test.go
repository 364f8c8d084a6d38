package dispatch

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshgw/meshgw/dispatch/upstreams"
)

func namedUpstream(name string) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte(name+":"), b...))
	}))
}

func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// Weighted upstreams, balanced by the gateway, through a remote runner
// and in place; a dead upstream costs no failed request: the connection
// was refused before anything was sent, so another upstream takes it,
// POST included.
func TestProxyWeightsAndRetriesDeadUpstream(t *testing.T) {
	for _, mode := range []string{"remote", "local"} {
		t.Run(mode, func(t *testing.T) {
			c := newTCluster(t)
			gw := c.add("gw", mode == "local", nil)
			if mode == "remote" {
				c.add("r1", true, nil)
			}
			a, b := namedUpstream("a"), namedUpstream("b")
			defer a.Close()
			defer b.Close()
			svc := c.define(Service{Name: "web", Type: TypeHTTP,
				Upstreams: []Upstream{{URL: a.URL, Weight: 9}, {URL: b.URL, Weight: 1}}})
			n := map[string]int{}
			for i := 0; i < 100; i++ {
				rec := httptest.NewRecorder()
				if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				n[strings.TrimSuffix(rec.Body.String(), ":")]++
			}
			if n["a"] != 90 || n["b"] != 10 {
				t.Fatalf("split %v, want 90/10", n)
			}

			svc.Upstreams = []Upstream{{URL: deadURL(t), Weight: 5}, {URL: a.URL, Weight: 1}}
			svc = c.define(svc) // a remote runner proxies only to what the state names
			for i := 0; i < 20; i++ {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader([]byte("hi")))
				if err := gw.d.ProxyHTTP(rec, req, testCluster, svc, "/"); err != nil {
					t.Fatal(err)
				}
				if rec.Code != 200 || rec.Body.String() != "a:hi" {
					t.Fatalf("request %d: %d %q", i, rec.Code, rec.Body.String())
				}
			}

			// Every upstream dead: the upstream failure is the answer.
			svc.Upstreams = []Upstream{{URL: deadURL(t)}, {URL: deadURL(t)}}
			svc = c.define(svc)
			rec := httptest.NewRecorder()
			if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/"); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "upstream_unreachable") {
				t.Fatalf("%d %q", rec.Code, rec.Body.String())
			}
		})
	}
}

// An upstream the shared health says is out gets nothing; none in
// rotation is ErrNoHealthyUpstream, or every upstream with fail_open.
func TestProxySharedHealth(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", true, nil)
	a, b := namedUpstream("a"), namedUpstream("b")
	defer a.Close()
	defer b.Close()
	svc := Service{Name: "web", Type: TypeHTTP, Upstreams: []Upstream{{URL: a.URL}, {URL: b.URL}}, Health: &Health{Path: "/"}}
	out := func(urls ...string) {
		var obs []upstreams.Observation
		for _, u := range urls {
			obs = append(obs, upstreams.Observation{Key: upstreams.HealthKey(testCluster+"/web", u), Healthy: false, Certain: true, TTLms: 60000})
		}
		gw.d.Upstreams().Health().Observe("observer", obs)
	}
	out(a.URL)
	for i := 0; i < 10; i++ {
		rec := httptest.NewRecorder()
		if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/"); err != nil {
			t.Fatal(err)
		}
		if rec.Body.String() != "b:" {
			t.Fatalf("got %q from an upstream out of rotation", rec.Body.String())
		}
	}
	out(a.URL, b.URL)
	err := gw.d.ProxyHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/")
	if err == nil || !strings.Contains(err.Error(), "no upstream is in rotation") {
		t.Fatalf("got %v", err)
	}
	svc.FailOpen = true
	rec := httptest.NewRecorder()
	if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/"); err != nil || rec.Code != 200 {
		t.Fatalf("fail open: %v %d", err, rec.Code)
	}
}

// A service whose only upstream is the one entry of "upstreams" (nothing
// to balance) is proxied to it, through a remote runner and in place.
func TestProxySingleEntryOfUpstreams(t *testing.T) {
	for _, mode := range []string{"remote", "local"} {
		t.Run(mode, func(t *testing.T) {
			c := newTCluster(t)
			gw := c.add("gw", mode == "local", nil)
			if mode == "remote" {
				c.add("r1", true, nil)
			}
			a := namedUpstream("a")
			defer a.Close()
			svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstreams: []Upstream{{URL: a.URL}}})
			rec := httptest.NewRecorder()
			if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/"); err != nil ||
				rec.Body.String() != "a:" {
				t.Fatalf("%v %d %q", err, rec.Code, rec.Body.String())
			}
		})
	}
}
