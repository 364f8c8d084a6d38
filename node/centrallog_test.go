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
