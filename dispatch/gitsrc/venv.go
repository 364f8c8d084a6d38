package gitsrc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Venv is a Python virtual environment with a requirements file
// installed, held until Release.
type Venv struct {
	Python string // the environment's interpreter, absolute
	rel    func()
}

// Release lets the cache remove the environment when it needs room.
func (v *Venv) Release() { v.rel() }

// maxInstallLog bounds the installer output kept for an error.
const maxInstallLog = 4 << 10

// Venv returns the environment for key (e.g. commit + script directory),
// creating it once: python -m venv, then pip install -r requirements
// (skipped when the file names nothing), run with env (the service's
// environment: PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX apply) in the
// requirements file's directory. python is the base interpreter,
// resolved by the caller.
func (c *Cache) Venv(ctx context.Context, key, python, requirements string, env []string) (*Venv, error) {
	reqs, err := os.ReadFile(requirements)
	if err != nil {
		return nil, fmt.Errorf("reading requirements: %w", err)
	}
	sum := sha256.Sum256([]byte(key + "\x00" + python + "\x00" + string(reqs)))
	name := hex.EncodeToString(sum[:16])
	dir, release, err := c.venvs.acquire(ctx, name, func(tmp string) error {
		// The venv is made at its final path (venvs are not relocatable:
		// pip's scripts name it), in a scratch name first only for the
		// rename to mark it complete: build into final's own name.
		return c.makeVenv(ctx, filepath.Join(c.venvs.root, name), tmp, python, requirements, reqs, env)
	})
	if err != nil {
		return nil, err
	}
	return &Venv{Python: filepath.Join(dir, "bin", "python"), rel: release}, nil
}

// makeVenv builds the environment at final and moves it to tmp, which
// dirSet renames back to final: the interpreter's own paths stay right,
// and a half-built environment is never taken for a finished one.
func (c *Cache) makeVenv(ctx context.Context, final, tmp, python, requirements string, reqs []byte, env []string) error {
	_ = os.RemoveAll(final)
	if out, err := run(ctx, "", env, python, "-m", "venv", final); err != nil {
		_ = os.RemoveAll(final)
		return fmt.Errorf("creating the virtual environment (%s -m venv): %v: %s", python, err, out)
	}
	if hasRequirements(reqs) {
		out, err := run(ctx, filepath.Dir(requirements), env, filepath.Join(final, "bin", "python"),
			"-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-r", requirements)
		if err != nil {
			_ = os.RemoveAll(final)
			return fmt.Errorf("installing %s (pip install -r): %v: %s", filepath.Base(requirements), err, out)
		}
	}
	if err := os.Remove(tmp); err != nil {
		_ = os.RemoveAll(final)
		return err
	}
	return os.Rename(final, tmp)
}

// hasRequirements reports whether a requirements file names anything.
func hasRequirements(b []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}

// run runs argv in its own process group (killed with ctx) and returns
// the tail of its combined output.
func run(ctx context.Context, dir string, env []string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// tailBuffer keeps the last maxInstallLog bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > maxInstallLog {
		t.b = append(t.b[:0], t.b[len(t.b)-maxInstallLog:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
