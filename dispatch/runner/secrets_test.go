package runner

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExecSecretsEnvFileAndRedaction(t *testing.T) {
	e := newExec(t, nil)
	var mu sync.Mutex
	var streamed strings.Builder
	// The process prints the value byte by byte (many small writes: the
	// value crosses chunk boundaries), then the file's content, then where
	// the file lives.
	script := `for c in $(printf '%s' "$DB_PASSWORD" | fold -w1); do printf '%s' "$c"; done; echo; ` +
		`cat "$MESHGW_SECRETS_DIR/conf/api.key"; echo; ` +
		`stat -c '%a' "$MESHGW_SECRETS_DIR/conf/api.key"; echo "$MESHGW_SECRETS_DIR" >&2; printf '%s' "$DB_PASSWORD" >&2`
	res, err := e.Exec(context.Background(), ExecRequest{
		Command: []string{"sh", "-c", script},
		Timeout: 10 * time.Second,
		Secrets: []Secret{
			{Name: "db-pass", Value: []byte("pa55-w0rd-xyz"), Env: "DB_PASSWORD"},
			{Name: "api-key", Value: []byte("k3y-material"), File: "conf/api.key"},
		},
		OnOutput: func(stream string, chunk []byte) {
			mu.Lock()
			streamed.Write(chunk)
			mu.Unlock()
		},
	})
	if err != nil || res.Status != Succeeded {
		t.Fatalf("%+v %v", res, err)
	}
	out := string(res.Stdout)
	if want := "[redacted:db-pass]\n[redacted:api-key]\n600\n"; out != want {
		t.Fatalf("stdout %q, want %q", out, want)
	}
	mu.Lock()
	all := streamed.String()
	mu.Unlock()
	for _, v := range []string{"pa55-w0rd-xyz", "k3y-material"} {
		if strings.Contains(all, v) || strings.Contains(string(res.Stderr), v) {
			t.Fatalf("value %q in the streamed output %q or stderr %q", v, all, res.Stderr)
		}
	}
	if !strings.HasSuffix(string(res.Stderr), "[redacted:db-pass]") {
		t.Fatalf("stderr %q: the held-back tail was not flushed", res.Stderr)
	}
	dir := strings.TrimSpace(strings.SplitN(string(res.Stderr), "\n", 2)[0])
	if !strings.HasPrefix(dir, os.TempDir()) {
		t.Fatalf("secrets dir %q", dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("secrets dir %s still there after the run: %v", dir, err)
	}
}

func TestExecSecretFileRefusesEscapes(t *testing.T) {
	e := newExec(t, nil)
	for _, f := range []string{"../x", "/etc/x", "a/../../x", "."} {
		res, err := e.Exec(context.Background(), ExecRequest{Command: []string{"true"}, Timeout: 5 * time.Second,
			Secrets: []Secret{{Name: "s", Value: []byte("value1"), File: f}}})
		if err != nil || res.Status != Failed || !strings.Contains(res.Error, "clean relative path") {
			t.Fatalf("file %q: %+v %v", f, res, err)
		}
		if strings.Contains(res.Error, "value1") {
			t.Fatalf("error shows the value: %s", res.Error)
		}
	}
}
