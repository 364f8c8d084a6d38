package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type fakeSecrets map[string]string

func (f fakeSecrets) SecretValues(_ context.Context, _ string, names []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, n := range names {
		if v, ok := f[n]; ok {
			out[n] = []byte(v)
		}
	}
	return out, nil
}

func TestServiceSecretsValidation(t *testing.T) {
	base := func(refs ...SecretRef) Service {
		s := execSvc("true")
		s.Env = map[string]string{"TAKEN": "x"}
		s.Secrets = refs
		return s
	}
	ok := base(SecretRef{Name: "db-pass", Env: "DB_PASSWORD"}, SecretRef{Name: "tls", File: "certs/key.pem"})
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		svc   Service
		field string
	}{
		{base(SecretRef{Name: "", Env: "A"}), "secrets[0].name"},
		{base(SecretRef{Name: "a/b", Env: "A"}), "secrets[0].name"},
		{base(SecretRef{Name: "a"}), "secrets[0]"},
		{base(SecretRef{Name: "a", Env: "A", File: "f"}), "secrets[0]"},
		{base(SecretRef{Name: "a", Env: "1A"}), "secrets[0].env"},
		{base(SecretRef{Name: "a", Env: "TAKEN"}), "secrets[0].env"},
		{base(SecretRef{Name: "a", Env: "A"}, SecretRef{Name: "b", Env: "A"}), "secrets[1].env"},
		{base(SecretRef{Name: "a", Env: "MESHGW_SECRETS_DIR"}), "secrets[0].env"},
		{base(SecretRef{Name: "a", File: "../etc/passwd"}), "secrets[0].file"},
		{base(SecretRef{Name: "a", File: "/etc/passwd"}), "secrets[0].file"},
		{base(SecretRef{Name: "a", File: "x//y"}), "secrets[0].file"},
		{base(SecretRef{Name: "a", File: "f"}, SecretRef{Name: "b", File: "f"}), "secrets[1].file"},
		{Service{Name: "h", Type: TypeHTTP, Upstream: "http://127.0.0.1:1", Secrets: []SecretRef{{Name: "a", Env: "A"}}}, "secrets"},
	} {
		err := c.svc.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("%+v: got %v, want field %s", c.svc.Secrets, err, c.field)
		}
	}
	// The JSON form round-trips through ParseService.
	b, _ := json.Marshal(ok)
	if s, err := ParseService(b); err != nil || len(s.Secrets) != 2 || s.Secrets[1].File != "certs/key.pem" {
		t.Fatalf("%+v %v", s.Secrets, err)
	}
}

// A run driven by a gateway reaches a remote runner with the secret in its
// environment; the value is redacted in the answer, the stream and the record.
func TestRunWithSecretsRemoteRunner(t *testing.T) {
	c := newTCluster(t)
	g := c.add("g1", false, nil)
	c.add("r1", true, nil)
	c.runners.set(testCluster, Runner{Name: "g1", RPCAddr: g.tr.Addr().String(), Roles: []string{"gateway"}})
	g.d.SetSecrets(fakeSecrets{"db-pass": "correct-horse-battery"})
	svc := execSvc("sh", "-c", `echo "pw=$DB_PASSWORD"; printf '%s' "$DB_PASSWORD" >&2`)
	svc.Secrets = []SecretRef{{Name: "db-pass", Env: "DB_PASSWORD"}}
	var streamed strings.Builder
	ex, err := g.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{
		OnOutput: func(_ string, b []byte) { streamed.Write(b) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusSucceeded || ex.Runner != "r1" || ex.Stdout != "pw=[redacted:db-pass]\n" || ex.Stderr != "[redacted:db-pass]" {
		t.Fatalf("%+v", ex)
	}
	rec := c.record(ex.ID)
	b, _ := json.Marshal(rec)
	if strings.Contains(string(b), "correct-horse") || strings.Contains(streamed.String(), "correct-horse") {
		t.Fatalf("value in the record %s or the stream %q", b, streamed.String())
	}
	if rec.ServiceDef == nil || len(rec.ServiceDef.Secrets) != 1 {
		t.Fatalf("record lost the secret reference: %+v", rec.ServiceDef)
	}

	// A secret that does not exist fails the run, naming it.
	svc.Secrets = []SecretRef{{Name: "nope", Env: "X"}}
	ex, err = g.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Status != StatusFailed || !strings.Contains(ex.Error, `secret "nope"`) {
		t.Fatalf("%+v", ex)
	}
}

func TestRunWithSecretsNoSource(t *testing.T) {
	e := newLocal(t, nil)
	svc := execSvc("true")
	svc.Secrets = []SecretRef{{Name: "a", Env: "A"}}
	ex, err := e.d.Run(context.Background(), testCluster, svc, nil, RunOptions{})
	if err != nil || ex.Status != StatusFailed || !strings.Contains(ex.Error, "no secret store") {
		t.Fatalf("%+v %v", ex, err)
	}
}
