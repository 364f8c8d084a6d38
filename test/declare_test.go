package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const declFile = `{
  "format": 1,
  "services": [
    {"name": "web", "type": "exec", "command": ["echo", "v1"], "timeout": "10s"},
    {"name": "backup", "type": "exec", "command": ["true"]}
  ],
  "schedules": [
    {"name": "yearly", "service": "backup", "cron": "0 0 1 1 *", "timezone": "Europe/Paris"}
  ]
}`

// TestImportExportAndHistory: import -dry-run changes nothing and shows
// the diff; import applies it; an import whose dry run was overtaken by a
// concurrent write fails whole; services history and revert; and an
// export imported into a fresh cluster (with ACLs: the new routes'
// policies are checked there) exports the same.
func TestImportExportAndHistory(t *testing.T) {
	a := StartCluster(t, 1, Options{}).Nodes[0]
	WaitLeader(t, []*Node{a}, "default")
	dir := t.TempDir()
	file := filepath.Join(dir, "cluster.json")
	if err := os.WriteFile(file, []byte(declFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := func(n *Node, args ...string) string {
		t.Helper()
		out, stderr, code := CLI(t, append(args, "-http-addr", n.HTTP)...)
		if code != 0 {
			t.Fatalf("meshgw %s: exit %d: %s%s", strings.Join(args, " "), code, out, stderr)
		}
		return out
	}
	var out string
	Eventually(t, 20*time.Second, func() error { // the group may still be electing
		o, stderr, code := CLI(t, "import", "-f", file, "-dry-run", "-http-addr", a.HTTP)
		if code != 0 {
			return &cliError{stderr}
		}
		out = o
		return nil
	})
	for _, want := range []string{"create  services   web", "create  services   backup", "create  schedules  yearly", "3 to change, 0 unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	var svcs []map[string]any
	if err := a.GetJSON("/v1/services", &svcs); err != nil || len(svcs) != 0 {
		t.Fatalf("after the dry run: %v %v", svcs, err)
	}
	var scheds []map[string]any
	if err := a.GetJSON("/v1/schedules", &scheds); err != nil || len(scheds) != 0 {
		t.Fatalf("schedules after the dry run: %v %v", scheds, err)
	}
	if out = cli(a, "import", "-f", file); !strings.Contains(out, "applied 3 change(s)") {
		t.Fatalf("import: %s", out)
	}
	if err := a.GetJSON("/v1/services", &svcs); err != nil || len(svcs) != 2 {
		t.Fatalf("after the import: %v %v", svcs, err)
	}

	// A bad file is refused whole, each problem named.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"services": [{"name": "x", "type": "exec"}, {"name": "web", "type": "exec", "command": ["true"], "retries": 99}]}`), 0o644)
	if _, stderr, code := CLI(t, "import", "-f", bad, "-http-addr", a.HTTP); code == 0 ||
		!strings.Contains(stderr, `services[0] "x": invalid service: command`) || !strings.Contains(stderr, `services[1] "web": invalid service: retries`) {
		t.Errorf("bad file: exit %d: %s", code, stderr)
	}

	// The diff a dry run showed is applied only if nothing changed since.
	changed := strings.Replace(strings.Replace(declFile, `"v1"`, `"v2"`, 1), `{"name": "backup"`, `{"name": "extra", "type": "exec", "command": ["true"]}, {"name": "backup"`, 1)
	var dry struct {
		Plan    string `json:"plan"`
		Changes []any  `json:"changes"`
	}
	if _, err := a.Do("POST", "/v1/import?dry_run=true", []byte(changed), &dry); err != nil || len(dry.Changes) != 2 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	if err := a.PutJSON("/v1/services/web", map[string]any{"name": "web", "type": "exec", "command": []string{"echo", "concurrent"}}, nil); err != nil {
		t.Fatal(err)
	}
	if code, err := a.Do("POST", "/v1/import?plan="+dry.Plan, []byte(changed), nil); code != 409 {
		t.Fatalf("import after a concurrent write: %d %v, want 409", code, err)
	}
	if code, _ := a.Do("GET", "/v1/services/extra", nil, nil); code != 404 {
		t.Fatalf("a refused import created a service: %d", code)
	}

	// History: import (v1), the concurrent write; revert to revision 1.
	out = cli(a, "services", "history", "web")
	if !strings.Contains(out, "REVISION") || !strings.Contains(out, "concurrent") || !strings.Contains(out, `"v1"`) {
		t.Fatalf("history:\n%s", out)
	}
	cli(a, "services", "revert", "web", "1")
	var web struct {
		Command []string `json:"command"`
	}
	if err := a.GetJSON("/v1/services/web", &web); err != nil || strings.Join(web.Command, " ") != "echo v1" {
		t.Fatalf("after revert: %v %v", web, err)
	}
	var hist struct {
		Revisions []struct {
			Revision uint64 `json:"revision"`
			Current  bool   `json:"current"`
		} `json:"revisions"`
	}
	if err := a.GetJSON("/v1/services/web/history", &hist); err != nil || len(hist.Revisions) != 3 ||
		hist.Revisions[0].Revision != 3 || !hist.Revisions[0].Current {
		t.Fatalf("history after revert: %+v %v", hist, err)
	}

	// Export, import into a fresh cluster, export again: the same.
	exported := cli(a, "export")
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(exported), &doc); err != nil || doc["services"] == nil || doc["schedules"] == nil {
		t.Fatalf("export: %v\n%s", err, exported)
	}
	if strings.Contains(exported, "updated_at") || strings.Contains(exported, `"version"`) {
		t.Errorf("export carries server fields:\n%s", exported)
	}
	exp := filepath.Join(dir, "export.json")
	os.WriteFile(exp, []byte(exported), 0o644)
	// The fresh cluster runs with ACLs: the new routes' policies hold.
	b := StartCluster(t, 1, Options{Extra: func(int) []string { return []string{"-acl"} }}).Nodes[0]
	mgmt := bootstrapACL(t, b)
	tok := func(policies ...string) string {
		args := []string{"acl", "token", "create", "-http-addr", b.HTTP, "-token", mgmt, "-format", "json"}
		for _, p := range policies {
			args = append(args, "-policy", p)
		}
		o, stderr, code := CLI(t, args...)
		var tk struct {
			Secret string `json:"secret_id"`
		}
		if code != 0 || json.Unmarshal([]byte(o), &tk) != nil {
			t.Fatalf("token %v: %s %s", policies, o, stderr)
		}
		return tk.Secret
	}
	read, write := tok("read"), tok("write")
	sched := `{"name":"s","service":"backup","cron":"0 0 1 1 *"}`
	for _, c := range []struct {
		secret, method, path, body string
		want                       int
	}{
		{"", "GET", "/v1/export", "", 401},
		{read, "GET", "/v1/export", "", 200},
		{read, "POST", "/v1/import?dry_run=true", exported, 403},
		{write, "POST", "/v1/import?dry_run=true", exported, 403},
		{mgmt, "POST", "/v1/import?dry_run=true", exported, 200},
		{read, "GET", "/v1/schedules", "", 200},
		{read, "PUT", "/v1/schedules/s", sched, 403},
		{write, "PUT", "/v1/schedules/s", sched, 403}, // write without run on backup
		{read, "DELETE", "/v1/schedules/s", "", 403},
		{read, "GET", "/v1/services/web/history", "", 404},
		{read, "POST", "/v1/services/web/revert?revision=1", "", 403},
	} {
		if code := authCode(t, b, c.secret, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, code, c.want)
		}
	}
	if out := cli(b, "import", "-f", exp, "-token", mgmt); !strings.Contains(out, "applied 3 change(s)") {
		t.Fatalf("import into the fresh cluster: %s", out)
	}
	if again := cli(b, "export", "-token", read); again != exported {
		t.Errorf("export after the round trip differs:\n%s\nwas:\n%s", again, exported)
	}
}

type cliError struct{ msg string }

func (e *cliError) Error() string { return e.msg }
