package dispatch

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/meshgw/meshgw/dispatch/runner"
)

// SecretRef is one secret a service's process receives: in the
// environment variable Env, or in the file File (a relative path inside a
// private directory the runner makes for the run, found in
// $MESHGW_SECRETS_DIR). The definition names the secret; its value lives
// encrypted in the cluster's state (SecretKey) and reaches the runner only
// in the exec request of a run.
type SecretRef struct {
	Name string `json:"name"`
	Env  string `json:"env,omitempty"`
	File string `json:"file,omitempty"`
}

// Bounds on secrets.
const (
	MaxSecretRefs   = 32
	MaxSecretValue  = 16 << 10
	MinSecretValue  = 4 // shorter values would redact ordinary output
	maxSecretPathLn = 255
)

// SecretKey is the store key of a secret (its sealed value and metadata).
func SecretKey(name string) string { return "secret/" + name }

// ErrSecretUnavailable: a secret a run needs does not exist or cannot be
// decrypted on this node. The run fails; the message names the secret.
var ErrSecretUnavailable = errors.New("dispatch: secret unavailable")

// SecretSource gives the values of a cluster's secrets to the node that
// drives a run (node implements it over the store and the secrets key).
// A missing or undecryptable secret is an error matching
// ErrSecretUnavailable that names it; errors never carry a value.
type SecretSource interface {
	SecretValues(ctx context.Context, cluster string, names []string) (map[string][]byte, error)
}

// SetSecrets installs the source of secret values; call it before Start.
// Without one, a service with secrets fails its runs.
func (d *Dispatcher) SetSecrets(src SecretSource) { d.secrets = src }

// validateSecrets checks the "secrets" field.
func (s *Service) validateSecrets() error {
	if len(s.Secrets) == 0 {
		return nil
	}
	if s.Type != TypeExec {
		return invalid("secrets", "only exec services take secrets")
	}
	if len(s.Secrets) > MaxSecretRefs {
		return invalid("secrets", "more than %d secrets", MaxSecretRefs)
	}
	envs, files := map[string]bool{}, map[string]bool{}
	for i, r := range s.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
		if err := ValidateName(r.Name); err != nil {
			return invalid(f+".name", "%s", strings.TrimPrefix(err.Error(), "invalid service: name: "))
		}
		switch {
		case r.Env == "" && r.File == "":
			return invalid(f, "needs env (a variable name) or file (a relative path)")
		case r.Env != "" && r.File != "":
			return invalid(f, "env and file exclude each other: give one")
		case r.Env != "":
			if !validEnvName(r.Env) {
				return invalid(f+".env", "%q is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", r.Env)
			}
			if _, ok := s.Env[r.Env]; ok {
				return invalid(f+".env", "%s is also set in env", r.Env)
			}
			if r.Env == runner.SecretsDirEnv || envs[r.Env] {
				return invalid(f+".env", "%s is taken", r.Env)
			}
			envs[r.Env] = true
		default:
			clean := filepath.Clean(r.File)
			if len(r.File) > maxSecretPathLn || filepath.IsAbs(r.File) || clean != r.File || clean == "." ||
				strings.HasPrefix(clean, "..") || strings.IndexByte(r.File, 0) >= 0 {
				return invalid(f+".file", "must be a clean relative path inside the run's secrets directory, at most %d bytes", maxSecretPathLn)
			}
			if files[clean] {
				return invalid(f+".file", "%s is given twice", clean)
			}
			files[clean] = true
		}
	}
	return nil
}

// secretWire is one secret of an exec request: sent over the mutual-TLS
// link to the runner of the attempt only, never stored or logged.
type secretWire struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
	Env   string `json:"env,omitempty"`
	File  string `json:"file,omitempty"`
}

// secretsFor resolves the values svc's secrets take for one attempt.
func (d *Dispatcher) secretsFor(ctx context.Context, cluster string, svc *Service) ([]secretWire, error) {
	if len(svc.Secrets) == 0 {
		return nil, nil
	}
	if d.secrets == nil {
		return nil, fmt.Errorf("%w: this node has no secret store; service %s needs secrets", ErrSecretUnavailable, svc.Name)
	}
	names := make([]string, 0, len(svc.Secrets))
	for _, r := range svc.Secrets {
		names = append(names, r.Name)
	}
	vals, err := d.secrets.SecretValues(ctx, cluster, names)
	if err != nil {
		return nil, err
	}
	out := make([]secretWire, 0, len(svc.Secrets))
	for i, r := range svc.Secrets {
		v, ok := vals[r.Name]
		if !ok {
			return nil, fmt.Errorf("%w: secret %q (secrets[%d] of service %s) does not exist: put it with `meshgw secrets put %s`",
				ErrSecretUnavailable, r.Name, i, svc.Name, r.Name)
		}
		out = append(out, secretWire{Name: r.Name, Value: v, Env: r.Env, File: r.File})
	}
	return out, nil
}

// runnerSecrets converts the wire form for the executor.
func runnerSecrets(ws []secretWire) []runner.Secret {
	if len(ws) == 0 {
		return nil
	}
	out := make([]runner.Secret, len(ws))
	for i, w := range ws {
		out[i] = runner.Secret{Name: w.Name, Value: w.Value, Env: w.Env, File: w.File}
	}
	return out
}
