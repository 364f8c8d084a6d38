package test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// A member of another cluster, with a valid certificate of the mesh, that
// calls a runner's dispatch.http directly naming an upstream of its choice
// under a defined service's name gets nothing proxied: the target never
// sees a connection. The upstream the cluster defines is still served.
func TestForgedHTTPReachesNoUndefinedUpstream(t *testing.T) {
	n1, _, forger := foreignGateway(t)
	legit := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "legit")
	}))
	defer legit.Close()
	var conns atomic.Int64
	inner := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "inner")
	}))
	inner.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	inner.Start()
	defer inner.Close()
	putService(t, n1, map[string]any{"name": "web", "type": "http", "upstream": legit.URL})

	// forge sends a JSON header frame (what every build reads) and returns
	// the response's status, or the call's error.
	forge := func(hdr map[string]any) (int, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, _ := json.Marshal(hdr)
		s, err := forger.StreamFirst(ctx, n1.RPC, "dispatch.http", b, true)
		if err != nil {
			return 0, err
		}
		defer s.Close()
		f, err := s.Recv()
		if err != nil {
			return 0, err
		}
		var resp struct{ Status int }
		if err := json.Unmarshal(f, &resp); err != nil {
			return 0, err
		}
		return resp.Status, nil
	}
	for name, hdr := range map[string]map[string]any{
		"named service": {"method": "GET", "path": "/", "upstream": inner.URL, "service": "web",
			"cluster": "default"},
		"earlier build's frame": {"method": "GET", "path": "/", "upstream": inner.URL},
		"its own cluster":       {"method": "GET", "path": "/", "upstream": legit.URL, "service": "web", "cluster": "other"},
	} {
		status, err := forge(hdr)
		var re *transport.RemoteError
		if !errors.As(err, &re) || re.Code != "refused" {
			t.Errorf("%s: %d %v, want code refused", name, status, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("n1 connected %d times to an upstream its cluster never named", n)
	}
	log, _ := os.ReadFile(n1.LogPath)
	if !strings.Contains(string(log), "refused to proxy to an upstream this runner's cluster does not define") {
		t.Error("n1 did not log the refusals")
	}
	if status, err := forge(map[string]any{"method": "GET", "path": "/", "upstream": legit.URL, "service": "web",
		"cluster": "default"}); err != nil || status != 200 {
		t.Fatalf("the defined upstream, sent directly: %d %v", status, err)
	}
}
