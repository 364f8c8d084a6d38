package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshgw/meshgw/dispatch/gitsrc"
	"github.com/meshgw/meshgw/dispatch/runner"
)

// Services from Git and the script kinds (python, ansible).
//
// The driving node reads the service's repository definition (and its
// credentials secret) at each attempt and sends it with the execution
// request (sourceWire, over the mutual-TLS link only; never recorded).
// The runner resolves the ref to a commit, takes that commit's checkout
// from its gitsrc.Cache, builds the argv (exec: command + the file;
// python: the interpreter + the script + --key value per input field;
// ansible: ansible-playbook with the input as extra vars), and returns
// the commit with the result, which the record keeps (Execution.Commit).
// The service's timeout covers fetching, checking out and installing
// requirements as well as the run.

// sourceState is the dispatcher's part for services from Git; its zero
// value is ready (the cache opens on first use).
type sourceState struct {
	mu    sync.Mutex
	cache *gitsrc.Cache
}

// sourceWire tells the runner where the file to run comes from and how
// to build the argv. Password is a credential: it travels over the
// mutual-TLS link to the runner only, and is never logged nor recorded.
type sourceWire struct {
	Kind       string   `json:"kind"`                 // exec, python, ansible
	Repository string   `json:"repository,omitempty"` // its name, for messages
	URL        string   `json:"url,omitempty"`
	Ref        string   `json:"ref,omitempty"`
	PollMs     int64    `json:"poll_ms,omitempty"`
	Username   string   `json:"username,omitempty"`
	Password   string   `json:"password,omitempty"`
	Path       string   `json:"path"`
	Prefix     []string `json:"prefix,omitempty"` // exec: command before the file
}

// sourceFor builds the source part of an execution request for svc (nil
// for a plain exec service), with the repository's credentials.
func (d *Dispatcher) sourceFor(ctx context.Context, cluster string, svc *Service) (*sourceWire, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	sw, repo, err := d.sourceSpec(ctx, cluster, svc)
	if err != nil || repo == nil || repo.Credentials == nil {
		return sw, err
	}
	name := repo.Credentials.Secret
	if d.secrets == nil { // SetSecrets (secrets.go) is called before Start
		return nil, fmt.Errorf("%w: repository %q takes its credentials from secret %q, but this node has no secret store",
			ErrSecretUnavailable, repo.Name, name)
	}
	vals, err := d.secrets.SecretValues(ctx, cluster, []string{name})
	if err != nil {
		return nil, fmt.Errorf("repository %q: credentials: %w", repo.Name, err)
	}
	v, ok := vals[name]
	if !ok {
		return nil, fmt.Errorf("%w: repository %q: credentials: secret %q not found in cluster %s: put it with `meshgw secrets put %s`",
			ErrSecretUnavailable, repo.Name, name, cluster, name)
	}
	sw.Username, sw.Password = splitCredential(string(v))
	return sw, nil
}

// sourceSpec is sourceFor without the credentials: what the cluster's
// state says the runner is to check out and run (a runner compares a
// request's source with it, verify.go). repo is nil without a repository.
func (d *Dispatcher) sourceSpec(ctx context.Context, cluster string, svc *Service) (*sourceWire, *Repository, error) {
	if svc.Type == TypeExec && svc.Repository == "" {
		return nil, nil, nil
	}
	sw := &sourceWire{Kind: svc.Type, Path: svc.Path}
	if svc.Type == TypeExec {
		sw.Prefix = svc.Command
	}
	if svc.Repository == "" {
		return sw, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	b, _, found, err := d.store.Get(ctx, cluster, RepositoryKey(svc.Repository))
	if err != nil {
		return nil, nil, fmt.Errorf("reading repository %q: %w", svc.Repository, err)
	}
	if !found {
		return nil, nil, &missingRepoError{name: svc.Repository, cluster: cluster}
	}
	var repo Repository
	if err := json.Unmarshal(b, &repo); err != nil {
		return nil, nil, fmt.Errorf("repository %q: stored definition unreadable: %v", svc.Repository, err)
	}
	sw.Repository, sw.URL, sw.Ref, sw.PollMs = repo.Name, repo.URL, repo.Ref, repo.EffectivePoll().Milliseconds()
	return sw, &repo, nil
}

// missingRepoError: a service names a repository its cluster does not
// define.
type missingRepoError struct{ name, cluster string }

func (e *missingRepoError) Error() string {
	return fmt.Sprintf("repository %q not found in cluster %s: define it with meshgw repositories put", e.name, e.cluster)
}

// splitCredential reads "user:password", or a bare token (the password of
// user "git", as Git hosts take tokens).
func splitCredential(v string) (user, pass string) {
	v = strings.TrimRight(v, "\r\n")
	if u, p, ok := strings.Cut(v, ":"); ok && u != "" {
		return u, p
	}
	return "git", v
}

// gitCache opens the runner's cache on first use.
func (d *Dispatcher) gitCache() (*gitsrc.Cache, error) {
	d.src.mu.Lock()
	defer d.src.mu.Unlock()
	if d.src.cache != nil {
		return d.src.cache, nil
	}
	if d.cfg.SourceDir == "" {
		return nil, errors.New("this runner has no directory for repository checkouts (dispatch Config.SourceDir)")
	}
	c, err := gitsrc.New(gitsrc.DefaultConfig(d.cfg.SourceDir), d.log)
	if err != nil {
		return nil, err
	}
	d.src.cache = c
	return c, nil
}

// execWithSource runs req on this runner's executor, first preparing the
// file and the argv when src says where they come from. A source that
// cannot be prepared is a failed run (like a program that cannot start),
// its reason in Error; the commit it resolved, if any, is in Commit.
func (d *Dispatcher) execWithSource(ctx context.Context, src *sourceWire, req runner.ExecRequest) (runner.ExecResult, error) {
	if src == nil {
		return d.exec.Exec(ctx, req)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, req.Timeout)
	commit, release, err := d.prepare(pctx, src, &req)
	timedOut := pctx.Err() != nil
	cancel()
	if release != nil {
		defer release()
	}
	if err != nil {
		if ctx.Err() != nil {
			return runner.ExecResult{Status: runner.Failed, ExitCode: -1, Commit: commit}, ctx.Err()
		}
		status := runner.Failed
		if timedOut {
			status = runner.TimedOut
		}
		return runner.ExecResult{Status: status, ExitCode: -1, Duration: time.Since(start), Commit: commit,
			Error: err.Error()}, nil
	}
	// The timeout covers the preparation too.
	if req.Timeout -= time.Since(start); req.Timeout <= 0 {
		return runner.ExecResult{Status: runner.TimedOut, ExitCode: -1, Duration: time.Since(start), Commit: commit,
			Error: "timed out while preparing the repository's files"}, nil
	}
	res, err := d.exec.Exec(ctx, req)
	res.Commit = commit
	res.Duration = time.Since(start)
	return res, err
}

// prepare resolves src into req's Command and Dir. release frees the
// checkout and venv once the process is done.
func (d *Dispatcher) prepare(ctx context.Context, src *sourceWire, req *runner.ExecRequest) (commit string, release func(), err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	file, root := src.Path, ""
	if src.Repository != "" {
		cache, err := d.gitCache()
		if err != nil {
			return "", release, err
		}
		co, err := cache.Checkout(ctx, gitsrc.Remote{URL: src.URL, Ref: src.Ref,
			Poll: time.Duration(src.PollMs) * time.Millisecond, Username: src.Username, Password: src.Password})
		if err != nil {
			return "", release, fmt.Errorf("repository %q: %v", src.Repository, err)
		}
		releases = append(releases, co.Release)
		commit, root = co.Commit, co.Dir
		if file, err = co.File(src.Path); err != nil {
			return commit, release, fmt.Errorf("repository %q at commit %s: %v", src.Repository, commit, err)
		}
		req.Dir = root
	} else if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		return "", release, fmt.Errorf("path %q is not a file on runner %s", src.Path, d.local)
	}
	args, err := scriptArgs(src.Kind, req.Input)
	if err != nil {
		return commit, release, err
	}
	switch src.Kind {
	case TypeExec:
		if len(src.Prefix) == 0 {
			if fi, err := os.Stat(file); err != nil || fi.Mode()&0o111 == 0 {
				return commit, release, fmt.Errorf("path %q is not executable in commit %s: commit it with mode 755 (git update-index --chmod=+x), or set command to its interpreter, e.g. [\"sh\"]", src.Path, commit)
			}
		}
		req.Command = append(append([]string(nil), src.Prefix...), file)
	case TypePython:
		python := "python3"
		reqs := filepath.Join(filepath.Dir(file), "requirements.txt")
		if fi, err := os.Stat(reqs); err == nil && fi.Mode().IsRegular() && inside(root, reqs) {
			base, err := findInPath("python3", d.processPath(req.Env))
			if err != nil {
				return commit, release, fmt.Errorf("%s needs a virtual environment: %v", filepath.Base(reqs), err)
			}
			cache, err := d.gitCache()
			if err != nil {
				return commit, release, err
			}
			key := "file:" + filepath.Dir(file)
			if commit != "" {
				key = commit + ":" + filepath.Dir(src.Path)
			}
			v, err := cache.Venv(ctx, key, base, reqs, d.processEnv(req.Env))
			if err != nil {
				return commit, release, err
			}
			releases = append(releases, v.Release)
			python = v.Python
		}
		req.Command = append([]string{python, file}, args...)
	case TypeAnsible:
		req.Command = append(append([]string{"ansible-playbook", "-i", "localhost,", "--connection=local"}, args...), file)
	default:
		return commit, release, fmt.Errorf("unknown service kind %q", src.Kind)
	}
	return commit, release, nil
}

// inside reports whether p is in root (always true without a root).
func inside(root, p string) bool {
	if root == "" {
		return true
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(root, r)
	return err == nil && filepath.IsLocal(rel)
}

// processPath is the PATH a process of the service gets.
func (d *Dispatcher) processPath(env map[string]string) string {
	if p, ok := env["PATH"]; ok {
		return p
	}
	return d.exec.Config().DefaultPath
}

// processEnv is the environment a process of the service gets.
func (d *Dispatcher) processEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+d.exec.Config().DefaultPath)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func findInPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH %q", name, path)
}

// scriptArgs builds the arguments of a python service (--key value per
// field of the input object, keys sorted; true is a bare --key, false and
// null are left out, an array repeats --key, an object is passed as JSON)
// or of an ansible one (-e with the input object as JSON). Other kinds
// take none. Errors are *SchemaError naming the field.
func scriptArgs(kind string, input []byte) ([]string, error) {
	if !scriptKind(kind) {
		return nil, nil
	}
	in := bytes.TrimSpace(input)
	if len(in) == 0 || string(in) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, &SchemaError{Violations: []Violation{{Message: fmt.Sprintf(
			"the input of a %s service must be a JSON object (its fields become %s)", kind,
			map[string]string{TypePython: "--name value arguments", TypeAnsible: "extra vars"}[kind])}}}
	}
	if kind == TypeAnsible {
		if len(in) > maxAnsibleVarsSize {
			return nil, &SchemaError{Violations: []Violation{{Message: fmt.Sprintf(
				"the input of an ansible service becomes one argument: at most %d bytes", maxAnsibleVarsSize)}}}
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, in); err != nil {
			return nil, &SchemaError{Violations: []Violation{{Message: errNotJSON.Error()}}}
		}
		return []string{"-e", buf.String()}, nil
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var args []string
	for _, k := range keys {
		if !validArgKey(k) {
			return nil, &SchemaError{Violations: []Violation{{Path: "/" + k, Message: fmt.Sprintf(
				"field %q cannot be an argument name: 1–%d of A-Z a-z 0-9 _ -, starting with a letter or digit", k, maxArgKeyLen)}}}
		}
		vals, err := argValues(obj[k])
		if err != nil {
			return nil, &SchemaError{Violations: []Violation{{Path: "/" + k, Message: err.Error()}}}
		}
		for _, v := range vals {
			if v == nil {
				args = append(args, "--"+k)
			} else {
				args = append(args, "--"+k, *v)
			}
		}
	}
	if len(args) > MaxArgs {
		return nil, &SchemaError{Violations: []Violation{{Message: fmt.Sprintf("the input makes %d arguments, more than %d", len(args), MaxArgs)}}}
	}
	return args, nil
}

// argValues turns one field into argument values (nil: a bare flag).
func argValues(raw json.RawMessage) ([]*string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	one := func(v any) (*string, bool, error) {
		switch x := v.(type) {
		case nil:
			return nil, false, nil
		case bool:
			return nil, x, nil
		case string:
			if strings.IndexByte(x, 0) >= 0 {
				return nil, false, errors.New("contains a NUL byte")
			}
			return &x, true, nil
		case json.Number:
			s := x.String()
			return &s, true, nil
		default:
			b, _ := json.Marshal(x)
			s := string(b)
			return &s, true, nil
		}
	}
	var out []*string
	items := []any{v}
	if arr, ok := v.([]any); ok {
		items = arr
	}
	for _, it := range items {
		s, use, err := one(it)
		if err != nil {
			return nil, err
		}
		if use {
			if s != nil && len(*s) > MaxArgLen {
				return nil, fmt.Errorf("value longer than %d bytes", MaxArgLen)
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func validArgKey(k string) bool {
	if k == "" || len(k) > maxArgKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-') {
			return false
		}
	}
	return true
}
