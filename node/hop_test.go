package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/node/config"
)

// TestGatewayHopIsNative: a gateway-only node's data plane sends a plain
// /svc/ call to the runner from fasthttp's request as it is
// (dispatch.ProxyHop, counted in HopsNative), and the rules hold on that
// path: the meshgw credential (either header) never reaches the upstream,
// a hop-by-hop header named by Connection is dropped, other headers, the
// query, a body of declared length and the upstream's answer pass whole.
func TestGatewayHopIsNative(t *testing.T) {
	type seenReq struct{ auth, token, custom, hop, query, sum string }
	var mu sync.Mutex
	var seen []seenReq
	big := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB, handed to fasthttp as a stream
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = w.Write(big)
			return
		}
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		mu.Lock()
		seen = append(seen, seenReq{r.Header.Get("Authorization"), r.Header.Get("X-Meshgw-Token"),
			r.Header.Get("X-Custom"), r.Header.Get("X-Hop"), r.URL.RawQuery, hex.EncodeToString(sum[:])})
		mu.Unlock()
		w.Header().Set("X-Upstream", "1")
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, len(b))
	}))
	defer up.Close()
	run := startAgent(t, testConfig(t, "r1", func(c *config.Runtime) {
		c.ACL, c.BootstrapExpect = true, 1
	}))
	gw := startAgent(t, testConfig(t, "g1", func(c *config.Runtime) {
		c.ACL, c.BootstrapExpect = true, 1
		c.Roles = []string{"gateway"}
		c.Join = []string{run.cfg.BindAddr}
		c.ProxyAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}))
	api := "http://" + run.HTTPAddr()
	var secret string
	eventually(t, 60*time.Second, func() error {
		code, body := call(t, "POST", api+"/v1/acl/bootstrap", nil)
		if code != 200 {
			return fmt.Errorf("bootstrap: %d %s", code, body)
		}
		var b struct {
			Secret string `json:"secret_id"`
		}
		err := json.Unmarshal([]byte(body), &b)
		secret = b.Secret
		return err
	})
	def := map[string]any{"name": "web", "type": "http", "upstream": up.URL}
	if code, body := call(t, "PUT", api+"/v1/services/web", def, bearerHdr(secret)...); code != 200 {
		t.Fatalf("put web: %d %s", code, body)
	}
	dp := "http://" + gw.ProxyAddr()
	send := func(method string, body []byte, cred ...string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, dp+"/svc/web/a/b?q=1", bytes.NewReader(body))
		for i := 0; i+1 < len(cred); i += 2 {
			req.Header.Set(cred[i], cred[i+1])
		}
		req.Header.Set("X-Custom", "kept")
		req.Header.Set("Connection", "X-Hop")
		req.Header.Set("X-Hop", "dropped")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			return 0, err.Error(), nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	// Until gossip has told the gateway of the runner.
	eventually(t, 30*time.Second, func() error {
		if code, body, _ := send("GET", nil, bearerHdr(secret)...); code != 200 {
			return fmt.Errorf("GET through the gateway: %d %s", code, body)
		}
		return nil
	})
	mu.Lock()
	seen = nil
	mu.Unlock()
	before := gw.disp.Stats().HopsNative
	upload := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: several frames
	sum := sha256.Sum256(upload)
	creds := [][]string{bearerHdr(secret), {"X-Meshgw-Token", secret}}
	for _, cred := range creds {
		code, body, h := send("GET", nil, cred...)
		if code != 200 || body != "GET /a/b 0" || h.Get("X-Upstream") != "1" {
			t.Fatalf("GET: %d %q %v", code, body, h)
		}
		code, body, _ = send("POST", upload, cred...)
		if code != 200 || body != fmt.Sprintf("POST /a/b %d", len(upload)) {
			t.Fatalf("POST: %d %q", code, body)
		}
	}
	if n := gw.disp.Stats().HopsNative - before; n != 4 {
		t.Errorf("%d of 4 calls went through the native hop", n)
	}
	// A response too long to be read whole, handed to fasthttp as a body
	// stream (which it reads to the exchange's end), leaves its lane for
	// the next one.
	lanes := gw.rpc.LaneStats()
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", dp+"/svc/web/big", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(b, big) {
			t.Fatalf("big: %d, %d bytes", resp.StatusCode, len(b))
		}
	}
	if st := gw.rpc.LaneStats(); st.Reused-lanes.Reused != 3 || st.Opened != lanes.Opened {
		t.Errorf("lanes before %+v, after %+v: want 3 reuses, none opened", lanes, st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("the upstream saw %d requests, want 4", len(seen))
	}
	for i, s := range seen {
		if s.auth != "" || s.token != "" {
			t.Errorf("request %d: the upstream saw the credential: %q %q", i, s.auth, s.token)
		}
		if s.custom != "kept" || s.hop != "" || s.query != "q=1" {
			t.Errorf("request %d: X-Custom %q, X-Hop %q, query %q", i, s.custom, s.hop, s.query)
		}
		if i%2 == 1 && s.sum != hex.EncodeToString(sum[:]) {
			t.Errorf("request %d: the body arrived altered", i)
		}
	}
}
