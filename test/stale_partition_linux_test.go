package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMinorityServesStale: 5 agents in network namespaces, ACLs on (n1
// runs -acl; the others read it from the cluster's state), 3 voters. The cut leaves one voter (the leader) and both non-voters on
// the small side: a Raft minority. While cut, the small side keeps
// answering /svc/ with a token from its last known state (the voter from
// its replica, a non-voter through it), refuses a token revoked before the
// cut and an unknown one (401), refuses a write and a run (503 no_quorum),
// and accepts a token the large side revoked during the cut (the
// documented trade-off of -stale-serve-for); the node started with
// -stale-serve-for 0 fails closed. After the heal every node is fresh
// again (the revocation holds everywhere) and the central log has the
// entries of the calls the small side served while cut.
func TestMinorityServesStale(t *testing.T) {
	if testing.Short() {
		t.Skip("stale serving: 5 agents")
	}
	lab := newNetLab(t)
	// Only n1 runs -acl: the others check requests because the cluster's
	// state says ACLs are on, which is a read of that state too.
	c := StartNetCluster(t, lab, 5, Options{BootstrapExpect: 3, Extra: func(i int) []string {
		switch i {
		case 0:
			return []string{"-acl"}
		case 4:
			return []string{"-stale-serve-for", "0"}
		}
		return nil
	}})
	WaitHealthy(t, 30*time.Second, c.Nodes...)
	ln, err := net.Listen("tcp", lab.subnet+".1:0") // the test's address: never cut
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	up.Listener.Close()
	up.Listener = ln
	up.Start()
	defer up.Close()

	api := func(n *Node) string { return "http://" + n.HTTP }
	mgmt := bootstrapACL(t, c.Nodes[0])
	type status struct {
		Groups []statusGroup `json:"groups"`
		Stale  []struct {
			Cluster string
			Since   time.Time
			Serving bool
		}
	}
	statusOf := func(n *Node) (status, error) {
		var st status
		code, b, err := authDo(api(n), "GET", "/v1/status", mgmt, nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("status on %s: %d %s", n.Name, code, b)
		}
		if err == nil {
			err = json.Unmarshal(b, &st)
		}
		return st, err
	}
	var leader string
	voters := map[string]bool{}
	Eventually(t, 30*time.Second, func() error {
		st, err := statusOf(c.Nodes[0])
		if err != nil {
			return err
		}
		if len(st.Groups) != 1 || st.Groups[0].Leader == "" || len(st.Groups[0].Replicas) != 3 {
			return fmt.Errorf("n1 sees %+v", st.Groups)
		}
		leader = st.Groups[0].Leader
		for _, r := range st.Groups[0].Replicas {
			voters[r.Node] = true
		}
		return nil
	})
	byName := map[string]*Node{}
	for _, n := range c.Nodes {
		byName[n.Name] = n
	}
	closed := byName["n5"] // -stale-serve-for 0
	if voters["n5"] || voters["n4"] {
		t.Fatalf("voters %v: n4 and n5 were to be the non-voters (bootstrap takes the smallest names)", voters)
	}
	small := []string{leader, "n4", "n5"}
	var large []string
	for v := range voters {
		if v != leader {
			large = append(large, v)
		}
	}
	token := func() (accessor, secret string) {
		t.Helper()
		var tk struct {
			Accessor string `json:"accessor_id"`
			Secret   string `json:"secret_id"`
		}
		code, b, err := authDo(api(c.Nodes[0]), "POST", "/v1/acl/tokens", mgmt, []byte(`{"policies":["run"]}`))
		if err != nil || code != 200 || json.Unmarshal(b, &tk) != nil {
			t.Fatalf("create token: %d %s %v", code, b, err)
		}
		return tk.Accessor, tk.Secret
	}
	revoke := func(n *Node, accessor string) error {
		code, b, err := authDo(api(n), "DELETE", "/v1/acl/tokens/"+accessor, mgmt, nil)
		if err != nil || code != 200 {
			return fmt.Errorf("revoke on %s: %d %s %v", n.Name, code, b, err)
		}
		return nil
	}
	_, tok := token()
	oldAcc, oldTok := token()
	duringAcc, duringTok := token()
	if err := revoke(c.Nodes[0], oldAcc); err != nil {
		t.Fatal(err)
	}
	for _, def := range []string{
		`{"name":"web","type":"http","upstream":"` + up.URL + `"}`,
		`{"name":"job","type":"exec","command":["true"]}`,
	} {
		name := strings.Split(def, `"`)[3]
		Eventually(t, 20*time.Second, func() error {
			code, b, err := authDo(api(c.Nodes[0]), "PUT", "/v1/services/"+name, mgmt, []byte(def))
			if err != nil || code != 200 {
				return fmt.Errorf("put %s: %d %s %v", name, code, b, err)
			}
			return nil
		})
	}
	call := func(n *Node, secret string) (int, string) {
		code, b, err := authDo(api(n), "GET", "/svc/web/x", secret, nil)
		if err != nil {
			return 0, err.Error()
		}
		return code, string(b)
	}
	want := func(d time.Duration, n *Node, secret string, code int, what string) {
		t.Helper()
		Eventually(t, d, func() error {
			if got, b := call(n, secret); got != code {
				return fmt.Errorf("%s on %s: %d %s, want %d", what, n.Name, got, b, code)
			}
			return nil
		})
	}
	for _, n := range c.Nodes {
		want(30*time.Second, n, tok, 200, "warm-up")
		want(10*time.Second, n, duringTok, 200, "token to revoke during the cut")
	}

	lab.cut(small, large)
	cutAt := time.Now()
	// The large side elects a leader and revokes a token the small side
	// cannot hear of.
	Eventually(t, 20*time.Second, func() error { return revoke(byName[large[0]], duringAcc) })
	for i, name := range small[:2] {
		n := byName[name]
		want(20*time.Second, n, tok, 200, "token valid at the cut, while cut")
		if code, b := call(n, duringTok); code != 200 {
			t.Errorf("token revoked on the large side during the cut, on %s: %d %s; want 200 (within -stale-serve-for)", name, code, b)
		}
		for _, bad := range []string{oldTok, "no-such-token"} {
			if code, b := call(n, bad); code != 401 {
				t.Errorf("token revoked before the cut or unknown, on %s: %d %s; want 401", name, code, b)
			}
		}
		// An entry for the central log, spooled here and shipped after the heal.
		if code, b, err := authDo(api(n), "GET", "/svc/web/cut-"+name, tok, nil); err != nil || code != 200 {
			t.Errorf("tagged call on %s: %d %s %v", name, code, b, err)
		}
		if st, err := statusOf(n); err != nil {
			t.Errorf("status on %s: %v", name, err)
		} else if len(st.Stale) != 1 || !st.Stale[0].Serving || st.Stale[0].Since.Before(cutAt.Add(-time.Second)) {
			t.Errorf("status on %s while cut: %+v; want the cluster served stale since the cut", name, st.Stale)
		}
		if i > 0 {
			continue // each refusal waits out a quorum read: once is enough
		}
		for _, w := range []struct{ method, path, body, says string }{
			{"PUT", "/v1/services/web2", `{"name":"web2","type":"http","upstream":"` + up.URL + `"}`, "no quorum"},
			{"POST", "/v1/services/job/run", `{}`, "recorded durably"},
		} {
			code, b, err := authDo(api(n), w.method, w.path, mgmt, []byte(w.body))
			var e struct{ Code, Error string }
			_ = json.Unmarshal(b, &e)
			if err != nil || code != 503 || e.Code != "no_quorum" || !strings.Contains(e.Error, w.says) {
				t.Errorf("%s %s on %s while cut: %d %s %v; want 503 no_quorum saying %q", w.method, w.path, name, code, b, err, w.says)
			}
		}
	}
	want(20*time.Second, closed, tok, 503, "-stale-serve-for 0 while cut")
	t.Logf("sides %v | %v; small side served stale, %s failed closed, %s after the cut",
		small, large, closed.Name, time.Since(cutAt).Round(time.Millisecond))
	for _, name := range large {
		want(10*time.Second, byName[name], duringTok, 401, "revoked token on the large side")
		want(10*time.Second, byName[name], tok, 200, "large side")
	}

	lab.heal()
	healAt := time.Now()
	for _, n := range c.Nodes {
		want(30*time.Second, n, duringTok, 401, "revoked token after the heal")
		want(10*time.Second, n, tok, 200, "after the heal")
	}
	for _, name := range small {
		Eventually(t, 10*time.Second, func() error {
			st, err := statusOf(byName[name])
			if err != nil {
				return err
			}
			if len(st.Stale) != 0 {
				return fmt.Errorf("%s still serving stale: %v", name, st.Stale)
			}
			return nil
		})
	}
	t.Logf("fresh everywhere %s after the heal", time.Since(healAt).Round(time.Millisecond))
	Eventually(t, 30*time.Second, func() error {
		code, b, err := authDo(api(byName[large[0]]), "GET", "/v1/logs?service=web&limit=10000", mgmt, nil)
		var es []logEntry
		if err != nil || code != 200 || json.Unmarshal(b, &es) != nil {
			return fmt.Errorf("logs: %d %s %v", code, b, err)
		}
		for _, name := range small[:2] {
			found := false
			for _, e := range es {
				found = found || (e.Node == name && e.Status == 200 && strings.HasSuffix(e.Path, "/cut-"+name))
			}
			if !found {
				return fmt.Errorf("no central log entry of the call served by %s while cut", name)
			}
		}
		return nil
	})
}
