package runner

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"testing"
	"time"
)

// testUser returns a user other than root to run as, creating it with
// useradd when it is absent. Switching users needs root: skip otherwise.
func testUser(t *testing.T) *user.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running a process as another user needs root; this test runs as uid", os.Geteuid())
	}
	const name = "meshgw-exec-test"
	if u, err := user.Lookup(name); err == nil {
		return u
	}
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
		name).CombinedOutput(); err != nil {
		t.Skipf("useradd %s: %v: %s", name, err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s after useradd: %v", name, err)
	}
	return u
}

func runID(t *testing.T, e *Executor, userName string) ExecResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.Exec(ctx, ExecRequest{Command: []string{"id", "-u"}, User: userName, Dir: "/",
		Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A service's user, or the runner's default, is who the process runs as;
// the service's choice wins over the default.
func TestExecRunsAsUser(t *testing.T) {
	u := testUser(t)
	e := newExec(t, nil)
	if res := runID(t, e, u.Username); res.Status != Succeeded || strings.TrimSpace(string(res.Stdout)) != u.Uid {
		t.Errorf("user %s: %s %q %s, want uid %s", u.Username, res.Status, res.Stdout, res.Error, u.Uid)
	}
	if res := runID(t, e, u.Uid); strings.TrimSpace(string(res.Stdout)) != u.Uid {
		t.Errorf("uid %s: %q %s", u.Uid, res.Stdout, res.Error)
	}
	d := newExec(t, func(c *Config) { c.DefaultUser = u.Username })
	if res := runID(t, d, ""); strings.TrimSpace(string(res.Stdout)) != u.Uid {
		t.Errorf("default user %s: %q %s, want uid %s", u.Username, res.Stdout, res.Error, u.Uid)
	}
	if res := runID(t, d, "0"); strings.TrimSpace(string(res.Stdout)) != "0" {
		t.Errorf("uid 0 over the default: %q %s", res.Stdout, res.Error)
	}
}

// A user the runner does not have fails the run, saying why; it never
// falls back to the agent's own user.
func TestExecUnknownUserFails(t *testing.T) {
	e := newExec(t, nil)
	res := runID(t, e, "no-such-meshgw-user")
	if res.Status != Failed || res.ExitCode != -1 || !strings.Contains(res.Error, "no such user") ||
		len(res.Stdout) != 0 {
		t.Errorf("unknown user: %s exit %d %q %q", res.Status, res.ExitCode, res.Error, res.Stdout)
	}
}
