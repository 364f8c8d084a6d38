package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitWork is a work tree pushing to a local bare repository (file://).
type gitWork struct {
	t    *testing.T
	dir  string
	URL  string
	bare string
}

func newGitWork(t *testing.T) *gitWork {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the test builds its repository with the git CLI (and runners fetch file:// with git-upload-pack)")
	}
	root := t.TempDir()
	g := &gitWork{t: t, dir: filepath.Join(root, "work"), bare: filepath.Join(root, "origin.git")}
	g.URL = "file://" + g.bare
	g.run(root, "init", "-q", "--bare", "-b", "main", g.bare)
	g.run(root, "init", "-q", "-b", "main", g.dir)
	g.run(g.dir, "remote", "add", "origin", g.URL)
	return g
}

func (g *gitWork) run(dir string, args ...string) string {
	g.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t",
		"GIT_COMMITTER_EMAIL=t@x", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		g.t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (executable when the name ends in .sh), commits,
// pushes to the bare repository and returns the commit hash.
func (g *gitWork) commit(files map[string]string) string {
	g.t.Helper()
	for name, body := range files {
		p := filepath.Join(g.dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			g.t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			g.t.Fatal(err)
		}
	}
	g.run(g.dir, "add", "-A")
	g.run(g.dir, "commit", "-q", "-m", "change")
	g.run(g.dir, "push", "-q", "origin", "main")
	return g.run(g.dir, "rev-parse", "HEAD")
}

type gitRun struct {
	ID     string `json:"execution_id"`
	Runner string `json:"runner"`
	Status string `json:"status"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Error  string `json:"error"`
	Commit string `json:"commit"`
}

// Services from a local bare Git repository on three agents: the
// committed script runs and its commit is recorded, a new commit is
// picked up, a python service gets its input as arguments in a venv
// built from the requirements.txt beside it, and an ansible playbook
// runs with the input as extra vars.
func TestServicesFromGit(t *testing.T) {
	g := newGitWork(t)
	c1 := g.commit(map[string]string{
		"scripts/hello.sh":    "#!/bin/sh\necho \"hello from v1: $(cat)\"\n",
		"py/app.py":           "import sys\nprint(' '.join(sys.argv[1:]))\nprint('venv' if sys.prefix != sys.base_prefix else 'system')\n",
		"py/requirements.txt": "# no third-party packages: the venv is still made, once per commit\n",
		"play/site.yml": "- hosts: localhost\n  gather_facts: false\n  tasks:\n" +
			"    - debug:\n        msg: \"deployed {{ app }} x{{ replicas }}\"\n",
	})
	c := StartCluster(t, 3, Options{BootstrapExpect: 3, Extra: func(i int) []string { return []string{"-tag", fmt.Sprintf("idx=%d", i)} }})
	WaitLeader(t, c.Nodes, "default")
	n1, n2 := c.Nodes[0], c.Nodes[1]

	// The repository through the CLI, read back through another node.
	repoFile := filepath.Join(t.TempDir(), "repo.json")
	def := fmt.Sprintf(`{"name": "ops", "url": %q, "ref": "main", "poll": "1s"}`, g.URL)
	if err := os.WriteFile(repoFile, []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, func() error {
		out, stderr, code := CLI(t, "repositories", "put", "-f", repoFile, "-http-addr", n1.HTTP)
		if code != 0 {
			return fmt.Errorf("repositories put: %d %s %s", code, out, stderr)
		}
		return nil
	})
	out, stderr, code := CLI(t, "repositories", "list", "-http-addr", n2.HTTP)
	if code != 0 || !strings.Contains(out, "ops") || !strings.Contains(out, g.URL) {
		t.Fatalf("repositories list: %d %s %s", code, out, stderr)
	}
	if code, err := n1.Do("PUT", "/v1/repositories/bad", map[string]any{"url": "ssh://h/x", "ref": "main"}, nil); code != 400 ||
		!strings.Contains(err.Error(), "url") {
		t.Fatalf("bad repository: %d %v", code, err)
	}

	run := func(t *testing.T, n *Node, svc string, input any) gitRun {
		t.Helper()
		var r gitRun
		if _, err := n.Do("POST", "/v1/services/"+svc+"/run", input, &r); err != nil {
			t.Fatalf("run %s: %v", svc, err)
		}
		return r
	}

	t.Run("exec from the repository records the commit and picks up a new one", func(t *testing.T) {
		// Pinned to one runner, so the pick-up is that runner's poll.
		putService(t, n1, map[string]any{"name": "hello", "type": "exec", "repository": "ops",
			"path": "scripts/hello.sh", "timeout": "20s", "runner_tags": map[string]string{"idx": "0"}})
		for i := 0; i < 3; i++ {
			r := run(t, c.Nodes[i], "hello", map[string]any{"n": i})
			if r.Status != "succeeded" || r.Commit != c1 || r.Stdout != fmt.Sprintf("hello from v1: {\"n\":%d}\n", i) {
				t.Fatalf("run %d: %+v, want commit %s", i, r, c1)
			}
			var rec gitRun
			if err := c.Nodes[(i+1)%3].GetJSON("/v1/executions/"+r.ID, &rec); err != nil || rec.Commit != c1 {
				t.Fatalf("record of %s: %+v %v", r.ID, rec, err)
			}
		}
		c2 := g.commit(map[string]string{"scripts/hello.sh": "#!/bin/sh\necho hello from v2\n"})
		start := time.Now()
		Eventually(t, 15*time.Second, func() error {
			r := run(t, n2, "hello", nil)
			if r.Commit != c2 || r.Stdout != "hello from v2\n" {
				return fmt.Errorf("still %s %q", r.Commit, r.Stdout)
			}
			return nil
		})
		took := time.Since(start)
		t.Logf("new commit %s picked up after %s (poll 1s)", c2[:12], took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("the new commit took %s with a 1s poll", took)
		}
		// Every runner (round-robin through one node) runs the new commit
		// from its own checkout.
		putService(t, n1, map[string]any{"name": "hello-all", "type": "exec", "repository": "ops",
			"path": "scripts/hello.sh", "timeout": "20s"})
		seen := map[string]bool{}
		for i := 0; i < 3; i++ {
			r := run(t, n1, "hello-all", nil)
			if r.Status != "succeeded" || r.Commit != c2 {
				t.Fatalf("hello-all run %d: %+v", i, r)
			}
			seen[r.Runner] = true
		}
		if len(seen) != 3 {
			t.Errorf("ran on %v, want all 3 runners", seen)
		}
	})

	t.Run("python service with input args and a venv", func(t *testing.T) {
		if _, err := exec.LookPath("python3"); err != nil {
			t.Skip("python3 is not installed on this host (Debian: python3, python3-venv)")
		}
		if out, err := exec.Command("python3", "-c", "import venv, ensurepip").CombinedOutput(); err != nil {
			t.Skipf("python3 has no venv module (Debian: apt-get install python3-venv): %s", out)
		}
		putService(t, n1, map[string]any{"name": "pyapp", "type": "python", "repository": "ops",
			"path": "py/app.py", "timeout": "60s"})
		// Async: making the venv (python3 -m venv, pip) takes longer than
		// a sync call's client timeout on a loaded machine (20 s seen).
		var r gitRun
		if _, err := n2.Do("POST", "/v1/services/pyapp/run?async=true",
			map[string]any{"env": "prod", "dry_run": true, "hosts": []string{"a", "b"}}, &r); err != nil || r.ID == "" {
			t.Fatalf("async run pyapp: %+v %v", r, err)
		}
		Eventually(t, 90*time.Second, func() error {
			if err := n1.GetJSON("/v1/executions/"+r.ID, &r); err != nil {
				return err
			}
			if r.Status == "queued" || r.Status == "running" {
				return fmt.Errorf("pyapp run %s still %s", r.ID, r.Status)
			}
			return nil
		})
		if r.Status != "succeeded" || r.Stdout != "--dry_run --env prod --hosts a --hosts b\nvenv\n" || r.Commit == "" {
			t.Fatalf("python run: %+v", r)
		}
		if code, err := n2.Do("POST", "/v1/services/pyapp/run", []any{1}, nil); code != 400 {
			t.Fatalf("array input: %d %v, want 400", code, err)
		}
	})

	t.Run("ansible playbook with extra vars", func(t *testing.T) {
		if _, err := exec.LookPath("ansible-playbook"); err != nil {
			t.Skip("ansible-playbook is not installed on this host (Debian: apt-get install ansible)")
		}
		putService(t, n1, map[string]any{"name": "site", "type": "ansible", "repository": "ops",
			"path": "play/site.yml", "timeout": "60s"})
		r := run(t, n1, "site", map[string]any{"app": "web", "replicas": 3})
		if r.Status != "succeeded" || !strings.Contains(r.Stdout, "deployed web x3") || r.Commit == "" {
			t.Fatalf("ansible run: %+v", r)
		}
	})

	// A service naming a repository that does not exist fails its run,
	// saying which.
	putService(t, n1, map[string]any{"name": "orphan", "type": "exec", "repository": "nope", "path": "x.sh"})
	_, _ = n2.Do("POST", "/v1/services/orphan/run", nil, nil)
	var recs []gitRun
	if err := n2.GetJSON("/v1/executions?service=orphan", &recs); err != nil || len(recs) != 1 ||
		recs[0].Status != "failed" || !strings.Contains(recs[0].Error, `repository "nope" not found`) {
		t.Fatalf("unknown repository: %+v %v", recs, err)
	}
}
