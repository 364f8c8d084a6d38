package gitsrc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/rs/zerolog"
)

// Config bounds a Cache.
type Config struct {
	Dir              string        // cache root; created if missing
	DefaultPoll      time.Duration // Remote.Poll when zero
	MaxCheckouts     int           // commits kept on disk
	MaxVenvs         int           // virtual environments kept on disk
	MaxCheckoutBytes int64         // total file bytes of one checkout
	MaxFiles         int           // files of one checkout
	FetchTimeout     time.Duration // bounds one fetch (also bounded by the caller's ctx)
}

// DefaultConfig returns the defaults with dir as the root.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:              dir,
		DefaultPoll:      10 * time.Second,
		MaxCheckouts:     16,
		MaxVenvs:         8,
		MaxCheckoutBytes: 256 << 20,
		MaxFiles:         20000,
		FetchTimeout:     2 * time.Minute,
	}
}

// Remote is a repository and the reference to run.
type Remote struct {
	URL  string
	Ref  string        // branch, tag, or a 40-hex commit hash
	Poll time.Duration // fetch at most this often (Config.DefaultPoll if zero)
	// Username and Password authenticate an http(s) fetch (basic auth);
	// both empty: anonymous.
	Username, Password string
}

// Cache holds bare clones, checkouts and venvs. Safe for concurrent use.
type Cache struct {
	cfg       Config
	log       zerolog.Logger
	mu        sync.Mutex
	repos     map[string]*repo // by URL
	checkouts *dirSet
	venvs     *dirSet
}

type repo struct {
	mu        sync.Mutex // held while fetching or reading refs
	dir       string
	r         *git.Repository
	fetchedAt time.Time
	warned    bool // the last fetch failure was logged
}

// New opens (or creates) a cache under cfg.Dir, dropping what an earlier
// process left half-written.
func New(cfg Config, log zerolog.Logger) (*Cache, error) {
	def := DefaultConfig(cfg.Dir)
	if cfg.Dir == "" {
		return nil, errors.New("gitsrc: no cache directory")
	}
	if cfg.DefaultPoll <= 0 {
		cfg.DefaultPoll = def.DefaultPoll
	}
	if cfg.MaxCheckouts <= 0 {
		cfg.MaxCheckouts = def.MaxCheckouts
	}
	if cfg.MaxVenvs <= 0 {
		cfg.MaxVenvs = def.MaxVenvs
	}
	if cfg.MaxCheckoutBytes <= 0 {
		cfg.MaxCheckoutBytes = def.MaxCheckoutBytes
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = def.MaxFiles
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = def.FetchTimeout
	}
	c := &Cache{cfg: cfg, log: log.With().Str("component", "gitsrc").Logger(), repos: map[string]*repo{}}
	// Checkouts and venvs are readable by the users services run as
	// (Service.User); the clones are the agent's own.
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("gitsrc: %w", err)
	}
	var err error
	if c.checkouts, err = openDirSet(filepath.Join(cfg.Dir, "checkouts"), cfg.MaxCheckouts); err != nil {
		return nil, err
	}
	if c.venvs, err = openDirSet(filepath.Join(cfg.Dir, "venvs"), cfg.MaxVenvs); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "repos"), 0o700); err != nil {
		return nil, fmt.Errorf("gitsrc: %w", err)
	}
	return c, nil
}

// Checkout is one commit's files, held until Release.
type Checkout struct {
	Dir    string // absolute, symlinks resolved
	Commit string // 40 hex digits
	rel    func()
	once   sync.Once
}

// Release lets the cache remove the checkout when it needs room.
func (co *Checkout) Release() { co.once.Do(co.rel) }

// File returns the absolute path of rel in the checkout: rel must be a
// local path ("scripts/x.sh", no "..", not absolute) naming a regular file
// that, symlinks followed, stays inside the checkout.
func (co *Checkout) File(rel string) (string, error) {
	return fileIn(co.Dir, rel)
}

// fileIn resolves rel inside root (root has its symlinks resolved).
func fileIn(root, rel string) (string, error) {
	if rel == "" || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("path %q must be relative and stay inside the repository", rel)
	}
	p, err := filepath.EvalSymlinks(filepath.Join(root, rel))
	if err != nil {
		return "", fmt.Errorf("path %q: %w", rel, stripRoot(err, root))
	}
	if r, err := filepath.Rel(root, p); err != nil || !filepath.IsLocal(r) {
		return "", fmt.Errorf("path %q leads outside the repository (through a symlink)", rel)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("path %q: %w", rel, stripRoot(err, root))
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("path %q is not a regular file", rel)
	}
	return p, nil
}

// stripRoot shortens the cache paths in err to keep errors readable.
func stripRoot(err error, root string) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		if r, e := filepath.Rel(root, pe.Path); e == nil {
			return fmt.Errorf("%s: %w", r, pe.Err)
		}
	}
	return err
}

// Checkout resolves r.Ref to a commit and returns its files.
func (c *Cache) Checkout(ctx context.Context, r Remote) (*Checkout, error) {
	commit, rp, err := c.resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	dir, release, err := c.checkouts.acquire(ctx, commit, func(tmp string) error {
		rp.mu.Lock()
		defer rp.mu.Unlock()
		return c.writeTree(rp.r, commit, tmp)
	})
	if err != nil {
		return nil, fmt.Errorf("checking out commit %s: %w", commit, err)
	}
	return &Checkout{Dir: dir, Commit: commit, rel: release}, nil
}

// resolve returns the commit r.Ref names, fetching when due.
func (c *Cache) resolve(ctx context.Context, r Remote) (string, *repo, error) {
	rp, err := c.repo(r.URL)
	if err != nil {
		return "", nil, err
	}
	poll := r.Poll
	if poll <= 0 {
		poll = c.cfg.DefaultPoll
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	isHash := plumbing.IsHash(r.Ref) && len(r.Ref) == 40
	due := time.Since(rp.fetchedAt) >= poll
	if isHash && !due {
		if _, err := rp.r.CommitObject(plumbing.NewHash(r.Ref)); err != nil {
			due = true // a commit not held yet: fetch now
		}
	}
	if due {
		if ferr := c.fetch(ctx, rp, r); ferr != nil {
			commit, lerr := resolveLocal(rp.r, r.Ref)
			if lerr != nil || ctx.Err() != nil {
				return "", nil, ferr
			}
			if !rp.warned {
				rp.warned = true
				c.log.Warn().Str("url", r.URL).Str("ref", r.Ref).Str("commit", commit).
					Str("error", ferr.Error()).Msg("fetch failed: running the last known commit of the ref")
			}
			rp.fetchedAt = time.Now() // retry after the next poll, not on every run
			return commit, rp, nil
		}
		rp.warned = false
	}
	commit, err := resolveLocal(rp.r, r.Ref)
	if err != nil {
		return "", nil, err
	}
	return commit, rp, nil
}

func (c *Cache) repo(url string) (*repo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rp := c.repos[url]; rp != nil {
		return rp, nil
	}
	sum := sha256.Sum256([]byte(url))
	dir := filepath.Join(c.cfg.Dir, "repos", hex.EncodeToString(sum[:12])+".git")
	r, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		_ = os.RemoveAll(dir) // a half-made one
		if r, err = git.PlainInit(dir, true); err == nil {
			_, err = r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{url}})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("local clone of %s: %w", url, err)
	}
	rp := &repo{dir: dir, r: r}
	c.repos[url] = rp
	return rp, nil
}

// fetch updates every branch and tag of the clone. rp.mu is held.
func (c *Cache) fetch(ctx context.Context, rp *repo, r Remote) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	var auth transport.AuthMethod
	if r.Username != "" || r.Password != "" {
		auth = &githttp.BasicAuth{Username: r.Username, Password: r.Password}
	}
	err := rp.r.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RemoteURL:  r.URL,
		RefSpecs:   []gitconfig.RefSpec{"+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"},
		Auth:       auth,
		Tags:       git.NoTags,
		Force:      true,
		Prune:      true,
	})
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		rp.fetchedAt = time.Now()
		return nil
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("fetching %s: the server refused the credentials (or needs some): check the repository's credentials secret", r.URL)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return fmt.Errorf("fetching %s: no repository at that URL", r.URL)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return fmt.Errorf("fetching %s: the repository is empty", r.URL)
	case ctx.Err() != nil:
		return fmt.Errorf("fetching %s: %w", r.URL, ctx.Err())
	}
	return fmt.Errorf("fetching %s: %s", r.URL, redact(err.Error(), r.Password))
}

// redact removes a secret from a message (a library error could quote it).
func redact(msg, secret string) string {
	if secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, secret, "[redacted]")
}

// resolveLocal reads ref from the clone: a commit hash, a branch
// (refs/remotes/origin/<ref>) or a tag (peeled to its commit).
func resolveLocal(r *git.Repository, ref string) (string, error) {
	if plumbing.IsHash(ref) && len(ref) == 40 {
		h := plumbing.NewHash(ref)
		if _, err := r.CommitObject(h); err != nil {
			return "", fmt.Errorf("commit %s is not in the repository (after a fetch of all branches and tags)", ref)
		}
		return h.String(), nil
	}
	for _, name := range []string{"refs/remotes/origin/" + ref, "refs/tags/" + ref} {
		rf, err := r.Reference(plumbing.ReferenceName(name), true)
		if err != nil {
			continue
		}
		h := rf.Hash()
		if t, err := r.TagObject(h); err == nil { // an annotated tag
			cm, err := t.Commit()
			if err != nil {
				return "", fmt.Errorf("tag %s does not point at a commit", ref)
			}
			return cm.Hash.String(), nil
		}
		if _, err := r.CommitObject(h); err != nil {
			return "", fmt.Errorf("ref %s does not point at a commit", ref)
		}
		return h.String(), nil
	}
	return "", fmt.Errorf("ref %q is neither a branch, a tag nor a commit hash of the repository", ref)
}

// writeTree writes commit's files into dir (empty, created by the caller).
func (c *Cache) writeTree(r *git.Repository, commit, dir string) error {
	cm, err := r.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return err
	}
	tree, err := cm.Tree()
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var files int
	var total int64
	return tree.Files().ForEach(func(f *object.File) error {
		if files++; files > c.cfg.MaxFiles {
			return fmt.Errorf("more than %d files", c.cfg.MaxFiles)
		}
		if total += f.Size; total > c.cfg.MaxCheckoutBytes {
			return fmt.Errorf("more than %d bytes of files", c.cfg.MaxCheckoutBytes)
		}
		name := filepath.FromSlash(f.Name)
		if !filepath.IsLocal(name) || hasGitDir(f.Name) {
			return fmt.Errorf("file %q: path not allowed in a checkout", f.Name)
		}
		if d := filepath.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("file %q: %w", f.Name, err)
			}
		}
		switch f.Mode {
		case filemode.Symlink:
			target, err := f.Contents()
			if err != nil {
				return err
			}
			// Created as given; Checkout.File refuses to run through one
			// that leads outside, and writes never follow it (os.Root).
			return root.Symlink(target, name)
		case filemode.Regular, filemode.Executable, filemode.Deprecated:
			perm := os.FileMode(0o644)
			if f.Mode == filemode.Executable {
				perm = 0o755
			}
			out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
			if err != nil {
				return fmt.Errorf("file %q: %w", f.Name, err)
			}
			rd, err := f.Reader()
			if err == nil {
				_, err = io.Copy(out, io.LimitReader(rd, f.Size))
				rd.Close()
			}
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("file %q: %w", f.Name, err)
			}
		}
		return nil
	})
}

func hasGitDir(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if strings.EqualFold(part, ".git") {
			return true
		}
	}
	return false
}

func randSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
