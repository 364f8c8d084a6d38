package node

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
)

// A limit "by": "ip" keys on the request's TCP peer address, port left
// out: each client address has a budget of its own.
func TestThrottleByIPKeysOnTheClientAddress(t *testing.T) {
	a := startAgent(t, testConfig(t, "ip1", func(c *config.Runtime) { c.BootstrapExpect = 1 }))
	ctx := context.Background()
	svc := dispatch.Service{Name: "perip", Type: dispatch.TypeHTTP, Upstream: "http://127.0.0.1:1",
		Limits: []dispatch.Limit{{Rate: 2, Per: "1h", By: "ip"}}}
	svc.Normalize()
	eventually(t, 30*time.Second, func() error {
		_, err := a.state.PutService(ctx, a.cfg.Cluster, svc, nil)
		return err
	})
	// The hour's window must not end midway.
	if left := time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)); left < 30*time.Second {
		time.Sleep(left + time.Second)
	}
	admit := func(addr string) int {
		r := httptest.NewRequest("GET", "/svc/perip/x", nil)
		r.RemoteAddr = addr
		release, err := a.thr.Admit(ctx, httptest.NewRecorder(), httpapi.NetRequest(r), nil, a.cfg.Cluster, "perip")
		var he *httpapi.Error
		switch {
		case err == nil:
			release()
			return 200
		case errors.As(err, &he):
			return he.Status
		}
		t.Fatalf("admit from %s: %v", addr, err)
		return 0
	}
	// The first admission waits for the definition and the manager.
	eventually(t, 30*time.Second, func() error {
		if code := admit("10.0.0.1:40000"); code != 200 {
			return fmt.Errorf("first request from 10.0.0.1: %d", code)
		}
		return nil
	})
	got := []int{admit("10.0.0.1:40001"), admit("10.0.0.1:40002"),
		admit("10.0.0.2:40000"), admit("10.0.0.2:40001"), admit("10.0.0.2:40002")}
	if fmt.Sprint(got) != "[200 429 200 200 429]" {
		t.Fatalf("2 an hour by ip: 10.0.0.1 then 10.0.0.2 answered %v, want [200 429 200 200 429]", got)
	}
}
