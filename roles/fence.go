package roles

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrFenced: a later activation of the role holds its fence key; the
// write was not made and the role's context is cancelled.
var ErrFenced = errors.New("roles: fenced out by a later activation")

// Fence is one activation of a role: its term, and the fence key's version
// its guarded writes compare against. Safe for concurrent use; guarded
// writes are serialised (each one moves the key's version).
type Fence struct {
	Cluster, Role, Node string
	// Term is the fence number handed to whatever the role decides.
	Term uint64
	// Since is when the activation started.
	Since time.Time

	store   Store
	timeout time.Duration
	onLost  func()

	mu      sync.Mutex
	value   []byte
	version uint64
	stale   bool // a guarded write's outcome is unknown: re-read first
	lost    bool
}

// Key is the fence key.
func (f *Fence) Key() string { return FenceKey(f.Role) }

// Guard makes a write conditional on this activation still holding the
// fence. apply must put (key, value) with a compare-and-set on version in
// the same command as its own writes, and report the new version of that
// put, or that the compare on key failed (fenceConflict). A failed compare
// that a re-read confirms ends the activation: Guard returns ErrFenced and
// cancels the role's context.
func (f *Fence) Guard(ctx context.Context, apply func(key string, value []byte, version uint64) (newVersion uint64, fenceConflict bool, err error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost {
		return ErrFenced
	}
	if f.stale {
		if err := f.refresh(ctx); err != nil {
			return err
		}
	}
	nv, conflict, err := apply(f.Key(), f.value, f.version)
	switch {
	case err != nil:
		f.stale = true // it may have applied and moved the version
		return err
	case conflict:
		if err := f.refresh(ctx); err != nil {
			return err
		}
		return fmt.Errorf("roles: fence key %s moved under this activation; retry", f.Key())
	}
	f.version = nv
	return nil
}

// verify re-reads the fence key: ErrFenced (and the role's context
// cancelled) when it no longer holds this activation.
func (f *Fence) verify(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lost {
		return ErrFenced
	}
	return f.refresh(ctx)
}

// refresh re-reads the fence key: still ours (same term and node) adopts
// its version; anything else ends the activation. Caller holds f.mu.
func (f *Fence) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	v, ver, found, err := f.store.Get(ctx, f.Cluster, f.Key())
	if err != nil {
		f.stale = true
		return fmt.Errorf("roles: read fence key: %w", err)
	}
	if found {
		if rec, err := DecodeRecord(v); err == nil && rec.Term == f.Term && rec.Node == f.Node {
			f.value, f.version, f.stale = v, ver, false
			return nil
		}
	}
	f.lost = true
	if f.onLost != nil {
		f.onLost()
	}
	return ErrFenced
}

type fenceKey struct{}

// WithFence returns ctx carrying f: a store adapter that finds it
// (FenceFrom) guards the writes made with ctx.
func WithFence(ctx context.Context, f *Fence) context.Context {
	return context.WithValue(ctx, fenceKey{}, f)
}

// FenceFrom returns the fence ctx carries, or nil.
func FenceFrom(ctx context.Context) *Fence {
	f, _ := ctx.Value(fenceKey{}).(*Fence)
	return f
}
