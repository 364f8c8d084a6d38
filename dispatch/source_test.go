package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// bareRepo is a work tree pushing to a bare repository in t.TempDir.
type bareRepo struct {
	t    *testing.T
	work string
	URL  string
}

func newBareRepo(t *testing.T) *bareRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the test builds its repository with the git CLI")
	}
	dir := t.TempDir()
	g := &bareRepo{t: t, work: filepath.Join(dir, "work"), URL: "file://" + filepath.Join(dir, "origin.git")}
	g.git(dir, "init", "-q", "--bare", "-b", "main", "origin.git")
	g.git(dir, "init", "-q", "-b", "main", "work")
	g.git(g.work, "remote", "add", "origin", g.URL)
	return g
}

func (g *bareRepo) git(dir string, args ...string) string {
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
// pushes and returns the commit hash.
func (g *bareRepo) commit(files map[string]string) string {
	g.t.Helper()
	for name, body := range files {
		p := filepath.Join(g.work, name)
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
	g.git(g.work, "add", "-A")
	g.git(g.work, "commit", "-q", "-m", "c")
	g.git(g.work, "push", "-q", "origin", "main")
	return g.git(g.work, "rev-parse", "HEAD")
}

func putRepo(t *testing.T, e *localEnv, r Repository) {
	t.Helper()
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	if _, err := e.store.Put(context.Background(), testCluster, RepositoryKey(r.Name), b, nil); err != nil {
		t.Fatal(err)
	}
}

func newSourceEnv(t *testing.T) *localEnv {
	dir := t.TempDir()
	return newLocal(t, func(c *Config) { c.SourceDir = dir })
}

func TestRunFromRepositoryRecordsTheCommitAndPicksUpANewOne(t *testing.T) {
	g := newBareRepo(t)
	c1 := g.commit(map[string]string{"scripts/hello.sh": "#!/bin/sh\necho v1 $(cat)\n", "lib/plain": "x"})
	e := newSourceEnv(t)
	putRepo(t, e, Repository{Name: "ops", URL: g.URL, Ref: "main", Poll: Duration(time.Second)})
	svc := Service{Name: "hello", Type: TypeExec, Repository: "ops", Path: "scripts/hello.sh", Timeout: Duration(10 * time.Second)}
	if err := svc.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ex, err := e.d.Run(ctx, testCluster, svc, []byte(`"in"`), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusSucceeded || ex.Stdout != "v1 \"in\"\n" || ex.Commit != c1 {
		t.Fatalf("run: %s %q commit %s (want %s) err %q", ex.Status, ex.Stdout, ex.Commit, c1, ex.Error)
	}
	if rec := e.record(t, ex.ID); rec.Commit != c1 || ex.Response().Commit != c1 {
		t.Errorf("record commit %q, want %s", rec.Commit, c1)
	}
	c2 := g.commit(map[string]string{"scripts/hello.sh": "#!/bin/sh\necho v2\n"})
	waitFor(t, 5*time.Second, "the new commit to be run", func() bool {
		ex, err := e.d.Run(ctx, testCluster, svc, nil, RunOptions{})
		return err == nil && ex.Commit == c2 && ex.Stdout == "v2\n"
	})

	// A file that is not executable needs a command; with one it runs.
	plain := svc
	plain.Path = "lib/plain"
	if ex, err := e.d.Run(ctx, testCluster, plain, nil, RunOptions{}); err != nil || ex.Status != StatusFailed ||
		!strings.Contains(ex.Error, "not executable") || ex.Commit != c2 {
		t.Errorf("non-executable file: %v %s %q %s", err, ex.Status, ex.Error, ex.Commit)
	}
	plain.Command = []string{"cat"}
	if ex, err := e.d.Run(ctx, testCluster, plain, nil, RunOptions{}); err != nil || ex.Stdout != "x" {
		t.Errorf("command + path: %v %q %q", err, ex.Stdout, ex.Error)
	}
	// A path through a symlink out of the checkout is refused at run time.
	if err := os.Symlink("/etc/passwd", filepath.Join(g.work, "escape")); err != nil {
		t.Fatal(err)
	}
	c3 := g.commit(map[string]string{})
	esc := svc
	esc.Path, esc.Command = "escape", []string{"cat"}
	waitFor(t, 5*time.Second, "the escape to be refused", func() bool {
		ex, err := e.d.Run(ctx, testCluster, esc, nil, RunOptions{})
		return err == nil && ex.Commit == c3 && ex.Status == StatusFailed && strings.Contains(ex.Error, "outside the repository")
	})
	// A repository that is not defined fails the run, naming it.
	gone := svc
	gone.Repository = "nope"
	if ex, err := e.d.Run(ctx, testCluster, gone, nil, RunOptions{}); err != nil || ex.Status != StatusFailed ||
		!strings.Contains(ex.Error, `repository "nope" not found`) {
		t.Errorf("unknown repository: %v %s %q", err, ex.Status, ex.Error)
	}
}

// fakeSecrets behaves like a secret store: a missing secret is an error
// naming it.
// clusterSecrets is a SecretSource keyed "cluster/name"; like node's, it
// leaves a missing secret out of its answer (the caller names it).
type clusterSecrets map[string]string

func (f clusterSecrets) SecretValues(_ context.Context, cluster string, names []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, n := range names {
		if v, ok := f[cluster+"/"+n]; ok {
			out[n] = []byte(v)
		}
	}
	return out, nil
}

func TestRepositoryCredentialsComeFromTheSecretStoreAndAreNotRecorded(t *testing.T) {
	e := newSourceEnv(t)
	putRepo(t, e, Repository{Name: "priv", URL: "https://git.invalid/x.git", Ref: "main",
		Credentials: &RepositoryCredentials{Secret: "git-token"}})
	svc := Service{Name: "p", Type: TypeExec, Repository: "priv", Path: "x.sh", Timeout: Duration(2 * time.Second)}
	ctx := context.Background()

	if _, err := e.d.sourceFor(ctx, testCluster, &svc); err == nil || !strings.Contains(err.Error(), "no secret store") {
		t.Errorf("no store: %v", err)
	}
	e.d.SetSecrets(clusterSecrets{})
	ex, err := e.d.Run(ctx, testCluster, svc, nil, RunOptions{})
	if err != nil || ex.Status != StatusFailed || !strings.Contains(ex.Error, `secret "git-token" not found`) {
		t.Errorf("missing secret: %v %s %q", err, ex.Status, ex.Error)
	}
	e.d.SetSecrets(clusterSecrets{testCluster + "/git-token": "robot:s3cr3t-value\n"})
	sw, err := e.d.sourceFor(ctx, testCluster, &svc)
	if err != nil || sw.Username != "robot" || sw.Password != "s3cr3t-value" || sw.URL != "https://git.invalid/x.git" {
		t.Fatalf("source: %+v %v", sw, err)
	}
	e.d.SetSecrets(clusterSecrets{testCluster + "/git-token": "tok"})
	if sw, _ := e.d.sourceFor(ctx, testCluster, &svc); sw.Username != "git" || sw.Password != "tok" {
		t.Errorf("bare token: %+v", sw)
	}
	// The run fails (no such host, or no network: timed out) and nothing
	// of the secret is kept.
	e.d.SetSecrets(clusterSecrets{testCluster + "/git-token": "robot:s3cr3t-value"})
	ex, err = e.d.Run(ctx, testCluster, svc, nil, RunOptions{})
	if err != nil || ex.Status != StatusFailed && ex.Status != StatusTimedOut {
		t.Fatalf("run: %v %s", err, ex.Status)
	}
	raw, _, _, _ := e.store.Get(ctx, testCluster, ExecKey(ex.ID))
	if strings.Contains(string(raw), "s3cr3t") || strings.Contains(ex.Error, "s3cr3t") {
		t.Errorf("the credential reached the record: %s", raw)
	}
}

func TestScriptArgsFromInput(t *testing.T) {
	for _, c := range []struct {
		kind, in string
		want     []string
		bad      string // substring of the error, "" when valid
	}{
		{TypePython, ``, nil, ""},
		{TypePython, `null`, nil, ""},
		{TypePython, `{"name":"x y","count":3,"v":true,"q":false,"n":null,"tag":["a",2],"o":{"k":1}}`,
			// Keys sorted; true a bare flag; false and null left out.
			[]string{"--count", "3", "--name", "x y", "--o", `{"k":1}`, "--tag", "a", "--tag", "2", "--v"}, ""},
		{TypePython, `[1]`, nil, "must be a JSON object"},
		{TypePython, `{"bad key":1}`, nil, `"bad key"`},
		{TypePython, `{"-x":1}`, nil, `"-x"`},
		{TypeAnsible, `{"who": "x", "n": [1, 2]}`, []string{"-e", `{"who":"x","n":[1,2]}`}, ""},
		{TypeAnsible, `"s"`, nil, "extra vars"},
		{TypeExec, `[1]`, nil, ""},
	} {
		got, err := scriptArgs(c.kind, []byte(c.in))
		if c.bad != "" {
			var se *SchemaError
			if err == nil || !strings.Contains(err.Error(), c.bad) || !errors.As(err, &se) {
				t.Errorf("%s %s: err %v, want %q", c.kind, c.in, err, c.bad)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %s: %v", c.kind, c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s %s: %q, want %q", c.kind, c.in, got, c.want)
		}
	}
}

func TestSourceFieldsValidation(t *testing.T) {
	ok := []Service{
		{Name: "a", Type: TypeExec, Repository: "r", Path: "x.sh"},
		{Name: "a", Type: TypeExec, Repository: "r", Path: "x.sh", Command: []string{"bash"}},
		{Name: "a", Type: TypePython, Repository: "r", Path: "app/main.py"},
		{Name: "a", Type: TypePython, Path: "/opt/app/main.py"},
		{Name: "a", Type: TypeAnsible, Repository: "r", Path: "site.yml"},
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	for field, s := range map[string]Service{
		"path":       {Name: "a", Type: TypeExec, Repository: "r"},
		"repository": {Name: "a", Type: TypeExec, Repository: "-r", Path: "x"},
		"dir":        {Name: "a", Type: TypeExec, Repository: "r", Path: "x", Dir: "/tmp"},
		"command":    {Name: "a", Type: TypePython, Path: "/x.py", Command: []string{"python3"}},
		"upstream":   {Name: "a", Type: TypeAnsible, Path: "/x.yml", Upstream: "http://x"},
	} {
		var ve *ValidationError
		if err := s.Validate(); !errors.As(err, &ve) || ve.Field != field {
			t.Errorf("%+v: %v, want an error at %s", s, err, field)
		}
	}
	for _, p := range []string{"../x.sh", "/abs.sh", "a/../../x"} {
		s := Service{Name: "a", Type: TypeExec, Repository: "r", Path: p}
		if err := s.Validate(); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
	for _, p := range []string{"rel.py", ""} {
		s := Service{Name: "a", Type: TypePython, Path: p}
		if err := s.Validate(); err == nil {
			t.Errorf("python path %q without a repository accepted", p)
		}
	}
	if err := (&Service{Name: "a", Type: TypeExec, Path: "/x"}).Validate(); err == nil {
		t.Error("exec path without a repository accepted")
	}
}

func TestRepositoryValidation(t *testing.T) {
	good := []string{
		`{"name":"r","url":"https://github.com/o/r.git","ref":"main"}`,
		`{"name":"r","url":"file:///srv/git/r.git","ref":"v1.2","poll":"30s"}`,
		`{"name":"r","url":"https://h/r.git","ref":"0123456789abcdef0123456789abcdef01234567","credentials":{"secret":"tok"}}`,
	}
	for _, b := range good {
		if _, err := ParseRepository([]byte(b)); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	for b, field := range map[string]string{
		`{"name":"r","ref":"main"}`:                                                              "url",
		`{"name":"r","url":"ssh://h/r","ref":"main"}`:                                            "url",
		`{"name":"r","url":"https://u:p@h/r","ref":"main"}`:                                      "url",
		`{"name":"r","url":"file://rel/r","ref":"main"}`:                                         "url",
		`{"name":"r","url":"https://h/r"}`:                                                       "ref",
		`{"name":"r","url":"https://h/r","ref":"a..b"}`:                                          "ref",
		`{"name":"r","url":"https://h/r","ref":"-x"}`:                                            "ref",
		`{"name":"r","url":"https://h/r","ref":"main","poll":"10ms"}`:                            "poll",
		`{"name":"r","url":"https://h/r","ref":"main","poll":"zz"}`:                              "poll",
		`{"name":"r","url":"http://h/r","ref":"main","credentials":{"secret":"s"}}`:              "credentials",
		`{"name":"r","url":"https://h/r","ref":"main","credentials":{"secret":""}}`:              "credentials.secret",
		`{"name":"r","url":"https://h/r","ref":"main","extra":1}`:                                "",
		`{"url":"https://h/r","ref":"main"}`:                                                     "name",
		`{"name":"r","url":"https://h/r","ref":"main","credentials":{"secret":"s","value":"x"}}`: "credentials",
	} {
		_, err := ParseRepository([]byte(b))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != field {
			t.Errorf("%s: %v, want an error at %q", b, err, field)
		}
	}
}

func TestPythonServiceGetsInputArgsAndRequirements(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is not installed")
	}
	g := newBareRepo(t)
	c1 := g.commit(map[string]string{
		"py/app.py":           "import sys\nprint(' '.join(sys.argv[1:]))\nprint(sys.prefix != sys.base_prefix)\n",
		"py/requirements.txt": "# nothing to install\n",
		"bare/app.py":         "import sys\nprint(sys.prefix != sys.base_prefix)\n",
	})
	e := newSourceEnv(t)
	putRepo(t, e, Repository{Name: "ops", URL: g.URL, Ref: "main"})
	svc := Service{Name: "py", Type: TypePython, Repository: "ops", Path: "py/app.py", Timeout: Duration(60 * time.Second)}
	ctx := context.Background()
	if _, err := e.d.Run(ctx, testCluster, svc, []byte(`[1]`), RunOptions{}); !errors.Is(err, ErrInvalidInput) {
		t.Errorf("array input: %v, want ErrInvalidInput", err)
	}
	ex, err := e.d.Run(ctx, testCluster, svc, []byte(`{"name":"x","n":2,"v":true}`), RunOptions{})
	if err != nil || ex.Status != StatusSucceeded {
		t.Fatalf("run: %v %s %q %q", err, ex.Status, ex.Error, ex.Stderr)
	}
	if ex.Stdout != "--n 2 --name x --v\nTrue\n" || ex.Commit != c1 {
		t.Errorf("stdout %q commit %s: want the args, a venv (requirements.txt beside), commit %s", ex.Stdout, ex.Commit, c1)
	}
	svc.Path = "bare/app.py"
	if ex, err := e.d.Run(ctx, testCluster, svc, nil, RunOptions{}); err != nil || ex.Stdout != "False\n" {
		t.Errorf("no requirements: no venv: %v %q %q", err, ex.Stdout, ex.Error)
	}
}

func TestAnsibleServiceRunsThePlaybookWithExtraVars(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Skip("ansible-playbook is not installed (Debian: apt-get install ansible)")
	}
	g := newBareRepo(t)
	g.commit(map[string]string{"site.yml": "- hosts: localhost\n  gather_facts: false\n  tasks:\n" +
		"    - debug:\n        msg: \"hello {{ who }} {{ n | sum }}\"\n"})
	e := newSourceEnv(t)
	putRepo(t, e, Repository{Name: "ops", URL: g.URL, Ref: "main"})
	svc := Service{Name: "play", Type: TypeAnsible, Repository: "ops", Path: "site.yml", Timeout: Duration(60 * time.Second)}
	ex, err := e.d.Run(context.Background(), testCluster, svc, []byte(`{"who":"mesh","n":[1,2]}`), RunOptions{})
	if err != nil || ex.Status != StatusSucceeded || !strings.Contains(ex.Stdout, "hello mesh 3") {
		t.Fatalf("run: %v %s %q %q %q", err, ex.Status, ex.Error, ex.Stdout, ex.Stderr)
	}
}
