package runner

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Secret is a secret value handed to one process: in the environment
// variable Env, or in the file File (a relative path) inside a private
// directory made for the run, whose path the process finds in
// $MESHGW_SECRETS_DIR. Every value is redacted from the output.
type Secret struct {
	Name  string
	Value []byte
	Env   string
	File  string
}

// SecretsDirEnv names the private directory of a run's secret files.
const SecretsDirEnv = "MESHGW_SECRETS_DIR"

// runSecrets is what one run's secrets set up: environment entries, the
// private directory (removed by cleanup) and the output redactors.
type runSecrets struct {
	env       []string
	dir       string
	redaction []Redaction
	writers   []*redactor
}

// prepareSecrets writes the file secrets (mode 0600, in a 0700 directory
// owned by the user the process runs as) and collects the environment
// entries. Errors never carry a value.
func prepareSecrets(secrets []Secret, cred *syscall.Credential) (*runSecrets, error) {
	rs := &runSecrets{}
	if len(secrets) == 0 {
		return rs, nil
	}
	for _, s := range secrets {
		rs.redaction = append(rs.redaction, Redaction{Name: s.Name, Value: s.Value})
		switch {
		case s.Env != "" && s.File == "":
			if strings.ContainsAny(s.Env, "=\x00") || strings.IndexByte(string(s.Value), 0) >= 0 {
				return rs, fmt.Errorf("%w: secret %q: bad environment variable or a NUL in its value", ErrInvalid, s.Name)
			}
			rs.env = append(rs.env, s.Env+"="+string(s.Value))
		case s.File != "" && s.Env == "":
			if err := rs.writeFile(s, cred); err != nil {
				rs.cleanup()
				return rs, err
			}
		default:
			return rs, fmt.Errorf("%w: secret %q needs exactly one of env and file", ErrInvalid, s.Name)
		}
	}
	if rs.dir != "" {
		rs.env = append(rs.env, SecretsDirEnv+"="+rs.dir)
	}
	return rs, nil
}

func (rs *runSecrets) writeFile(s Secret, cred *syscall.Credential) error {
	clean := filepath.Clean(s.File)
	if filepath.IsAbs(s.File) || clean != s.File || clean == "." || strings.HasPrefix(clean, "..") {
		return fmt.Errorf("%w: secret %q: file %q must be a clean relative path", ErrInvalid, s.Name, s.File)
	}
	if rs.dir == "" {
		dir, err := os.MkdirTemp("", "meshgw-secrets-")
		if err != nil {
			return fmt.Errorf("secret files: %w", err)
		}
		rs.dir = dir
		if cred != nil {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return fmt.Errorf("secret files: give the directory to uid %d: %w", cred.Uid, err)
			}
		}
	}
	p := filepath.Join(rs.dir, clean)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("secret %q: %w", s.Name, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("secret %q: write file %s: %w", s.Name, clean, err)
	}
	_, werr := f.Write(s.Value)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("secret %q: write file %s: %w", s.Name, clean, werr)
	}
	if cred != nil {
		if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("secret %q: give the file to uid %d: %w", s.Name, cred.Uid, err)
		}
		if d := filepath.Dir(p); d != rs.dir {
			_ = os.Chown(d, int(cred.Uid), int(cred.Gid))
		}
	}
	return nil
}

// wrap returns w behind a redactor of the run's values (w itself when
// there are none).
func (rs *runSecrets) wrap(w io.Writer) io.Writer {
	if len(rs.redaction) == 0 {
		return w
	}
	r := newRedactor(w, rs.redaction)
	rs.writers = append(rs.writers, r)
	return r
}

// flush emits what the redactors hold back; call once the output ended.
func (rs *runSecrets) flush() {
	for _, w := range rs.writers {
		w.Flush()
	}
}

// cleanup removes the secret files.
func (rs *runSecrets) cleanup() {
	if rs.dir != "" {
		_ = os.RemoveAll(rs.dir)
		rs.dir = ""
	}
}

// redact removes the run's values from a message.
func (rs *runSecrets) redact(s string) string {
	if len(rs.redaction) == 0 || s == "" {
		return s
	}
	return string(Redact([]byte(s), rs.redaction))
}
