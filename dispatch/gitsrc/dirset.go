package gitsrc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// dirSet is a bounded set of directories under root, one per key, each
// built once (into a temporary directory renamed into place) and
// reference-counted while in use. Past max entries the least recently used
// unused ones are removed; entries in use are never removed, so the set
// may exceed max while many are held.
type dirSet struct {
	root    string
	max     int
	mu      sync.Mutex
	entries map[string]*dirEntry
}

type dirEntry struct {
	refs     int
	lastUsed time.Time
	ready    chan struct{} // closed once built (or failed)
	err      error
}

const tmpPrefix = ".tmp-"

func openDirSet(root string, max int) (*dirSet, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("gitsrc: %w", err)
	}
	s := &dirSet{root: root, max: max, entries: map[string]*dirEntry{}}
	des, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("gitsrc: %w", err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tmpPrefix) || !de.IsDir() {
			_ = os.RemoveAll(filepath.Join(root, de.Name())) // left half-built by an earlier process
			continue
		}
		info, err := de.Info()
		if err != nil {
			continue
		}
		ready := make(chan struct{})
		close(ready)
		s.entries[de.Name()] = &dirEntry{lastUsed: info.ModTime(), ready: ready}
	}
	s.mu.Lock()
	s.evictLocked()
	s.mu.Unlock()
	return s, nil
}

// acquire returns key's directory (absolute, symlinks resolved), building
// it with build(tmp) first if missing; release must be called once done.
// Concurrent callers for one key wait for a single build.
func (s *dirSet) acquire(ctx context.Context, key string, build func(tmp string) error) (string, func(), error) {
	final := filepath.Join(s.root, key)
	for {
		s.mu.Lock()
		e := s.entries[key]
		if e == nil {
			e = &dirEntry{ready: make(chan struct{})}
			s.entries[key] = e
			e.refs++
			s.mu.Unlock()
			e.err = s.build(final, build)
			s.mu.Lock()
			if e.err != nil {
				delete(s.entries, key)
			}
			close(e.ready)
			if e.err != nil {
				e.refs--
				s.mu.Unlock()
				return "", nil, e.err
			}
			e.lastUsed = time.Now()
			s.evictLocked()
			s.mu.Unlock()
			return s.held(final, key, e)
		}
		e.refs++
		s.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			s.release(key, e)
			return "", nil, ctx.Err()
		}
		if e.err != nil {
			s.release(key, e)
			continue // the builder failed and dropped it: try again
		}
		s.mu.Lock()
		e.lastUsed = time.Now()
		s.mu.Unlock()
		return s.held(final, key, e)
	}
}

func (s *dirSet) held(final, key string, e *dirEntry) (string, func(), error) {
	dir, err := filepath.EvalSymlinks(final)
	if err != nil {
		s.release(key, e)
		return "", nil, fmt.Errorf("gitsrc: %w", err)
	}
	return dir, func() { s.release(key, e) }, nil
}

func (s *dirSet) build(final string, build func(tmp string) error) error {
	tmp := filepath.Join(s.root, tmpPrefix+filepath.Base(final)+"-"+randSuffix())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("gitsrc: %w", err)
	}
	if err := build(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	_ = os.RemoveAll(final) // an unregistered leftover
	if err := os.Rename(tmp, final); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("gitsrc: %w", err)
	}
	return nil
}

func (s *dirSet) release(key string, e *dirEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.refs--
	s.evictLocked()
}

// evictLocked removes the least recently used unused entries beyond max.
func (s *dirSet) evictLocked() {
	if len(s.entries) <= s.max {
		return
	}
	type kv struct {
		key string
		e   *dirEntry
	}
	var idle []kv
	for k, e := range s.entries {
		select {
		case <-e.ready:
		default:
			continue // being built
		}
		if e.refs == 0 {
			idle = append(idle, kv{k, e})
		}
	}
	sort.Slice(idle, func(i, j int) bool { return idle[i].e.lastUsed.Before(idle[j].e.lastUsed) })
	for _, it := range idle {
		if len(s.entries) <= s.max {
			break
		}
		delete(s.entries, it.key)
		_ = os.RemoveAll(filepath.Join(s.root, it.key))
	}
}

// keys lists the entries (tests).
func (s *dirSet) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.entries))
	for k := range s.entries {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
