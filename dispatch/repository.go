package dispatch

import (
	"bytes"
	"encoding/json"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Script service types: thin conveniences over exec that build the argv
// on the runner from Path and the input (source.go).
const (
	TypePython  = "python"  // python3 PATH --key value ... (venv from requirements.txt)
	TypeAnsible = "ansible" // ansible-playbook -i localhost, --connection=local -e INPUT PATH
)

// Bounds of a repository definition.
const (
	MaxRepositorySize  = 8 << 10
	maxRepoURLLen      = 2048
	maxRefLen          = 255
	maxPathLen         = 1024
	DefaultPoll        = 10 * time.Second
	minPoll            = time.Second
	maxArgKeyLen       = 64
	maxAnsibleVarsSize = 100 << 10 // one argv string stays under Linux's 128 KiB
)

// Repository is a Git repository services take their scripts from, stored
// under repository/<name> in the cluster's group. Runners fetch it.
type Repository struct {
	Name string `json:"name"`
	// URL: https://, http:// or file:// (a path on every runner); no
	// user or password in it (use Credentials).
	URL string `json:"url"`
	// Ref: a branch, a tag or a full commit hash; resolved on the runner
	// at each run (fetching at most every Poll).
	Ref string `json:"ref"`
	// Credentials names the secret whose value authenticates the fetch
	// ("user:password", or a token sent as the password of user "git").
	Credentials *RepositoryCredentials `json:"credentials,omitempty"`
	// Poll: a runner fetches the repository at most this often (default
	// 10s, at least 1s); a ref that is a commit not yet fetched is fetched
	// at once.
	Poll Duration `json:"poll,omitempty"`
	// Version is the store version; set on read, ignored on write.
	Version uint64 `json:"version,omitempty"`
}

// RepositoryCredentials points at a secret of the cluster.
type RepositoryCredentials struct {
	Secret string `json:"secret"`
}

// RepositoryKey is the store key of a repository definition.
func RepositoryKey(name string) string { return "repository/" + name }

// EffectivePoll is Poll with the default applied.
func (r *Repository) EffectivePoll() time.Duration {
	if r.Poll <= 0 {
		return DefaultPoll
	}
	return r.Poll.Std()
}

// ParseRepository decodes and validates a repository definition (unknown
// fields refused). Errors are *ValidationError naming the field; a missing
// name is Field "name" (the API then takes the path's).
func ParseRepository(b []byte) (Repository, error) {
	var r Repository
	if len(b) > MaxRepositorySize {
		return r, invalid("", "definition is %d bytes, more than %d", len(b), MaxRepositorySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		var raw map[string]json.RawMessage
		if json.Unmarshal(b, &raw) == nil {
			for _, f := range []string{"name", "url", "ref", "credentials", "poll", "version"} {
				if v, ok := raw[f]; ok {
					one, _ := json.Marshal(map[string]json.RawMessage{f: v})
					var probe Repository
					pd := json.NewDecoder(bytes.NewReader(one))
					pd.DisallowUnknownFields()
					if pd.Decode(&probe) != nil {
						return r, invalid(f, "%s", msg)
					}
				}
			}
		}
		return r, invalid("", "malformed JSON: %s", msg)
	}
	if dec.More() {
		return r, invalid("", "trailing data after the definition")
	}
	return r, r.Validate()
}

// Validate checks the definition.
func (r *Repository) Validate() error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	if r.URL == "" {
		return invalid("url", "missing (https://host/owner/repo.git, or file:///path/on/every/runner)")
	}
	if len(r.URL) > maxRepoURLLen {
		return invalid("url", "longer than %d bytes", maxRepoURLLen)
	}
	u, err := url.Parse(r.URL)
	if err != nil {
		return invalid("url", "not a URL")
	}
	switch u.Scheme {
	case "https", "http":
		if u.Host == "" {
			return invalid("url", "missing host")
		}
	case "file":
		if u.Host != "" || !path.IsAbs(u.Path) {
			return invalid("url", "a file URL names an absolute path: file:///srv/git/repo.git")
		}
	default:
		return invalid("url", "scheme must be https, http or file, not %q", u.Scheme)
	}
	if u.User != nil {
		return invalid("url", "must not carry a user or password: name a secret in credentials")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return invalid("url", "must not carry a query or fragment")
	}
	if err := validRef(r.Ref); err != nil {
		return err
	}
	if r.Credentials != nil {
		if err := ValidateName(r.Credentials.Secret); err != nil {
			return invalid("credentials.secret", "%s", err.(*ValidationError).Message)
		}
		if u.Scheme != "https" {
			return invalid("credentials", "credentials are sent over https only, not %s", u.Scheme)
		}
	}
	if r.Poll != 0 && (r.Poll.Std() < minPoll || r.Poll.Std() > MaxTimeout) {
		return invalid("poll", "must be between %s and %s", minPoll, MaxTimeout)
	}
	return nil
}

// validRef accepts branch and tag names and commit hashes as git does,
// short of its rarer rules.
func validRef(ref string) error {
	switch {
	case ref == "":
		return invalid("ref", "missing (a branch, a tag or a commit hash)")
	case len(ref) > maxRefLen:
		return invalid("ref", "longer than %d bytes", maxRefLen)
	case strings.HasPrefix(ref, "-"), strings.HasPrefix(ref, "/"), strings.HasSuffix(ref, "/"),
		strings.HasPrefix(ref, "refs/"), strings.Contains(ref, ".."), strings.Contains(ref, "//"),
		strings.HasSuffix(ref, ".lock"), strings.Contains(ref, "@{"):
		return invalid("ref", "%q is not a branch or tag name (give it without refs/heads/ or refs/tags/)", ref)
	}
	for i := 0; i < len(ref); i++ {
		if c := ref[i]; c <= ' ' || c == 0x7f || strings.IndexByte("~^:?*[\\", c) >= 0 {
			return invalid("ref", "%q contains a character a ref may not have", ref)
		}
	}
	return nil
}

// scriptKind reports whether t is a type whose argv is built on the runner.
func scriptKind(t string) bool { return t == TypePython || t == TypeAnsible }

// runsProcess reports whether a service of type t runs a process (exec,
// python, ansible): it is run with Run, not proxied.
func runsProcess(t string) bool { return t == TypeExec || scriptKind(t) }

// validateSource checks repository and path for an exec service, and the
// whole of a python or ansible one (called from Validate).
func (s *Service) validateSource() error {
	if s.Repository != "" {
		if err := ValidateName(s.Repository); err != nil {
			return invalid("repository", "%s", err.(*ValidationError).Message)
		}
	}
	if s.Path != "" {
		if len(s.Path) > maxPathLen || strings.IndexByte(s.Path, 0) >= 0 {
			return invalid("path", "longer than %d bytes or contains a NUL byte", maxPathLen)
		}
		if s.Repository != "" && !filepath.IsLocal(s.Path) {
			return invalid("path", "%q must be relative to the repository's root and stay inside it (no .., not absolute)", s.Path)
		}
		if s.Repository == "" && !filepath.IsAbs(s.Path) {
			return invalid("path", "%q must be absolute on the runners (or name a repository)", s.Path)
		}
	}
	switch {
	case s.Type == TypeExec && s.Repository == "" && s.Path != "":
		return invalid("path", "an exec service runs path from a repository: name one in repository, or put the program in command")
	case s.Type == TypeExec && s.Repository != "" && s.Path == "":
		return invalid("path", "missing: the file of the repository to run")
	case scriptKind(s.Type) && s.Path == "":
		return invalid("path", "a %s service needs the path of its %s", s.Type, map[string]string{TypePython: "script", TypeAnsible: "playbook"}[s.Type])
	case scriptKind(s.Type) && len(s.Command) > 0:
		return invalid("command", "a %s service builds its command from path and the input: leave command out", s.Type)
	case s.Repository != "" && s.Dir != "":
		return invalid("dir", "a service from a repository runs in its checkout: leave dir out")
	}
	if scriptKind(s.Type) {
		switch {
		case s.Upstream != "":
			return invalid("upstream", "only http services have an upstream")
		case s.Public:
			return invalid("public", "only http services can be public")
		case s.PassAuthorization:
			return invalid("pass_authorization", "only http services have an upstream to pass Authorization to")
		}
	}
	return nil
}

// validateScriptInput checks that the input of a python or ansible
// service can become its arguments: a JSON object (or nothing), each key
// a flag name for python. A *SchemaError, like a decorator's.
func validateScriptInput(svc *Service, input []byte) error {
	if !scriptKind(svc.Type) {
		return nil
	}
	_, err := scriptArgs(svc.Type, input)
	return err
}
