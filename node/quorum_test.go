package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
)

// TestMinoritySaysNoQuorum: with two of three voters gone, a write or a
// read through the voter left, or through a node of another cluster that
// forwards to it, is answered 503 no_quorum with Retry-After and a
// message that says there is no quorum and what to do, never dragonboat's
// wording ("specified timeout value is too small", before).
func TestMinoritySaysNoQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node Raft cluster")
	}
	a1 := startAgent(t, testConfig(t, "q1", nil))
	join := []string{a1.cfg.BindAddr}
	agents := []*Agent{a1,
		startAgent(t, testConfig(t, "q2", func(c *config.Runtime) { c.Join = join })),
		startAgent(t, testConfig(t, "q3", func(c *config.Runtime) { c.Join = join }))}
	other := startAgent(t, testConfig(t, "o1", func(c *config.Runtime) { c.Join = join; c.Cluster = "other" }))
	svc := map[string]any{"name": "s", "type": "exec", "command": []string{"true"}}
	eventually(t, 30*time.Second, func() error {
		_, err := do("PUT", a1.HTTPAddr(), "/v1/services/s", svc, nil)
		return err
	})
	for _, a := range agents {
		eventually(t, 20*time.Second, func() error {
			var st httpapi.Status
			if _, err := do("GET", a.HTTPAddr(), "/v1/status", nil, &st); err != nil {
				return err
			}
			if len(st.Groups) == 0 || !st.Groups[0].Local || st.Groups[0].Leader == "" {
				return fmt.Errorf("%s: %+v", a.cfg.NodeName, st.Groups)
			}
			return nil
		})
	}
	agents[0].Shutdown()
	agents[1].Shutdown()
	body, _ := json.Marshal(svc)
	for _, c := range []struct{ via, method, path string }{
		{agents[2].HTTPAddr(), "PUT", "/v1/services/s"},
		{agents[2].HTTPAddr(), "GET", "/v1/services/s"},
		{other.HTTPAddr(), "PUT", "/v1/services/s?cluster=default"},
	} {
		req, _ := http.NewRequest(c.method, "http://"+c.via+c.path, bytes.NewReader(body))
		start := time.Now()
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("%s %s via %s: %d after %s: %s", c.method, c.path, c.via, resp.StatusCode, time.Since(start).Round(time.Millisecond), msg)
		var e struct{ Code, Error string }
		_ = json.Unmarshal(msg, &e)
		if resp.StatusCode != 503 || e.Code != "no_quorum" || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(e.Error, "no quorum for cluster default") || !strings.Contains(e.Error, "majority of its voters") {
			t.Errorf("%s %s: %d %s; want 503 no_quorum saying so", c.method, c.path, resp.StatusCode, msg)
		}
		for _, d := range []string{"specified timeout value is too small", "invalid deadline", "request dropped", "shard not"} {
			if strings.Contains(string(msg), d) {
				t.Errorf("%s %s: the answer carries dragonboat's %q", c.method, c.path, d)
			}
		}
	}
}
