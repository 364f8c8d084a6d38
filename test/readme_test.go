package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlock returns the first ```sh block after heading in README.md.
func readmeBlock(t *testing.T, root, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, heading)
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	s = s[i:]
	start := strings.Index(s, "```sh\n")
	if start < 0 {
		t.Fatalf("no sh block after %q", heading)
	}
	s = s[start+len("```sh\n"):]
	end := strings.Index(s, "\n```")
	if end < 0 {
		t.Fatalf("unterminated sh block after %q", heading)
	}
	return s[:end]
}

// runBlock runs a README block as written, with bash -e -o pipefail, in dir,
// and returns what it printed. The agents it leaves in the background are
// stopped when it ends (a trap) and killed with its process group when the
// test ends, whatever happened; MESHGW_ variables of the test's environment
// are not passed on.
func runBlock(t *testing.T, dir, block string, timeout time.Duration) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	script := "trap 'kill -9 $(jobs -p) 2>/dev/null' EXIT\n" + block
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A file, not a pipe: agents in the background inherit it, and Wait
	// must not wait for them to close it.
	outPath := filepath.Join(t.TempDir(), "out")
	outFile, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHGW_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	err = cmd.Wait()
	out, _ := os.ReadFile(outPath)
	return out, err
}

// The README's quick start, pasted as one block, works: it is run as
// written by bash -e (every command must succeed) from a directory that
// looks like a checkout (its entries link to the module's), so even its
// `go build` line runs unchanged. It uses the README's fixed ports and
// /tmp/mgw, which this test owns while it runs.
func TestReadmeQuickStartRunsAsWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs the whole quick start")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlock(t, root, "## Quick start")
	work := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ".git" || e.Name() == "meshgw" || e.Name() == "echo.json" {
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(work, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	os.RemoveAll("/tmp/mgw")
	t.Cleanup(func() { os.RemoveAll("/tmp/mgw") })

	data, err := runBlock(t, work, block, 3*time.Minute)
	out := bytes.NewBuffer(data)
	if err != nil {
		for _, n := range []string{"n1", "n2", "n3"} {
			if log, rerr := os.ReadFile("/tmp/mgw/" + n + ".log"); rerr == nil {
				lines := strings.Split(strings.TrimSpace(string(log)), "\n")
				if len(lines) > 30 {
					lines = lines[len(lines)-30:]
				}
				t.Logf("---- %s.log ----\n%s", n, strings.Join(lines, "\n"))
			}
		}
		t.Fatalf("the quick start failed: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"is ready", `"msg":"hi"`, "refused", "failed", `"msg":"still"`, "is leaving the mesh"} {
		if !strings.Contains(got, want) {
			t.Errorf("quick start output lacks %q:\n%s", want, got)
		}
	}
	t.Logf("quick start output:\n%s", got)
}
