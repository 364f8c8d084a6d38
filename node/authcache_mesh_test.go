package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgw/meshgw/node/config"
)

// call sends one request with the given headers (name, value pairs) and
// returns its status and body.
func call(t *testing.T, method, url string, body any, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func bearerHdr(secret string) []string { return []string{"Authorization", "Bearer " + secret} }

// TestTokenCacheOnAMesh runs three -acl agents in process: public and
// pass_authorization services through a runner hop on both listeners, a
// revocation refused on every node within a second, and /svc/ with a cached
// token while the group has no quorum (2 of 3 voters gone), where a token
// the node never saw is a 503.
func TestTokenCacheOnAMesh(t *testing.T) {
	var seen atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(fmt.Sprintf("auth=%q token=%q", r.Header.Get("Authorization"), r.Header.Get("X-Meshgw-Token")))
		fmt.Fprint(w, "ok")
	}))
	defer up.Close()
	acl := func(mod func(*config.Runtime)) func(*config.Runtime) {
		return func(c *config.Runtime) {
			c.ACL = true
			if mod != nil {
				mod(c)
			}
		}
	}
	a1 := startAgent(t, testConfig(t, "a1", acl(func(c *config.Runtime) {
		c.ProxyAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		c.Roles = []string{"gateway", "runner"}
	})))
	join := []string{a1.cfg.BindAddr}
	a2 := startAgent(t, testConfig(t, "a2", acl(func(c *config.Runtime) { c.Join = join })))
	a3 := startAgent(t, testConfig(t, "a3", acl(func(c *config.Runtime) {
		c.Join = join
		c.Tags = map[string]string{"zone": "far"}
	})))
	api := func(a *Agent) string { return "http://" + a.HTTPAddr() }
	var mgmt string
	eventually(t, 60*time.Second, func() error {
		code, body := call(t, "POST", api(a1)+"/v1/acl/bootstrap", nil)
		if code != 200 {
			return fmt.Errorf("bootstrap: %d %s", code, body)
		}
		var b struct {
			Secret string `json:"secret_id"`
		}
		err := json.Unmarshal([]byte(body), &b)
		mgmt = b.Secret
		return err
	})
	token := func(policies ...string) (accessor, secret string) {
		t.Helper()
		code, body := call(t, "POST", api(a1)+"/v1/acl/tokens", map[string]any{"policies": policies}, bearerHdr(mgmt)...)
		var tk struct {
			Accessor string `json:"accessor_id"`
			Secret   string `json:"secret_id"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &tk) != nil {
			t.Fatalf("create token: %d %s", code, body)
		}
		return tk.Accessor, tk.Secret
	}
	_, runTok := token("run")
	far := map[string]string{"zone": "far"} // only a3: a call through a1 hops
	for name, def := range map[string]map[string]any{
		"web":  {"type": "http", "upstream": up.URL},
		"pub":  {"type": "http", "upstream": up.URL, "public": true, "runner_tags": far},
		"pass": {"type": "http", "upstream": up.URL, "pass_authorization": true, "runner_tags": far},
		"far":  {"type": "http", "upstream": up.URL, "runner_tags": far},
	} {
		def["name"] = name
		if code, body := call(t, "PUT", api(a1)+"/v1/services/"+name, def, bearerHdr(mgmt)...); code != 200 {
			t.Fatalf("put %s: %d %s", name, code, body)
		}
	}
	listeners := map[string]string{"api": api(a1), "dataplane": "http://" + a1.ProxyAddr()}
	// expect retries while gossip spreads a3's tags, then checks what the
	// upstream saw.
	expect := func(what, url string, code int, want string, hdr ...string) {
		t.Helper()
		eventually(t, 20*time.Second, func() error {
			seen.Store("")
			got, body := call(t, "GET", url, nil, hdr...)
			if got != code {
				return fmt.Errorf("%s: %d %s, want %d", what, got, body, code)
			}
			if want != "" && seen.Load() != want {
				return fmt.Errorf("%s: upstream saw %v, want %s", what, seen.Load(), want)
			}
			return nil
		})
	}
	for name, base := range listeners {
		expect(name+" public, no token", base+"/svc/pub/x", 200, `auth="" token=""`)
		expect(name+" public, token sent anyway", base+"/svc/pub/x", 200, `auth="" token=""`, bearerHdr(runTok)...)
		expect(name+" private, no token", base+"/svc/far/x", 401, "")
		expect(name+" private, token", base+"/svc/far/x", 200, `auth="" token=""`, bearerHdr(runTok)...)
		expect(name+" pass_authorization", base+"/svc/pass/x", 200, `auth="Bearer upstream-own" token=""`,
			"Authorization", "Bearer upstream-own", "X-Meshgw-Token", runTok)
		expect(name+" pass_authorization, token in Authorization", base+"/svc/pass/x", 401, "", bearerHdr(runTok)...)
	}
	expect("definition of the public service, no token", api(a1)+"/v1/services/pub", 401, "")

	// Revocation: cached on every node, refused on every node within 1s.
	revAcc, revTok := token("run")
	for _, a := range []*Agent{a1, a2, a3} {
		expect("token to revoke on "+a.cfg.NodeName, api(a)+"/svc/web/x", 200, "", bearerHdr(revTok)...)
	}
	if code, body := call(t, "DELETE", api(a2)+"/v1/acl/tokens/"+revAcc, nil, bearerHdr(mgmt)...); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	revoked := time.Now() // the revocation has committed: the bound runs from here
	for _, a := range []*Agent{a2, a1, a3} {
		for {
			sent := time.Now()
			code, _ := call(t, "GET", api(a)+"/svc/web/x", nil, bearerHdr(revTok)...)
			if code == 401 {
				break
			}
			if sent.Sub(revoked) > cacheFresh {
				t.Fatalf("revoked token on %s: %d %s after the revocation", a.cfg.NodeName, code, sent.Sub(revoked))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("every node answered 401 by %s after the revocation returned", time.Since(revoked).Round(time.Millisecond))

	// No quorum: a token a1 has seen keeps working on both listeners, and
	// so does one it never looked up but its replica holds (its last known
	// state, -stale-serve-for); one the state lacks is refused.
	_, unseen := token("run")
	for name, base := range listeners {
		expect(name+" before the loss", base+"/svc/web/x", 200, "", bearerHdr(runTok)...)
	}
	a2.Shutdown()
	a3.Shutdown()
	time.Sleep(cacheFresh) // the cached answers are no longer fresh: the group is asked
	for name, base := range listeners {
		first := time.Now()
		if code, body := call(t, "GET", base+"/svc/web/x", nil, bearerHdr(runTok)...); code != 200 {
			t.Errorf("%s: cached token without quorum: %d %s, want 200", name, code, body)
		}
		t.Logf("%s: first call with a stale cached token took %s", name, time.Since(first).Round(time.Millisecond))
		if code, body := call(t, "GET", base+"/svc/web/x", nil, bearerHdr(unseen)...); code != 200 {
			t.Errorf("%s: token never looked up, without quorum: %d %s, want 200", name, code, body)
		}
		if code, body := call(t, "GET", base+"/svc/web/x", nil, bearerHdr("random")...); code != 401 {
			t.Errorf("%s: random token, without quorum: %d %s, want 401", name, code, body)
		}
	}
	start := time.Now()
	for i := 0; i < 20; i++ {
		if code, body := call(t, "GET", listeners["dataplane"]+"/svc/web/x", nil, bearerHdr(runTok)...); code != 200 {
			t.Fatalf("cached token without quorum, call %d: %d %s", i, code, body)
		}
	}
	t.Logf("20 calls with a cached token without quorum took %s", time.Since(start).Round(time.Millisecond))
}
