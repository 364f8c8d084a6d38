package dispatch

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/meshgw/meshgw/transport"
	"github.com/valyala/fasthttp"
)

// An earlier build's runner reads JSON header frames only and refuses a
// binary one as malformed: a gateway of this build must resend in JSON, so
// a rolling upgrade that starts with the gateways serves every request.
func TestProxyThroughRunnerOfAnEarlierBuild(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	}))
	defer up.Close()
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	old := c.transport("old")
	var binary, legacy atomic.Int32
	old.HandleStream(MethodHTTP, func(ctx context.Context, s *transport.Stream) error {
		f, err := s.Recv()
		if err != nil {
			return err
		}
		var hdr httpReqWire
		if err := json.Unmarshal(f, &hdr); err != nil { // as the earlier build did
			binary.Add(1)
			return transport.Errorf(codeInvalid, "malformed request header: %v", err)
		}
		legacy.Add(1)
		resp, err := http.Get(hdr.Upstream + hdr.Path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		h, _ := json.Marshal(httpRespWire{Status: resp.StatusCode, Header: http.Header{}})
		if err := s.Send(h); err != nil {
			return err
		}
		return s.Send(b)
	})
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Close() })
	c.runners.set(testCluster, Runner{Name: "old", RPCAddr: old.Addr().String(), Roles: []string{RoleRunner}})

	svc := Service{Name: "web", Type: TypeHTTP, Upstream: up.URL}
	for i := 0; i < 3; i++ {
		rec := httptest.NewRecorder()
		if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/p"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if rec.Code != 200 || rec.Body.String() != "hello /p" {
			t.Fatalf("request %d: %d %q", i, rec.Code, rec.Body.String())
		}
	}
	if binary.Load() != 1 || legacy.Load() != 3 {
		t.Fatalf("the old runner got %d binary and %d JSON frames, want 1 and 3", binary.Load(), legacy.Load())
	}
}

// A runner of a build without lanes (its transport refuses a lane's open,
// as LanesPerPeer 0 does) is still served, on a stream per request, while
// a runner with lanes beside it gets its requests on one reused lane.
func TestProxyThroughRunnerWithoutLanes(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	}))
	defer up.Close()
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("new", true, nil)
	c.tmod = func(tc *transport.Config) { tc.LanesPerPeer = 0 }
	c.add("old", true, nil)
	c.tmod = nil
	svc := c.define(Service{Name: "web", Type: TypeHTTP, Upstream: up.URL})
	for i := 0; i < 6; i++ { // round-robin: 3 each
		rec := httptest.NewRecorder()
		if err := gw.d.ProxyHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil), testCluster, svc, "/p"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if rec.Code != 200 || rec.Body.String() != "hello /p" {
			t.Fatalf("request %d: %d %q", i, rec.Code, rec.Body.String())
		}
	}
	if st := gw.tr.LaneStats(); st.Opened != 1 || st.Reused != 2 {
		t.Fatalf("lanes %+v: want one lane, to the new runner, reused twice", st)
	}
}

// The native hop (ProxyHop) falls back to JSON header frames too, with the
// headers of fasthttp's request.
func TestProxyHopThroughRunnerOfAnEarlierBuild(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello "+r.URL.Path)
	}))
	defer up.Close()
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	old := c.transport("old")
	var binary, legacy atomic.Int32
	var custom atomic.Value
	old.HandleStream(MethodHTTP, func(ctx context.Context, s *transport.Stream) error {
		f, err := s.Recv()
		if err != nil {
			return err
		}
		var hdr httpReqWire
		if err := json.Unmarshal(f, &hdr); err != nil {
			binary.Add(1)
			return transport.Errorf(codeInvalid, "malformed request header: %v", err)
		}
		legacy.Add(1)
		custom.Store(hdr.Header.Get("X-Custom"))
		h, _ := json.Marshal(httpRespWire{Status: 200, Header: http.Header{"Content-Length": {"8"}}})
		if err := s.Send(h); err != nil {
			return err
		}
		return s.Send([]byte("hello " + hdr.Path))
	})
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Close() })
	c.runners.set(testCluster, Runner{Name: "old", RPCAddr: old.Addr().String(), Roles: []string{RoleRunner}})
	svc := Service{Name: "web", Type: TypeHTTP, Upstream: up.URL}
	for i := 0; i < 3; i++ {
		var rc fasthttp.RequestCtx
		rc.Request.Header.SetMethod("GET")
		rc.Request.SetRequestURI("/svc/web/p")
		rc.Request.Header.Set("X-Custom", "kept")
		served, err := gw.d.ProxyHop(context.Background(), &rc, testCluster, svc, HopRequest{Path: "/p"})
		if !served || err != nil || rc.Response.StatusCode() != 200 || string(rc.Response.Body()) != "hello /p" {
			t.Fatalf("request %d: %v %v: %d %q", i, served, err, rc.Response.StatusCode(), rc.Response.Body())
		}
	}
	if binary.Load() != 1 || legacy.Load() != 3 || custom.Load() != "kept" {
		t.Fatalf("the old runner got %d binary and %d JSON frames (X-Custom %v), want 1 and 3",
			binary.Load(), legacy.Load(), custom.Load())
	}
}
