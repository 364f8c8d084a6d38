package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// pathUpstream answers name:path, counting requests.
func pathUpstream(t *testing.T, name string) (*httptest.Server, *atomic.Int64) {
	hits := &atomic.Int64{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, name+":"+r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s, hits
}

// innerService is what a runner can reach and the cluster never named:
// it counts every connection made to it.
func innerService(t *testing.T) (url string, conns *atomic.Int64) {
	conns = &atomic.Int64{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "inner")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s.URL, conns
}

// forgeHTTP sends hdr (binary, or JSON as an earlier build) straight to
// the runner at addr as tr, and returns the status and body, or the call's
// error.
func forgeHTTP(t *testing.T, tr *transport.Transport, addr string, hdr httpReqWire, jsonWire bool) (int, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := appendReq(nil, &hdr)
	if jsonWire {
		f, _ = json.Marshal(&hdr)
	}
	s, err := tr.StreamFirst(ctx, addr, MethodHTTP, f, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, err := s.Recv()
	if err != nil {
		return 0, "", err
	}
	status, _, err := decodeResp(first)
	if err != nil {
		t.Fatalf("response header: %v", err)
	}
	var body strings.Builder
	for {
		b, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return status, body.String(), nil
		}
		if err != nil {
			return status, body.String(), err
		}
		body.Write(b)
	}
}

// A member with a valid certificate that calls a runner's dispatch.http
// directly gets nothing proxied to an upstream the runner's cluster does
// not name for the service, however it spells or frames the request; the
// defined upstream, spelled otherwise, is proxied to as the definition
// spells it.
func TestClusterForgedHTTPReachesNoUndefinedUpstream(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	evil := c.transport("evil") // same CA: a certificate the runner accepts
	if err := evil.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = evil.Close() })
	legit, _ := pathUpstream(t, "legit")
	inner, conns := innerService(t)
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: legit.URL + "/base"})
	c.define(Service{Name: "job", Type: TypeExec, Command: []string{"true"}})
	addr := r1.tr.Addr().String()
	good := httpReqWire{Method: "GET", Path: "/p", Upstream: svc.Upstream, Service: "web", Cluster: testCluster,
		ServiceVersion: svc.Version}

	for _, cse := range []struct {
		name, want string
		json       bool
		forge      func(h *httpReqWire)
	}{
		{"another upstream", "names no such upstream", false, func(h *httpReqWire) { h.Upstream = inner }},
		{"another upstream, JSON", "names no such upstream", true, func(h *httpReqWire) { h.Upstream = inner }},
		{"another base path", "names no such upstream", false, func(h *httpReqWire) { h.Upstream = legit.URL + "/admin" }},
		{"a climbing base path", "names no such upstream", false,
			func(h *httpReqWire) { h.Upstream = legit.URL + "/base/../admin" }},
		{"https", "names no such upstream", false,
			func(h *httpReqWire) { h.Upstream = strings.Replace(svc.Upstream, "http:", "https:", 1) }},
		{"userinfo", "names no such upstream", false,
			func(h *httpReqWire) { h.Upstream = strings.Replace(svc.Upstream, "//", "//u:p@", 1) }},
		{"a query", "names no such upstream", false, func(h *httpReqWire) { h.Upstream += "?x=1" }},
		{"another cluster", `not cluster "c2"`, false, func(h *httpReqWire) { h.Cluster = "c2" }},
		{"unknown service", "no such service", false, func(h *httpReqWire) { h.Service, h.ServiceVersion = "nope", 0 }},
		{"an exec service", "exec service", false, func(h *httpReqWire) { h.Service, h.ServiceVersion = "job", 0 }},
		{"not a name", "not a service name", false, func(h *httpReqWire) { h.Service = "../web" }},
		{"no service (earlier build)", "no http service", true,
			func(h *httpReqWire) { h.Service, h.Cluster, h.ServiceVersion, h.Upstream = "", "", 0, inner }},
	} {
		h := good
		cse.forge(&h)
		status, body, err := forgeHTTP(t, evil, addr, h, cse.json)
		if remoteCode(err) != codeRefused || !strings.Contains(err.Error(), cse.want) {
			t.Errorf("%s: got %d %q %v, want code %s naming %q", cse.name, status, body, err, codeRefused, cse.want)
		}
		if strings.Contains(fmt.Sprint(err), "u:p") {
			t.Errorf("%s: the refusal shows the upstream's userinfo: %v", cse.name, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the runner connected %d times to an upstream the cluster never named", n)
	}

	// What the cluster defines is proxied, from any caller and however
	// the upstream is spelled (to the definition's own URL); a gateway of
	// an earlier build, which names no service, still gets it.
	respelled := strings.Replace(svc.Upstream, "http://", "HTTP://", 1) + "/"
	legacy := good
	legacy.Service, legacy.Cluster, legacy.ServiceVersion = "", "", 0
	for name, h := range map[string]httpReqWire{"as sent": good, "respelled": {Method: "GET", Path: "/p",
		Upstream: respelled, Service: "web", ServiceVersion: svc.Version}, "earlier build": legacy} {
		if status, body, err := forgeHTTP(t, evil, addr, h, name == "earlier build"); err != nil || status != 200 ||
			body != "legit:/base/p" {
			t.Errorf("%s: %d %q %v", name, status, body, err)
		}
	}
	rec := httptest.NewRecorder()
	if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/q"); err != nil ||
		rec.Body.String() != "legit:/base/q" {
		t.Fatalf("through gw: %v %d %q", err, rec.Code, rec.Body.String())
	}

	// A gateway whose copy names an upstream the state does not (an
	// older build's definition, a bug) is told so: nothing is proxied.
	bad := svc
	bad.Upstream = inner
	err := gw.d.ProxyHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, bad, "/")
	if !errors.Is(err, ErrProxyRefused) || !strings.Contains(err.Error(), "GET /v1/services/web") {
		t.Fatalf("gateway with a wrong copy: %v", err)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the runner connected %d times to an upstream the cluster never named", n)
	}
}

// A definition rewritten while a request is routed: the runner answers
// service_changed; the gateway reads it again and retries a request
// without a body, and tells the client to retry one with a body.
func TestClusterHTTPDefinitionChangedInFlight(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	a, aHits := pathUpstream(t, "a")
	b, bHits := pathUpstream(t, "b")
	v1 := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: a.URL})
	rec := httptest.NewRecorder()
	if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, v1, "/"); err != nil ||
		rec.Body.String() != "a:/" {
		t.Fatalf("v1: %v %q", err, rec.Body.String())
	}
	v2 := v1
	v2.Upstreams = []Upstream{{URL: b.URL}}
	v2.Upstream = ""
	v2 = c.define(v2)
	r1.d.defs.forget("web") // as defCacheTTL after the rewrite

	old := httpReqWire{Method: "GET", Path: "/", Upstream: a.URL, Service: "web", Cluster: testCluster,
		ServiceVersion: v1.Version}
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), old, false); remoteCode(err) != codeChanged ||
		!strings.Contains(err.Error(), "no longer names") {
		t.Fatalf("routed with v1: %v", err)
	}
	forged := old
	forged.ServiceVersion = v2.Version // claims the new version, names the old upstream
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), forged, false); remoteCode(err) != codeRefused {
		t.Fatalf("old upstream under the new version: %v", err)
	}

	before := aHits.Load()
	rec = httptest.NewRecorder()
	if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, v1, "/g"); err != nil ||
		rec.Body.String() != "b:/g" {
		t.Fatalf("GET with the old copy, read again: %v %q", err, rec.Body.String())
	}
	bBefore := bHits.Load()
	req := httptest.NewRequest(http.MethodPost, "/x", strings.NewReader("body"))
	err := gw.d.ProxyHTTP(httptest.NewRecorder(), req, testCluster, v1, "/p")
	if !errors.Is(err, ErrServiceChanged) || !strings.Contains(err.Error(), "Retry") {
		t.Fatalf("POST with the old copy: %v", err)
	}
	if aHits.Load() != before || bHits.Load() != bBefore {
		t.Fatalf("upstream requests a %d→%d, b %d→%d: the refused ones reached an upstream",
			before, aHits.Load(), bBefore, bHits.Load())
	}

	// Deleted since: service_changed too, then (read again) not found.
	if err := c.store.Delete(context.Background(), testCluster, ServiceKey("web"), nil); err != nil {
		t.Fatal(err)
	}
	r1.d.defs.forget("web")
	old.ServiceVersion, old.Upstream = v2.Version, b.URL
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), old, false); remoteCode(err) != codeChanged ||
		!strings.Contains(err.Error(), "no longer defines") {
		t.Fatalf("deleted: %v", err)
	}
}

// While a runner cannot read its cluster's state, it checks against its
// last copy for StaleServeFor after reading it, and answers unverified
// after that (the gateway then says so).
func TestClusterHTTPRunnerWithoutItsState(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	up, _ := pathUpstream(t, "up")
	inner, conns := innerService(t)
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	get := func() (*httptest.ResponseRecorder, error) {
		rec := httptest.NewRecorder()
		return rec, gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/")
	}
	if rec, err := get(); err != nil || rec.Body.String() != "up:/" {
		t.Fatalf("with quorum: %v", err)
	}
	r1.store.dead.Store(true) // r1's reads fail; its transport is up
	readAgo := func(d time.Duration) {
		r1.d.defs.mu.Lock()
		e := r1.d.defs.m["web"]
		e.at = time.Now().Add(-d)
		r1.d.defs.m["web"] = e
		r1.d.defs.mu.Unlock()
	}
	readAgo(2 * defCacheTTL) // past the TTL: a read is tried, and fails
	if rec, err := get(); err != nil || rec.Body.String() != "up:/" {
		t.Fatalf("without quorum, copy read 2s ago: %v %q", err, rec.Body.String())
	}
	h := httpReqWire{Method: "GET", Path: "/", Upstream: inner, Service: "web", ServiceVersion: svc.Version}
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), h, false); remoteCode(err) != codeRefused {
		t.Fatalf("an undefined upstream, checked against the last copy: %v", err)
	}
	h.ServiceVersion++ // newer than the copy: it cannot tell
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), h, false); remoteCode(err) != codeUnverified {
		t.Fatalf("a request newer than the last copy: %v", err)
	}

	readAgo(testConfig().StaleServeFor + time.Second)
	_, err := get()
	if !errors.Is(err, ErrUnverified) || !strings.Contains(err.Error(), "could not read the definition") {
		t.Fatalf("copy older than StaleServeFor: %v", err)
	}

	// A runner that never read the definition uses the node's last known
	// state (Config.StaleDefinitions), within the same bound.
	var asOf atomic.Int64
	r2 := c.add("r2", true, func(cfg *Config) {
		cfg.StaleDefinitions = func(ctx context.Context, cluster, name string) (Service, bool, time.Time, error) {
			if cluster != testCluster || name != "web" {
				return Service{}, false, time.Now(), nil
			}
			return svc, true, time.Unix(0, asOf.Load()), nil
		}
	})
	r2.store.dead.Store(true)
	asOf.Store(time.Now().Add(-time.Minute).UnixNano())
	h.Upstream, h.ServiceVersion = up.URL, svc.Version
	if st, body, err := forgeHTTP(t, gw.tr, r2.tr.Addr().String(), h, false); err != nil || st != 200 || body != "up:/" {
		t.Fatalf("last known state a minute old: %d %q %v", st, body, err)
	}
	h.Upstream = inner
	if _, _, err := forgeHTTP(t, gw.tr, r2.tr.Addr().String(), h, false); remoteCode(err) != codeRefused {
		t.Fatalf("an undefined upstream, checked against the last known state: %v", err)
	}
	asOf.Store(time.Now().Add(-testConfig().StaleServeFor).UnixNano())
	h.Upstream = up.URL
	if _, _, err := forgeHTTP(t, gw.tr, r2.tr.Addr().String(), h, false); remoteCode(err) != codeUnverified {
		t.Fatalf("last known state older than StaleServeFor: %v", err)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the runner connected %d times to an upstream the cluster never named", n)
	}
}

// A binary header frame with the service fields round-trips; a runner of
// the build before them refuses it as trailing bytes, which the gateway
// takes as an earlier build (and sends it JSON, whose extra fields it
// ignores).
func TestHTTPWireServiceFields(t *testing.T) {
	in := sampleReq()
	in.Service, in.Cluster, in.ServiceVersion = "web", "c1", 1<<40
	b := appendReq(nil, &in)
	got, _, err := decodeReq(b)
	if err != nil || got.Service != "web" || got.Cluster != "c1" || got.ServiceVersion != 1<<40 {
		t.Fatalf("%+v %v", got, err)
	}
	for i := 0; i < len(b); i++ {
		if _, _, err := decodeReq(b[:i]); !errors.Is(err, errWire) {
			t.Fatalf("prefix of %d/%d bytes: %v", i, len(b), err)
		}
	}
	// The previous build's runner: flag bit 1 unknown, the fields left over.
	prev := transport.Errorf(codeInvalid, "request header frame: %v", fmt.Errorf("%w: %d trailing bytes", errWire, 12))
	if !oldWire(prev) {
		t.Fatalf("not taken for an earlier build: %v", prev)
	}
	var legacy httpReqWire
	j, _ := json.Marshal(&in)
	if err := json.Unmarshal(j, &legacy); err != nil || legacy.Service != "web" {
		t.Fatalf("JSON: %+v %v", legacy, err)
	}
}

// The check of a request whose definition the runner has cached (the
// steady state) allocates nothing: it is on every remote proxied request.
func TestVerifyHTTPCachedAllocatesNothing(t *testing.T) {
	e := newLocal(t, nil)
	svc := defineIn(t, e.store, Service{Name: "web", Type: TypeHTTP,
		Upstreams: []Upstream{{URL: "http://127.0.0.1:9/a"}, {URL: "http://127.0.0.1:9/b"}}})
	h := httpReqWire{Method: "GET", Path: "/", Upstream: svc.Upstreams[1].URL, Service: "web", Cluster: testCluster,
		ServiceVersion: svc.Version}
	ctx := context.Background()
	if up, err := e.d.verifyHTTP(ctx, "gw", &h); err != nil || up != h.Upstream {
		t.Fatalf("%q %v", up, err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := e.d.verifyHTTP(ctx, "gw", &h); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per check of a cached definition", n)
	}
}

// A frame that names no service (an earlier build's gateway) costs a read
// of the service list per upstream and defCacheTTL, not per request.
func TestClusterHTTPEarlierBuildFramesAreCached(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	r1 := c.add("r1", true, nil)
	up, _ := pathUpstream(t, "up")
	inner, conns := innerService(t)
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	h := httpReqWire{Method: "GET", Path: "/", Upstream: strings.ToUpper(svc.Upstream[:4]) + svc.Upstream[4:]}
	if st, body, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), h, true); err != nil || st != 200 || body != "up:/" {
		t.Fatalf("first: %d %q %v", st, body, err)
	}
	r1.d.legacy.mu.Lock()
	hit := r1.d.legacy.m[h.Upstream]
	r1.d.legacy.m[h.Upstream] = legacyHit{up: hit.up, at: time.Now()} // the next request is within the TTL
	r1.d.legacy.mu.Unlock()
	if hit.up != svc.Upstream {
		t.Fatalf("cached %q for %q, want the definition's %q", hit.up, h.Upstream, svc.Upstream)
	}
	r1.store.dead.Store(true) // a second list would fail
	if st, body, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), h, true); err != nil || st != 200 || body != "up:/" {
		t.Fatalf("cached: %d %q %v", st, body, err)
	}
	h.Upstream = inner
	if _, _, err := forgeHTTP(t, gw.tr, r1.tr.Addr().String(), h, true); remoteCode(err) != codeUnverified {
		t.Fatalf("an upstream not cached, list unreadable: %v", err)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the runner connected %d times to an upstream the cluster never named", n)
	}
}
