package gitsrc

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// gitRepo is a work tree pushing to a bare repository, both in t.TempDir.
type gitRepo struct {
	t    *testing.T
	work string
	URL  string
}

func newGitRepo(t *testing.T) *gitRepo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the test builds its repository with the git CLI")
	}
	dir := t.TempDir()
	g := &gitRepo{t: t, work: filepath.Join(dir, "work"), URL: "file://" + filepath.Join(dir, "origin.git")}
	g.git(dir, "init", "-q", "--bare", "-b", "main", "origin.git")
	g.git(dir, "init", "-q", "-b", "main", "work")
	g.git(g.work, "remote", "add", "origin", g.URL)
	return g
}

func (g *gitRepo) git(dir string, args ...string) string {
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

// commit writes files (name → content; mode 0755 when the name ends in
// .sh), commits and pushes them, and returns the commit hash.
func (g *gitRepo) commit(files map[string]string) string {
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

func newCache(t *testing.T, mut func(*Config)) *Cache {
	t.Helper()
	cfg := DefaultConfig(t.TempDir())
	if mut != nil {
		mut(&cfg)
	}
	c, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckoutRunsTheCommitAndPicksUpANewOneAfterPoll(t *testing.T) {
	g := newGitRepo(t)
	c1 := g.commit(map[string]string{"scripts/x.sh": "#!/bin/sh\necho one\n", "README": "r"})
	c := newCache(t, nil)
	ctx := context.Background()
	// The poll is long enough that making the second commit (a git process,
	// slow on a loaded machine) cannot outlast it.
	r := Remote{URL: g.URL, Ref: "main", Poll: 2 * time.Second}

	co, err := c.Checkout(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if co.Commit != c1 {
		t.Fatalf("commit %s, want %s", co.Commit, c1)
	}
	p, err := co.File("scripts/x.sh")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("script not executable: %v %v", fi, err)
	}
	out, err := exec.Command(p).Output()
	if err != nil || string(out) != "one\n" {
		t.Fatalf("script ran %q %v", out, err)
	}
	co.Release()

	c2 := g.commit(map[string]string{"scripts/x.sh": "#!/bin/sh\necho two\n"})
	// Within the poll the ref is read locally: still the first commit.
	co, err = c.Checkout(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if co.Commit != c1 {
		t.Errorf("fetched before the poll interval: got %s", co.Commit)
	}
	co.Release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		co, err = c.Checkout(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		co.Release()
		if co.Commit == c2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new commit %s not picked up; still %s", c2, co.Commit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A commit hash not yet held is fetched at once, whatever the poll.
	c3 := g.commit(map[string]string{"other": "3"})
	co, err = c.Checkout(ctx, Remote{URL: g.URL, Ref: c3, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	co.Release()
	if co.Commit != c3 {
		t.Errorf("commit ref: got %s want %s", co.Commit, c3)
	}
	// An old commit by hash, a tag, and an unknown ref.
	g.git(g.work, "tag", "-a", "-m", "v1", "v1", c1)
	g.git(g.work, "push", "-q", "origin", "v1")
	co, err = c.Checkout(ctx, Remote{URL: g.URL, Ref: "v1", Poll: time.Nanosecond})
	if err != nil || co.Commit != c1 {
		t.Fatalf("annotated tag: %v %v", co, err)
	}
	co.Release()
	if _, err := c.Checkout(ctx, Remote{URL: g.URL, Ref: "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown ref: %v", err)
	}
}

func TestFileRefusesPathsThatLeaveTheCheckout(t *testing.T) {
	g := newGitRepo(t)
	g.commit(map[string]string{"a/ok.sh": "#!/bin/sh\n"})
	for name, target := range map[string]string{"out": "/etc/passwd", "up": "../../../../etc/passwd", "in": "a/ok.sh"} {
		if err := os.Symlink(target, filepath.Join(g.work, name)); err != nil {
			t.Fatal(err)
		}
	}
	g.commit(map[string]string{"b": "x"})
	c := newCache(t, nil)
	co, err := c.Checkout(context.Background(), Remote{URL: g.URL, Ref: "main"})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Release()
	for _, bad := range []string{"../x", "/etc/passwd", "a/../../x", "out", "up", "", "a", "missing"} {
		if p, err := co.File(bad); err == nil {
			t.Errorf("File(%q) = %s, want refused", bad, p)
		}
	}
	if p, err := co.File("in"); err != nil || !strings.HasPrefix(p, co.Dir) {
		t.Errorf("a symlink inside the checkout: %s %v", p, err)
	}
}

func TestCheckoutsAreCachedPerCommitAndBounded(t *testing.T) {
	g := newGitRepo(t)
	c := newCache(t, func(cfg *Config) { cfg.MaxCheckouts = 2 })
	ctx := context.Background()
	var commits []string
	var held *Checkout
	for i := 0; i < 4; i++ {
		h := g.commit(map[string]string{"f": strings.Repeat("x", i+1)})
		commits = append(commits, h)
		co, err := c.Checkout(ctx, Remote{URL: g.URL, Ref: h})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			held = co // in use: never evicted
			continue
		}
		co.Release()
	}
	keys := c.checkouts.keys()
	if len(keys) != 2 || !contains(keys, commits[0]) || !contains(keys, commits[3]) {
		t.Errorf("kept %v, want the held %s and the newest %s", keys, commits[0], commits[3])
	}
	if b, err := os.ReadFile(filepath.Join(held.Dir, "f")); err != nil || string(b) != "x" {
		t.Errorf("held checkout changed: %q %v", b, err)
	}
	held.Release()
	// Concurrent runs of one commit share one checkout, built once.
	var wg sync.WaitGroup
	dirs := make([]string, 8)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co, err := c.Checkout(ctx, Remote{URL: g.URL, Ref: commits[1]})
			if err != nil {
				t.Error(err)
				return
			}
			dirs[i] = co.Dir
			co.Release()
		}()
	}
	wg.Wait()
	for _, d := range dirs {
		if d != dirs[0] || !strings.HasSuffix(d, commits[1]) {
			t.Fatalf("dirs %v", dirs)
		}
	}
	// A new Cache on the same directory finds what is on disk.
	c2, err := New(c.cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.checkouts.keys()) != 2 {
		t.Errorf("reopened cache holds %v", c2.checkouts.keys())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestFetchErrorNamesTheURLAndStaleRefStillRuns(t *testing.T) {
	c := newCache(t, nil)
	_, err := c.Checkout(context.Background(), Remote{URL: "file://" + t.TempDir() + "/none.git", Ref: "main"})
	if err == nil || !strings.Contains(err.Error(), "none.git") {
		t.Errorf("missing repository: %v", err)
	}
	g := newGitRepo(t)
	c1 := g.commit(map[string]string{"f": "1"})
	r := Remote{URL: g.URL, Ref: "main", Poll: time.Nanosecond}
	if co, err := c.Checkout(context.Background(), r); err != nil {
		t.Fatal(err)
	} else {
		co.Release()
	}
	if err := os.RemoveAll(strings.TrimPrefix(g.URL, "file://")); err != nil {
		t.Fatal(err)
	}
	co, err := c.Checkout(context.Background(), r)
	if err != nil || co.Commit != c1 {
		t.Fatalf("remote gone: want the last known commit, got %v %v", co, err)
	}
	co.Release()
}

func TestVenvInstallsRequirementsOnceFromALocalWheel(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	if out, err := exec.Command(py, "-c", "import venv, ensurepip").CombinedOutput(); err != nil {
		t.Skipf("python3 has no venv/ensurepip (install python3-venv): %s", out)
	}
	dir := t.TempDir()
	wheels := filepath.Join(dir, "wheels")
	writeWheel(t, wheels, "meshgwdemo", "1.0", "VALUE = 42\n")
	reqs := filepath.Join(dir, "requirements.txt")
	if err := os.WriteFile(reqs, []byte("# offline\nmeshgwdemo==1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCache(t, nil)
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=" + wheels}
	// Each build gets its own bound: making a venv took 20-40 s on this
	// machine under load, and three builds shared one 2-minute bound.
	venv := func(key string) (*Venv, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return c.Venv(ctx, key, py, reqs, env)
	}
	v, err := venv("commit-a:scripts")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(v.Python, "-c", "import meshgwdemo; print(meshgwdemo.VALUE)").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("installed package: %s %v", out, err)
	}
	v.Release()
	// Same key: the same environment, not built again (seen by its speed
	// and by the marker file we drop into it).
	marker := filepath.Join(filepath.Dir(filepath.Dir(v.Python)), "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	v2, err := venv("commit-a:scripts")
	if err != nil {
		t.Fatal(err)
	}
	v2.Release()
	if _, err := os.Stat(marker); err != nil || v2.Python != v.Python {
		t.Errorf("venv rebuilt for the same key: %v", err)
	}
	// A requirement that cannot be met fails with pip's reason.
	if err := os.WriteFile(reqs, []byte("nosuchpkg==9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := venv("commit-b:scripts"); err == nil || !strings.Contains(err.Error(), "nosuchpkg") {
		t.Errorf("unmet requirement: %v", err)
	}
	if got := c.venvs.keys(); len(got) != 1 {
		t.Errorf("venvs %v, want only the good one", got)
	}
}

// writeWheel writes a minimal pure-Python wheel (no hashes in RECORD).
func writeWheel(t *testing.T, dir, name, version, body string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name+"-"+version+"-py3-none-any.whl"))
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	info := name + "-" + version + ".dist-info/"
	files := [][2]string{
		{name + "/__init__.py", body},
		{info + "METADATA", "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n"},
		{info + "WHEEL", "Wheel-Version: 1.0\nGenerator: meshgw-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
		{info + "RECORD", name + "/__init__.py,,\n" + info + "METADATA,,\n" + info + "WHEEL,,\n" + info + "RECORD,,\n"},
	}
	for _, fl := range files {
		w, err := zw.Create(fl[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(fl[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
