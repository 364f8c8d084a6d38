package main

import (
	"bytes"
	"strings"
	"testing"
)

// walk calls f for every command and nested command with its full path.
func walk(cmds []command, path []string, f func(c *command, path []string)) {
	for i := range cmds {
		c := &cmds[i]
		p := append(append([]string{}, path...), c.name)
		f(c, p)
		walk(c.subs, p, f)
	}
}

func runCLI(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// Every command and nested command explains itself with -h on stdout,
// exit 0: a synopsis, a description, its positional arguments and its
// flags with their defaults. A leaf refuses an extra argument with exit
// 2 and names it; a group refuses an unknown subcommand.
func TestEveryCommandHasHelpAndRefusesExtraArguments(t *testing.T) {
	t.Setenv("MESHGW_HTTP_ADDR", "")
	leaves := 0
	walk(allCommands(), nil, func(c *command, path []string) {
		name := strings.Join(path, " ")
		if c.desc == "" {
			t.Errorf("%s: no description", name)
		}
		out, errOut, code := runCLI(append(path, "-h")...)
		if code != 0 || errOut != "" {
			t.Errorf("%s -h: exit %d, stderr %q", name, code, errOut)
		}
		if !strings.HasPrefix(out, "Usage: meshgw "+name+" ") {
			t.Errorf("%s -h: no synopsis first: %q", name, firstLine(out))
		}
		if want := strings.Fields(c.desc); len(want) > 3 && !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(want[:4], " ")) {
			t.Errorf("%s -h: description missing", name)
		}
		if c.subs != nil {
			for _, s := range c.subs {
				if !strings.Contains(out, "  "+s.name) {
					t.Errorf("%s -h: does not list %s", name, s.name)
				}
			}
			if _, _, code := runCLI(path...); code != 2 {
				t.Errorf("%s without a subcommand: exit %d, want 2", name, code)
			}
			if _, e, code := runCLI(append(path, "bogus")...); code != 2 || !strings.Contains(e, `"bogus"`) {
				t.Errorf("%s bogus: exit %d, stderr %q", name, code, e)
			}
			return
		}
		leaves++
		if !strings.Contains(out, "\nFlags:") {
			t.Errorf("%s -h: no flags section", name)
		}
		if name != "agent" && name != "raft recover" && strings.Contains(out, "-http-addr") &&
			!strings.Contains(out, `(default "127.0.0.1:7480")`) {
			t.Errorf("%s -h: flags without their defaults:\n%s", name, out)
		}
		args := append([]string{}, path...)
		for _, a := range c.args {
			if !strings.Contains(out, "\n  "+a.name+" ") || !strings.Contains(firstLine(out), a.name) {
				t.Errorf("%s -h: argument %s not described", name, a.name)
			}
			if !strings.HasPrefix(a.name, "[") {
				args = append(args, "x")
			}
		}
		args = append(args, "extra-arg")
		_, errOut, code = runCLI(args...)
		if code != 2 || !strings.Contains(errOut, `unexpected argument "extra-arg"`) ||
			strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming the extra argument", args, code, errOut)
		}
	})
	if leaves < 25 {
		t.Fatalf("walked only %d leaf commands", leaves)
	}
	for _, h := range []string{"-h", "help", "--help"} {
		if out, _, code := runCLI(h); code != 0 || !strings.Contains(out, "Commands:") {
			t.Errorf("meshgw %s: exit %d, stdout %q", h, code, out)
		}
	}
}

func TestAgentHelpShowsDefaults(t *testing.T) {
	out, _, code := runCLI("agent", "-h")
	for _, want := range []string{"-bind", "(default 0.0.0.0:7946)", "-cluster", "(default default)",
		"-bootstrap-expect", "(default 3)", "-max-body-bytes", "(default 4194304)", "MESHGW_HTTP"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("agent -h: exit %d, %q missing in:\n%s", code, want, out)
		}
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
