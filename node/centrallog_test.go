package node

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/centrallog"
	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/node/config"
)

// Four agents in one process: a request proxied through one node is in
// the log read from another, and from the node without a replica of the
// log shard (its query goes to the active logger); the entry says who
// served it.
func TestCentralLogInProcess(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer up.Close()
	a1 := startAgent(t, testConfig(t, "a1", nil))
	join := []string{a1.cfg.BindAddr}
	a2 := startAgent(t, testConfig(t, "a2", func(c *config.Runtime) { c.Join = join }))
	startAgent(t, testConfig(t, "a3", func(c *config.Runtime) { c.Join = join }))
	a4 := startAgent(t, testConfig(t, "a4", func(c *config.Runtime) { c.Join = join; c.Roles = []string{"gateway"} }))
	def := fmt.Sprintf(`{"name":"web","type":"http","upstream":%q}`, up.URL)
	eventually(t, 30*time.Second, func() error {
		req, _ := http.NewRequest("PUT", "http://"+a1.HTTPAddr()+"/v1/services/web", strings.NewReader(def))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("put: %d", resp.StatusCode)
		}
		return nil
	})
	eventually(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + a2.HTTPAddr() + "/svc/web/in-process")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("proxy: %d", resp.StatusCode)
		}
		return nil
	})
	for _, a := range []*Agent{a1, a4} {
		eventually(t, 30*time.Second, func() error {
			var es []centrallog.Entry
			if code, err := getJSON(a.HTTPAddr(), "/v1/logs?service=web&kind=http", &es); err != nil || code != 200 {
				return fmt.Errorf("logs on %s: %d %v", a.cfg.NodeName, code, err)
			}
			for _, e := range es {
				if e.Path == "/svc/web/in-process" && e.Node == "a2" && e.Status == 200 && e.BytesOut == 2 && e.Cluster == "default" {
					return nil
				}
			}
			return fmt.Errorf("%s lists %+v", a.cfg.NodeName, es)
		})
	}
	if st := a4.clog.Stats(); st.Replica || st.Active {
		t.Fatalf("the gateway-only node holds a log replica or is active: %+v", st)
	}
}

// The log shard never lands in the state group's dragonboat partition
// (its step, commit and apply worker and its log DB shard: the ID modulo
// 16), where every state write would wait behind the log's batches. The
// legacy derivation always did: the test shows why the ID moved.
func TestLogShardIsPlacedApartFromTheStateGroup(t *testing.T) {
	for _, cluster := range []string{"default", "dc1", "eu-west", "a", "prod.42", "Z_9"} {
		state := consensus.ShardID(cluster)
		if legacy := centrallog.LegacyShardID(cluster); legacy%16 != state%16 {
			t.Errorf("%s: the legacy log shard ID is in partition %d, the state group in %d: "+
				"the collision the ID change is for is gone, revisit ShardID", cluster, legacy%16, state%16)
		}
		id := centrallog.ShardID(cluster, state)
		for _, n := range []uint64{2, 4, 8, 16} {
			if id%n == state%n {
				t.Errorf("%s: log shard %d and state group %d share partition %d of %d", cluster, id, state, id%n, n)
			}
		}
		if id == 0 || id == state {
			t.Errorf("%s: log shard ID %d", cluster, id)
		}
	}
}
