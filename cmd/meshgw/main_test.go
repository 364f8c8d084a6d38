package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/meshgw/meshgw/node/config"
)

// TestReadmeDocumentsEveryOption keeps the README's flag table true.
func TestReadmeDocumentsEveryOption(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range config.Options() {
		if !bytes.Contains(data, []byte("`-"+o[0]+"` | `"+o[1]+"`")) {
			t.Errorf("README.md does not document -%s (%s)", o[0], o[1])
		}
	}
}

func TestCLIErrorsAreOneLineAndNonZero(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"nosuch"}, 2, "unknown command"},
		{[]string{"agent", "-no-such-flag"}, 2, "no-such-flag"},
		{[]string{"agent", "-bootstrap-expect", "x", "-data-dir", "/tmp/x"}, 2, "bootstrap-expect"},
		{[]string{"members", "-format", "yaml"}, 2, "-format"},
		{[]string{"members", "-http-addr", "127.0.0.1:1"}, 1, "reach agent"},
		{[]string{"get", "things"}, 2, `unknown subcommand "things"`},
		{[]string{"services", "get"}, 2, "missing argument NAME (see meshgw services get -h)"},
		{[]string{"run"}, 2, "missing argument SERVICE"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %q)", c.args, code, c.code, errb.String())
		}
		msg := strings.TrimSpace(errb.String())
		if !strings.Contains(msg, c.want) {
			t.Errorf("%v: stderr %q does not mention %q", c.args, msg, c.want)
		}
		if strings.Count(msg, "\n") > 0 {
			t.Errorf("%v: error is not one line: %q", c.args, msg)
		}
	}
}

func TestVersionAndKeygen(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), version) {
		t.Fatalf("version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"keygen"}, &out, &errb); code != 0 || len(strings.TrimSpace(out.String())) != 44 {
		t.Fatalf("keygen: %d %q", code, out.String())
	}
}
