package dispatch

import (
	"context"
	"errors"
)

// Sentinel errors. Callers classify with errors.Is.
var (
	// ErrConflict: a compare-and-swap failed (the key changed or exists).
	ErrConflict = errors.New("dispatch: conflict")
	// ErrInvalid: a service definition is invalid (see *ValidationError).
	ErrInvalid = errors.New("dispatch: invalid service")
	// ErrInvalidInput: the input is not JSON or violates the decorator
	// (see *SchemaError). Nothing ran.
	ErrInvalidInput = errors.New("dispatch: invalid input")
	// ErrInputTooLarge: the input exceeds Config.MaxInput.
	ErrInputTooLarge = errors.New("dispatch: input too large")
	// ErrNoRunner: no live runner of the cluster matches the service
	// (temporary: 503 + Retry-After).
	ErrNoRunner = errors.New("dispatch: no live runner")
	// ErrBusy: every candidate runner is at its concurrency limit
	// (temporary: 429/503 + Retry-After).
	ErrBusy = errors.New("dispatch: all runners busy")
	// ErrNotFound: no such execution.
	ErrNotFound = errors.New("dispatch: not found")
	// ErrWrongType: the service is not of the type the call needs.
	ErrWrongType = errors.New("dispatch: wrong service type")
	// ErrStopped: the dispatcher is stopping.
	ErrStopped = errors.New("dispatch: stopped")
	// ErrTooLarge: the store refused a value over MaxRecordSize. Permanent:
	// a retry of the same write can never succeed, so none is made.
	ErrTooLarge = errors.New("dispatch: value too large for the store")
	// ErrProxyAborted: an HTTP proxy failed after the response started;
	// the caller should abort the client connection (panic(http.ErrAbortHandler)).
	ErrProxyAborted = errors.New("dispatch: proxied response aborted")
	// ErrAlreadyFinished: Cancel of an execution that ended otherwise
	// (succeeded, failed, timed_out, lost); the record is returned with it.
	ErrAlreadyFinished = errors.New("dispatch: execution already finished")
)

// ConflictError is a CAS failure on a known key. It matches ErrConflict.
type ConflictError struct{ Key string }

func (e *ConflictError) Error() string { return "dispatch: conflict on " + e.Key }

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// MaxRecordSize is the largest value the store accepts (consensus/fsm's
// MaxValueLen; node/store.go fails to compile if the two differ). Records
// are encoded to fit it (see encodeRecord).
const MaxRecordSize = 4 << 20

// Store is the per-cluster replicated key-value store (node adapts consensus
// to it). Reads are linearizable. Temporary failures (no quorum, timeouts)
// are returned wrapped so callers can classify them; dispatch passes them
// through with %w. A value over MaxRecordSize fails with an error matching
// ErrTooLarge. Implementations must be safe for concurrent use.
type Store interface {
	// Get returns the value and version of key; found is false if absent.
	Get(ctx context.Context, cluster, key string) (value []byte, version uint64, found bool, err error)
	// Put writes key. cas nil: unconditional; *cas == 0: key must not exist;
	// otherwise the current version must equal *cas. A failed CAS returns an
	// error matching ErrConflict. It returns the new version.
	Put(ctx context.Context, cluster, key string, value []byte, cas *uint64) (version uint64, err error)
	// PutMulti writes every KV atomically (all CAS checked before any
	// write) and returns the new versions in order.
	PutMulti(ctx context.Context, cluster string, kvs []KV) ([]uint64, error)
	// Delete removes key (cas as in Put; deleting an absent key without cas
	// is not an error).
	Delete(ctx context.Context, cluster, key string, cas *uint64) error
	// DeleteMulti removes every KV's key (CAS as in Delete; Value unused)
	// atomically, in one command: all CAS checked before any delete.
	DeleteMulti(ctx context.Context, cluster string, kvs []KV) error
	// List returns entries whose key has prefix, in key order (or reverse),
	// starting strictly after opts.After in that order.
	List(ctx context.Context, cluster, prefix string, opts ListOptions) ([]Entry, error)
	// IsLeader reports whether this node leads the cluster's group.
	IsLeader(cluster string) bool
}

// KV is one write of a PutMulti.
type KV struct {
	Key   string
	Value []byte
	CAS   *uint64
}

// Entry is one listed key.
type Entry struct {
	Key     string
	Value   []byte
	Version uint64
}

// ListOptions narrows a List.
type ListOptions struct {
	After   string            // exclusive start key (in iteration order)
	Limit   int               // 0: the store's default bound
	Reverse bool              // descending key order
	Match   map[string]string // equality on top-level JSON string fields
	// MaxBytes, when positive, ends the page before the value that would
	// take it past this many bytes (the first entry always comes). A store
	// may ignore it: see morePages.
	MaxBytes int
}

// Page byte bounds (Config.listBytes and scanBytes override them in
// tests). A list that may be forwarded to another node answers in one
// transport frame (8 MiB, values in base64): defaultListBytes keeps it
// inside. The leader's own scans (recovery, retention) read locally:
// defaultScanBytes only bounds their memory.
const (
	defaultListBytes = MaxRecordSize
	defaultScanBytes = 4 * MaxRecordSize
)

// morePages reports whether a List page of es, asked with limit and
// maxBytes, may have more after it: it was full, or it may have stopped at
// the byte bound (the next value, at most MaxRecordSize, would not fit).
func morePages(es []Entry, limit, maxBytes int) bool {
	if len(es) >= limit {
		return true
	}
	if maxBytes <= 0 || len(es) == 0 {
		return false
	}
	n := 0
	for _, e := range es {
		n += len(e.Value)
	}
	return n > maxBytes-MaxRecordSize
}

// Runner roles and member statuses as gossip reports them.
const (
	RoleRunner = "runner"

	MemberAlive   = "alive"
	MemberSuspect = "suspect"
	MemberFailed  = "failed"
	MemberLeft    = "left"
)

// Runner is one member of a cluster as dispatch needs to see it.
type Runner struct {
	Name    string
	RPCAddr string
	Status  string // alive, suspect, failed, left
	Tags    map[string]string
	Roles   []string
}

// HasRole reports whether r has role.
func (r Runner) HasRole(role string) bool {
	for _, x := range r.Roles {
		if x == role {
			return true
		}
	}
	return false
}

// Runners is the membership view (node adapts gossip to it). Methods must be
// safe for concurrent use and must not block.
type Runners interface {
	// Runners returns the members of cluster, any status and role. The
	// result may be shared: callers must not modify it.
	Runners(cluster string) []Runner
	// Lookup returns the member called name, of any cluster and role, with
	// its gossip status; false if gossip does not know it.
	Lookup(name string) (Runner, bool)
}
