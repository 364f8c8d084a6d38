package dispatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Service types.
const (
	TypeExec = "exec" // run a command on a runner, input on stdin
	TypeHTTP = "http" // proxy HTTP through a runner to an upstream
)

// Runner choice strategies.
const (
	StrategyRoundRobin  = "round_robin"  // per service, the default
	StrategyLeastLoaded = "least_loaded" // fewest in-flight calls from this node
)

// Bounds on a service definition. They keep one definition small enough to
// live in the replicated store and cheap to validate.
const (
	MaxNameLen         = 63
	MaxServiceSize     = 64 << 10 // encoded JSON definition
	MaxDecoratorSize   = 32 << 10
	MaxTimeout         = 24 * time.Hour
	DefaultTimeout     = 30 * time.Second
	MaxRetries         = 10
	MaxArgs            = 256
	MaxArgLen          = 4096
	MaxEnv             = 256
	MaxRunnerTags      = 32
	maxTagLen          = 256
	maxEnvValueLen     = 8192
	maxDirLen          = 1024
	maxUserLen         = 64
	maxUpstreamLen     = 2048
	maxSchemaErrorsOut = 10
)

// Service is a named, versioned definition stored under svc/<name> in the
// cluster's replicated store.
type Service struct {
	Name    string            `json:"name"`
	Type    string            `json:"type"`
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Dir     string            `json:"dir,omitempty"`
	// User (exec): the user, by name or uid, the process runs as on the
	// runner; empty: the runner's -exec-user, else the agent's own user.
	User       string            `json:"user,omitempty"`
	Timeout    Duration          `json:"timeout,omitempty"`
	Retries    int               `json:"retries,omitempty"`
	Decorator  json.RawMessage   `json:"decorator,omitempty"` // JSON Schema the input must satisfy, or a shared decorator's name
	RunnerTags map[string]string `json:"runner_tags,omitempty"`
	Upstream   string            `json:"upstream,omitempty"`
	Strategy   string            `json:"strategy,omitempty"`
	// Public (http services only): with ACLs on, /svc/{name}/ needs no
	// token; every other route stays locked.
	Public bool `json:"public,omitempty"`
	// PassAuthorization (http services only): the caller's Authorization
	// header goes to the upstream untouched, and meshgw reads the caller's
	// token from X-Meshgw-Token only.
	PassAuthorization bool `json:"pass_authorization,omitempty"`
	// Version is the store version of the definition; set on read, ignored
	// on write (writes use the API's ?cas=).
	Version uint64 `json:"version,omitempty"`
	// Repository (exec, python, ansible): the repository (PUT
	// /v1/repositories/{name}) whose checkout Path is in (source.go).
	Repository string `json:"repository,omitempty"`
	// Path: the file to run, relative to Repository's root, or absolute
	// on the runners for a python or ansible service without one.
	Path string `json:"path,omitempty"`
	// Secrets (exec): secrets the process receives (secrets.go).
	Secrets []SecretRef `json:"secrets,omitempty"`
	// Cache (http only): the response cache policy (servicecache.go).
	Cache     *CacheSpec  `json:"cache,omitempty"`
	Upstreams []Upstream  `json:"upstreams,omitempty"` // http: weighted upstreams (routing.go)
	Health    *Health     `json:"health,omitempty"`    // http: active checks of the upstreams (routing.go)
	Hosts     []string    `json:"hosts,omitempty"`     // http: Host names routed on the data plane (routing.go)
	Paths     []PathRoute `json:"paths,omitempty"`     // http: path prefixes routed on the data plane (routing.go)
	Sticky    *Sticky     `json:"sticky,omitempty"`    // http: keep a client on one upstream (routing.go)
	FailOpen  bool        `json:"fail_open,omitempty"` // http: every upstream unhealthy → use them all, not 503
	// Limits are rate limits held for the whole cluster (limits.go).
	Limits []Limit `json:"limits,omitempty"`
	// MaxInFlight caps the service's requests in flight across the cluster (0: none).
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// OnManagerLoss is what a node cut from the throttle manager does: "share" or "deny".
	OnManagerLoss string `json:"on_manager_loss,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("30s", "1m30s").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\"")
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Std returns the time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// ValidationError says which field of a service definition is wrong.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" { // the definition as a whole
		return "invalid service: " + e.Message
	}
	return fmt.Sprintf("invalid service: %s: %s", e.Field, e.Message)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ParseService decodes a definition, rejecting unknown fields and bodies
// over MaxServiceSize, and validates it. It does not apply defaults.
func ParseService(b []byte) (Service, error) {
	var s Service
	if len(b) > MaxServiceSize {
		return s, invalid("", "definition is %d bytes, more than %d", len(b), MaxServiceSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		switch f := badField(b); f {
		case "":
		case "name":
			// Not Field "name": that means "missing" to the API, which
			// takes the name from the path then.
			return s, invalid("", "name: %s", msg)
		default:
			return s, invalid(f, "%s", msg)
		}
		return s, invalid("", "malformed JSON: %v", err)
	}
	if dec.More() {
		return s, invalid("", "trailing data after the definition")
	}
	return s, s.Validate()
}

// badField names the top-level field of a well-formed JSON object that does
// not decode into a Service (wrong type, bad duration, unknown name): the
// json package does not say which field a custom decoder refused.
func badField(b []byte) string {
	var raw map[string]json.RawMessage
	if json.Unmarshal(b, &raw) != nil {
		return ""
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		one, _ := json.Marshal(map[string]json.RawMessage{k: raw[k]})
		dec := json.NewDecoder(bytes.NewReader(one))
		dec.DisallowUnknownFields()
		var s Service
		if dec.Decode(&s) != nil {
			return k
		}
	}
	return ""
}

// Normalize fills defaults: timeout, strategy. Call before storing.
func (s *Service) Normalize() {
	if s.Timeout == 0 {
		s.Timeout = Duration(DefaultTimeout)
	}
	if s.Strategy == "" {
		s.Strategy = StrategyRoundRobin
	}
	if len(bytes.TrimSpace(s.Decorator)) == 0 || string(bytes.TrimSpace(s.Decorator)) == "null" {
		s.Decorator = nil
	}
}

// EffectiveTimeout is the timeout with the default applied.
func (s *Service) EffectiveTimeout() time.Duration {
	if s.Timeout <= 0 {
		return DefaultTimeout
	}
	return s.Timeout.Std()
}

// Validate checks the definition and returns a *ValidationError naming the
// first bad field. A zero timeout or strategy means the default.
func (s *Service) Validate() error {
	if err := ValidateName(s.Name); err != nil {
		return err
	}
	switch s.Type {
	case TypeExec:
		if err := s.validateSource(); err != nil { // repository, path (repository.go)
			return err
		}
		if len(s.Command) == 0 && s.Repository == "" {
			return invalid("command", "an exec service needs a non-empty command (argv)")
		}
		if len(s.Command) > MaxArgs {
			return invalid("command", "more than %d arguments", MaxArgs)
		}
		if len(s.Command) > 0 && s.Command[0] == "" {
			return invalid("command[0]", "empty program name")
		}
		for i, a := range s.Command {
			if len(a) > MaxArgLen {
				return invalid(fmt.Sprintf("command[%d]", i), "longer than %d bytes", MaxArgLen)
			}
			if strings.IndexByte(a, 0) >= 0 {
				return invalid(fmt.Sprintf("command[%d]", i), "contains a NUL byte")
			}
		}
		if s.Upstream != "" {
			return invalid("upstream", "only http services have an upstream")
		}
		if s.Public {
			return invalid("public", "only http services can be public: an exec run always needs a token under ACLs")
		}
		if s.PassAuthorization {
			return invalid("pass_authorization", "only http services have an upstream to pass Authorization to")
		}
	case TypeHTTP:
		if s.Upstream == "" && len(s.Upstreams) == 0 {
			return invalid("upstream", "an http service needs an upstream URL (http://host:port) or upstreams")
		}
		if s.Upstream != "" {
			if err := checkUpstreamURL("upstream", s.Upstream); err != nil {
				return err
			}
		}
		if len(s.Command) > 0 {
			return invalid("command", "only exec services have a command")
		}
		if s.User != "" {
			return invalid("user", "only exec services run as a user")
		}
	case TypePython, TypeAnsible:
		if err := s.validateSource(); err != nil { // script kinds (repository.go)
			return err
		}
	case "":
		return invalid("type", "missing (exec or http)")
	default:
		return invalid("type", "%q is not exec, http, python or ansible", s.Type)
	}
	if len(s.Env) > MaxEnv {
		return invalid("env", "more than %d variables", MaxEnv)
	}
	for k, v := range s.Env {
		if !validEnvName(k) {
			return invalid("env", "%q is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)", k)
		}
		if len(v) > maxEnvValueLen || strings.IndexByte(v, 0) >= 0 {
			return invalid("env."+k, "value longer than %d bytes or contains NUL", maxEnvValueLen)
		}
	}
	if s.Dir != "" {
		if len(s.Dir) > maxDirLen || !filepath.IsAbs(s.Dir) || strings.IndexByte(s.Dir, 0) >= 0 {
			return invalid("dir", "must be an absolute path")
		}
	}
	if s.User != "" && !validUser(s.User) {
		return invalid("user", "must be a user name or uid ([A-Za-z0-9_.-], at most %d bytes, not starting with '-')",
			maxUserLen)
	}
	if s.Timeout < 0 {
		return invalid("timeout", "must be positive")
	}
	if s.Timeout.Std() > MaxTimeout {
		return invalid("timeout", "must be at most %s", MaxTimeout)
	}
	if s.Retries < 0 || s.Retries > MaxRetries {
		return invalid("retries", "must be between 0 and %d", MaxRetries)
	}
	switch s.Strategy {
	case "", StrategyRoundRobin, StrategyLeastLoaded:
	default:
		return invalid("strategy", "%q is not round_robin or least_loaded", s.Strategy)
	}
	if len(s.RunnerTags) > MaxRunnerTags {
		return invalid("runner_tags", "more than %d tags", MaxRunnerTags)
	}
	for k, v := range s.RunnerTags {
		if k == "" || len(k) > maxTagLen || len(v) > maxTagLen {
			return invalid("runner_tags", "tag keys must be non-empty and tags at most %d bytes", maxTagLen)
		}
	}
	if err := s.validateDecoratorRef(); err != nil {
		return err
	}
	if err := s.validateRouting(); err != nil {
		return err
	}
	if d := bytes.TrimSpace(s.Decorator); len(d) > 0 && string(d) != "null" && !isDecoratorRef(d) {
		if len(d) > MaxDecoratorSize {
			return invalid("decorator", "schema is %d bytes, more than %d", len(d), MaxDecoratorSize)
		}
		if _, err := compileSchema(d); err != nil {
			return invalid("decorator", "%v", err)
		}
	}
	if err := s.validateSecrets(); err != nil {
		return err
	}
	if err := s.validateCache(); err != nil {
		return err
	}
	if err := s.validateLimits(); err != nil {
		return err
	}
	if b, err := json.Marshal(s); err != nil {
		return invalid("", "cannot encode: %v", err)
	} else if len(b) > MaxServiceSize {
		return invalid("", "definition is %d bytes, more than %d", len(b), MaxServiceSize)
	}
	return nil
}

// ValidateName checks a service name: 1–63 characters of [A-Za-z0-9_.-],
// starting with a letter or digit.
func ValidateName(name string) error {
	if name == "" {
		return invalid("name", "missing")
	}
	if len(name) > MaxNameLen {
		return invalid("name", "longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return invalid("name", "must start with a letter or digit")
		}
		if !alnum && c != '-' && c != '_' && c != '.' {
			return invalid("name", "may only contain letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

func validEnvName(k string) bool {
	if k == "" || len(k) > 256 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// ServiceKey is the store key of a service definition.
func ServiceKey(name string) string { return "svc/" + name }

var errNotJSON = errors.New("input is not valid JSON")

// validUser accepts what user names and uids are made of; whether the user
// exists is the runner's to say at run time (runners differ).
func validUser(u string) bool {
	if u == "" || len(u) > maxUserLen || u[0] == '-' {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
