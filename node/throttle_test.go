package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/throttle"
	"github.com/meshgw/meshgw/transport"
)

// throttle.ask and throttle.usage answer nodes of the manager's own
// cluster only: a member of another cluster is refused.
func TestThrottleRPCsOnlyForTheOwnCluster(t *testing.T) {
	red := startAgent(t, testConfig(t, "r1", func(c *config.Runtime) { c.Cluster = "red"; c.BootstrapExpect = 1 }))
	blue := startAgent(t, testConfig(t, "b1", func(c *config.Runtime) {
		c.Cluster = "blue"
		c.BootstrapExpect = 1
		c.Join = []string{red.cfg.BindAddr}
	}))
	eventually(t, 10*time.Second, func() error {
		for _, m := range red.gossip.Members(gossip.Filter{}) {
			if m.Name == "b1" && m.Status == gossip.StatusAlive {
				return nil
			}
		}
		return errors.New("red does not see b1 alive yet")
	})
	for _, method := range []string{throttle.Method, throttle.UsageMethod} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := blue.rpc.Call(ctx, red.cfg.RPCAddr, method, []byte(`{"node":"b1"}`))
		cancel()
		var re *transport.RemoteError
		if !errors.As(err, &re) || re.Code != "forbidden" {
			t.Fatalf("%s from a node of another cluster: %v, want forbidden", method, err)
		}
	}
	// Its own cluster's manager answers it (in process: r1 leads red).
	eventually(t, 20*time.Second, func() error {
		if red.thr.mgr.Active() == 0 {
			return errors.New("red's throttle manager not active yet")
		}
		return nil
	})
	if _, err := red.thr.Throttles(context.Background(), "", ""); err != nil {
		t.Fatalf("usage on red: %v", err)
	}
}
