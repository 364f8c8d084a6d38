package test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// automationCluster: three agents with ACLs on and one secrets key file,
// each tagged slot=N so a service can be pinned to a runner.
type automationCluster struct {
	*Cluster
	manage string            // management token
	tokens map[string]string // policy → token secret
}

func startAutomationCluster(t *testing.T) *automationCluster {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "secrets.keys")
	out, stderr, code := CLI(t, "secrets", "keygen")
	if code != 0 {
		t.Fatalf("secrets keygen: %s", stderr)
	}
	if err := os.WriteFile(keyFile, []byte("# current key\n"+out), 0o600); err != nil {
		t.Fatal(err)
	}
	c := StartCluster(t, 3, Options{BootstrapExpect: 3, Extra: func(i int) []string {
		return []string{"-acl", "-secrets-key-file", keyFile, "-tag", fmt.Sprintf("slot=%d", i+1), "-log-level", "debug"}
	}})
	// With -acl every route but health needs a token: bootstrap first
	// (it retries while the group forms).
	ac := &automationCluster{Cluster: c, manage: bootstrapACL(t, c.Nodes[0]), tokens: map[string]string{}}
	for _, p := range []string{"read", "write", "run", "secrets"} {
		var tok struct {
			Secret string `json:"secret_id"`
		}
		code, body := ac.call(t, c.Nodes[0], ac.manage, "POST", "/v1/acl/tokens", `{"description":"`+p+`","policies":["`+p+`"]}`)
		if code != 200 || json.Unmarshal(body, &tok) != nil {
			t.Fatalf("token %s: %d %s", p, code, body)
		}
		ac.tokens[p] = tok.Secret
	}
	return ac
}

// call sends one request with a token and returns status and body.
func (ac *automationCluster) call(t *testing.T, n *Node, token, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+n.HTTP+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, data
}

// must is call that retries until the status is want (the group may still
// be settling) and returns the body.
func (ac *automationCluster) must(t *testing.T, n *Node, token, method, path, body string, want int) []byte {
	t.Helper()
	var got []byte
	Eventually(t, 15*time.Second, func() error {
		code, b := ac.call(t, n, token, method, path, body)
		if code != want {
			return fmt.Errorf("%s %s on %s: %d %s, want %d", method, path, n.Name, code, b, want)
		}
		got = b
		return nil
	})
	return got
}

// A secret reaches the environment of a run on another node than the one
// that took the run, and appears nowhere else: not in the service, the
// execution record, the streamed run, the secrets API, a snapshot or any
// agent's log, nor the export; in the output it is redacted. read, write and run tokens
// get 403 on every secrets route. The same cluster then serves the shared
// decorators subtest.
func TestSecretsAndSharedDecorators(t *testing.T) {
	ac := startAutomationCluster(t)
	n1, n2, n3 := ac.Nodes[0], ac.Nodes[1], ac.Nodes[2]
	rb := make([]byte, 12)
	_, _ = rand.Read(rb)
	value := "pw-" + hex.EncodeToString(rb)
	sum := sha256.Sum256([]byte(value))

	t.Run("secrets", func(t *testing.T) {
		// ACL: only the secrets (or manage) policy touches /v1/secrets.
		routes := [][3]string{
			{"PUT", "/v1/secrets/db-pass", `{"value":"` + value + `"}`},
			{"GET", "/v1/secrets/db-pass", ""},
			{"GET", "/v1/secrets", ""},
			{"POST", "/v1/secrets/rewrap", ""},
			{"DELETE", "/v1/secrets/db-pass", ""},
		}
		for _, p := range []string{"read", "write", "run"} {
			for _, r := range routes {
				if code, body := ac.call(t, n2, ac.tokens[p], r[0], r[1], r[2]); code != 403 {
					t.Fatalf("%s token: %s %s: %d %s, want 403", p, r[0], r[1], code, body)
				}
			}
		}
		// The value goes in through the CLI, on stdin, via n2.
		cmd := exec.Command(bin, "secrets", "put", "db-pass", "-http-addr", n2.HTTP)
		cmd.Env = append(os.Environ(), "MESHGW_TOKEN="+ac.tokens["secrets"])
		cmd.Stdin = strings.NewReader(value + "\n")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "secret db-pass written") {
			t.Fatalf("secrets put: %v %s", err, out)
		}

		// A service pinned to n3's runner; the run goes to n1. The process
		// proves it got the value (its hash), prints it in 3-byte writes
		// (split across output chunks) and whole on stderr.
		script := `printf '%s' "$DB_PASSWORD" | sha256sum | cut -d' ' -f1; ` +
			`{ printf '%s' "$DB_PASSWORD" | fold -w3; echo; } | while read -r p; do printf '%s' "$p"; sleep 0.02; done; echo; ` +
			`printf 'err:%s\n' "$DB_PASSWORD" >&2; cat "$MESHGW_SECRETS_DIR/db/pass" | sha256sum | cut -d' ' -f1`
		def := map[string]any{"name": "show", "type": "exec", "command": []string{"sh", "-c", script},
			"runner_tags": map[string]string{"slot": "3"},
			"secrets":     []map[string]string{{"name": "db-pass", "env": "DB_PASSWORD"}, {"name": "db-pass", "file": "db/pass"}}}
		b, _ := json.Marshal(def)
		ac.must(t, n1, ac.tokens["write"], "PUT", "/v1/services/show", string(b), 200)
		// A bad reference is a 400 naming the field.
		if code, body := ac.call(t, n1, ac.tokens["write"], "PUT", "/v1/services/bad",
			`{"name":"bad","type":"exec","command":["true"],"secrets":[{"name":"db-pass","file":"../x"}]}`); code != 400 ||
			!strings.Contains(string(body), "secrets[0].file") {
			t.Fatalf("bad reference: %d %s", code, body)
		}

		code, stream := ac.call(t, n1, ac.tokens["run"], "POST", "/v1/services/show/run?stream=true", "{}")
		if code != 200 {
			t.Fatalf("streamed run: %d %s", code, stream)
		}
		var final struct {
			Execution runResult `json:"execution"`
		}
		var streamed strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(stream))
		for sc.Scan() {
			var ev struct {
				Data string `json:"data"`
			}
			_ = json.Unmarshal(sc.Bytes(), &ev)
			streamed.WriteString(ev.Data)
			if bytes.Contains(sc.Bytes(), []byte(`"execution"`)) {
				_ = json.Unmarshal(sc.Bytes(), &final)
			}
		}
		ex := final.Execution
		wantOut := hex.EncodeToString(sum[:]) + "\n[redacted:db-pass]\n" + hex.EncodeToString(sum[:]) + "\n"
		if ex.Status != "succeeded" || ex.Runner != n3.Name || ex.Stdout != wantOut {
			t.Fatalf("run: %+v\nwant stdout %q", ex, wantOut)
		}
		if !strings.Contains(streamed.String(), "[redacted:db-pass]") || !strings.Contains(streamed.String(), "err:[redacted:db-pass]") {
			t.Fatalf("stream lacks the redacted output: %q", streamed.String())
		}
		t.Logf("run %s taken by %s ran on %s with the secret; output redacted", ex.ID, n1.Name, ex.Runner)

		// Nowhere else: every read a client can make.
		leaks := map[string][]byte{"stream": stream}
		leaks["executions get"] = ac.must(t, n2, ac.tokens["read"], "GET", "/v1/executions/"+ex.ID, "", 200)
		leaks["executions list"] = ac.must(t, n2, ac.tokens["read"], "GET", "/v1/executions", "", 200)
		leaks["services get"] = ac.must(t, n2, ac.tokens["read"], "GET", "/v1/services/show", "", 200)
		leaks["secrets get"] = ac.must(t, n3, ac.tokens["secrets"], "GET", "/v1/secrets/db-pass", "", 200)
		leaks["secrets list"] = ac.must(t, n3, ac.tokens["secrets"], "GET", "/v1/secrets", "", 200)
		leaks["snapshot"] = ac.must(t, n1, ac.manage, "GET", "/v1/snapshot", "", 200)
		leaks["export"] = ac.must(t, n2, ac.tokens["read"], "GET", "/v1/export", "", 200)
		if !bytes.Contains(leaks["export"], []byte(`"db-pass"`)) {
			t.Errorf("the export does not name the service's secret: the check would prove nothing\n%s", leaks["export"])
		}
		for what, b := range leaks {
			if bytes.Contains(b, []byte(value)) {
				t.Errorf("the secret's value appears in %s", what)
			}
		}
		var meta struct {
			Name    string   `json:"name"`
			Version uint64   `json:"version"`
			UsedBy  []string `json:"used_by"`
			Created string   `json:"created"`
		}
		if err := json.Unmarshal(leaks["secrets get"], &meta); err != nil || meta.Name != "db-pass" || meta.Version == 0 ||
			len(meta.UsedBy) != 1 || meta.UsedBy[0] != "show" || meta.Created == "" {
			t.Fatalf("metadata: %+v %v (%s)", meta, err, leaks["secrets get"])
		}

		// Rewrap (after a rotation) finds the secret sealed with the current key.
		cmd = exec.Command(bin, "secrets", "rewrap", "-http-addr", n3.HTTP)
		cmd.Env = append(os.Environ(), "MESHGW_TOKEN="+ac.tokens["secrets"])
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "0 secret(s) sealed again, 1 already current") {
			t.Fatalf("secrets rewrap: %v %s", err, out)
		}

		// A missing secret fails the run, naming it.
		ac.must(t, n1, ac.tokens["write"], "PUT", "/v1/services/needs-missing",
			`{"name":"needs-missing","type":"exec","command":["true"],"secrets":[{"name":"nope","env":"NOPE"}]}`, 200)
		var failed runResult
		b = ac.must(t, n2, ac.tokens["run"], "POST", "/v1/services/needs-missing/run", "{}", 200)
		if err := json.Unmarshal(b, &failed); err != nil || failed.Status != "failed" || !strings.Contains(failed.Error, `secret "nope"`) {
			t.Fatalf("run with a missing secret: %s", b)
		}

		// docs/SECRETS.md's commands, as written there, one by one (the
		// first reads the value on stdin): each works, none shows a value.
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		doc, err := os.ReadFile(filepath.Join(root, "docs", "SECRETS.md"))
		if err != nil {
			t.Fatal(err)
		}
		_, block, _ := strings.Cut(string(doc), "\n```sh\nmeshgw secrets put")
		block, _, _ = strings.Cut("meshgw secrets put"+block, "\n```")
		var ran []string
		for _, line := range strings.Split(block, "\n") {
			line, _, _ = strings.Cut(line, "#")
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "meshgw" || f[1] != "secrets" {
				t.Fatalf("docs/SECRETS.md: not a secrets command: %q", line)
			}
			cmd := exec.Command(bin, append(f[1:], "-http-addr", n3.HTTP)...)
			cmd.Env = append(os.Environ(), "MESHGW_TOKEN="+ac.tokens["secrets"])
			cmd.Stdin = strings.NewReader(value + "\n")
			out, err := cmd.CombinedOutput()
			if err != nil || bytes.Contains(out, []byte(value)) {
				t.Fatalf("%s: %v (the value shown: %v)\n%s", strings.Join(f, " "), err, bytes.Contains(out, []byte(value)), out)
			}
			if f[2] == "list" && (!strings.Contains(string(out), "db-pass") || !strings.Contains(string(out), "show")) {
				t.Errorf("secrets list names neither the secret nor its service:\n%s", out)
			}
			ran = append(ran, f[2])
		}
		if strings.Join(ran, " ") != "put put list get delete" {
			t.Errorf("docs/SECRETS.md's commands: ran %v", ran)
		}
		if code, _ := ac.call(t, n1, ac.tokens["secrets"], "GET", "/v1/secrets/db-pass", ""); code != 404 {
			t.Errorf("after docs/SECRETS.md's delete: GET %d, want 404", code)
		}
	})

	// Decorators go here (below); the log check runs last, over everything.
	t.Run("decorators", func(t *testing.T) { testSharedDecorators(t, ac) })

	t.Run("logs", func(t *testing.T) {
		for _, n := range ac.Nodes {
			data, err := os.ReadFile(n.LogPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) == 0 {
				t.Fatalf("%s logged nothing at debug level: the check would prove nothing", n.Name)
			}
			if bytes.Contains(data, []byte(value)) {
				t.Errorf("the secret's value appears in %s's log", n.Name)
			}
		}
	})
}

// testSharedDecorators: one decorator serves two services; changed
// through one node, it refuses the next bad input of both through the
// others; in use it cannot be deleted (409 naming a user); a service naming
// an unknown one is 400 on "decorator".
func testSharedDecorators(t *testing.T, ac *automationCluster) {
	n1, n2, n3 := ac.Nodes[0], ac.Nodes[1], ac.Nodes[2]
	w, r, run := ac.tokens["write"], ac.tokens["read"], ac.tokens["run"]
	if code, body := ac.call(t, n1, w, "PUT", "/v1/services/orphan",
		`{"name":"orphan","type":"exec","command":["cat"],"decorator":"order-input"}`); code != 400 ||
		!strings.Contains(string(body), `"path":"decorator"`) || !strings.Contains(string(body), "order-input") {
		t.Fatalf("service naming an unknown decorator: %d %s", code, body)
	}
	if code, _ := ac.call(t, n1, r, "PUT", "/v1/decorators/order-input", `{"type":"object"}`); code != 403 {
		t.Fatalf("read token put a decorator: %d", code)
	}
	// The schema goes in through the CLI.
	schemaFile := filepath.Join(t.TempDir(), "order.json")
	if err := os.WriteFile(schemaFile, []byte(`{"type":"object","required":["qty"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "decorators", "put", "order-input", "-f", schemaFile, "-http-addr", n1.HTTP)
	cmd.Env = append(os.Environ(), "MESHGW_TOKEN="+w)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "decorator order-input written") {
		t.Fatalf("decorators put: %v %s", err, out)
	}
	for _, name := range []string{"order-a", "order-b"} {
		ac.must(t, n1, w, "PUT", "/v1/services/"+name,
			`{"name":"`+name+`","type":"exec","command":["cat"],"decorator":"order-input"}`, 200)
	}
	for _, name := range []string{"order-a", "order-b"} {
		ac.must(t, n2, run, "POST", "/v1/services/"+name+"/run", `{"qty":"two"}`, 200)
		if code, body := ac.call(t, n2, run, "POST", "/v1/services/"+name+"/run", `{"item":"x"}`); code != 400 ||
			!strings.Contains(string(body), "qty") {
			t.Fatalf("%s without qty: %d %s", name, code, body)
		}
	}
	// Changed through n3: the next run of both services, through n2, obeys it.
	ac.must(t, n3, w, "PUT", "/v1/decorators/order-input",
		`{"type":"object","required":["qty"],"properties":{"qty":{"type":"integer"}}}`, 200)
	for _, name := range []string{"order-a", "order-b"} {
		if code, body := ac.call(t, n2, run, "POST", "/v1/services/"+name+"/run", `{"qty":"two"}`); code != 400 ||
			!strings.Contains(string(body), "/qty") {
			t.Fatalf("%s after the change: %d %s, want 400 on /qty", name, code, body)
		}
		var ok runResult
		b := ac.must(t, n2, run, "POST", "/v1/services/"+name+"/run", `{"qty":2}`, 200)
		if err := json.Unmarshal(b, &ok); err != nil || ok.Status != "succeeded" || ok.Stdout != `{"qty":2}` {
			t.Fatalf("%s with a good input: %s", name, b)
		}
	}
	var got struct {
		Version uint64          `json:"version"`
		Schema  json.RawMessage `json:"schema"`
		UsedBy  []string        `json:"used_by"`
	}
	if err := json.Unmarshal(ac.must(t, n1, r, "GET", "/v1/decorators/order-input", "", 200), &got); err != nil ||
		strings.Join(got.UsedBy, ",") != "order-a,order-b" || !strings.Contains(string(got.Schema), "integer") {
		t.Fatalf("decorator read: %+v %v", got, err)
	}
	// In use: 409 naming a user; free once no service names it.
	if code, body := ac.call(t, n2, w, "DELETE", "/v1/decorators/order-input", ""); code != 409 ||
		!strings.Contains(string(body), "order-a") {
		t.Fatalf("delete in use: %d %s", code, body)
	}
	ac.must(t, n1, w, "DELETE", "/v1/services/order-a", "", 200)
	ac.must(t, n1, w, "PUT", "/v1/services/order-b", `{"name":"order-b","type":"exec","command":["cat"]}`, 200)
	ac.must(t, n2, w, "DELETE", "/v1/decorators/order-input", "", 200)
	ac.must(t, n2, r, "GET", "/v1/decorators/order-input", "", 404)
}
