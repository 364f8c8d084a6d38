package dispatch

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"
)

// Status is the state of an execution.
type Status string

// Execution states. queued and running are the only non-terminal ones.
const (
	StatusQueued    Status = "queued"
	StatusRunning   Status = "running"
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusTimedOut  Status = "timed_out"
	StatusLost      Status = "lost"
	// StatusCancelled: a client asked for the run to stop (Cancel); its
	// process group was killed, or it never started.
	StatusCancelled Status = "cancelled"
)

// Terminal reports whether no further transition can happen.
func (s Status) Terminal() bool {
	switch s {
	case StatusSucceeded, StatusFailed, StatusTimedOut, StatusLost, StatusCancelled:
		return true
	}
	return false
}

// ValidStatus reports whether s names a status (for API filters).
func ValidStatus(s string) bool {
	switch Status(s) {
	case StatusQueued, StatusRunning, StatusSucceeded, StatusFailed, StatusTimedOut, StatusLost,
		StatusCancelled:
		return true
	}
	return false
}

// Execution is the durable record of one exec run, stored under exec/<id> in
// the cluster's replicated store. Times are stamped by the node that writes
// the record (the proposer), never by the state machine.
type Execution struct {
	ID        string `json:"id"`
	Service   string `json:"service"`
	Cluster   string `json:"cluster"`
	Status    Status `json:"status"`
	Runner    string `json:"runner,omitempty"`
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Truncated bool   `json:"truncated,omitempty"`
	// Attempts counts the runners tried (1 on a first try that ran to the end).
	Attempts int `json:"attempts"`
	// Owner is the node currently dispatching the execution (the lease
	// holder); AcceptedBy until a recovery takes over.
	Owner string `json:"owner,omitempty"`
	// LeaseExpires is when Owner's claim lapses unless renewed: the attempt
	// deadline (timeout + grace) for a running execution, a short queue
	// lease for a queued one. Recovery takes over an execution whose owner
	// is gone or whose lease has lapsed.
	LeaseExpires time.Time `json:"lease_expires,omitzero"`
	// History lists every attempt with its runner and how it ended.
	History []Attempt `json:"history,omitempty"`

	AcceptedBy string `json:"accepted_by"`
	Async      bool   `json:"async"`
	Input      string `json:"input,omitempty"`
	// InputB64 holds the input instead of Input when it is not valid UTF-8
	// (JSON would corrupt it; see record.go).
	InputB64       []byte `json:"input_b64,omitempty"`
	InputTruncated bool   `json:"input_truncated,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Error          string `json:"error,omitempty"`

	// CancelRequestedAt is when Cancel recorded a request to stop the run
	// (through node CancelRequestedBy), before it signalled the driver:
	// the driver ends the run cancelled, and recovery never re-runs it.
	CancelRequestedAt time.Time `json:"cancel_requested_at,omitzero"`
	CancelRequestedBy string    `json:"cancel_requested_by,omitempty"`
	// CancelBase is the record version the request was written on (by
	// CAS): a driver whose write conflicts with exactly that write adopts
	// the request and writes again, instead of taking itself for
	// superseded.
	CancelBase uint64 `json:"cancel_base,omitempty"`

	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	DurationMs int64     `json:"duration_ms"`

	// ServiceDef is the definition the execution runs (as of acceptance).
	ServiceDef *Service `json:"service_def,omitempty"`
	// Commit is the Git commit the run's file came from (services with a
	// repository), as resolved by the runner of the final attempt.
	Commit string `json:"commit,omitempty"`

	// Version is the record's store version (set on read, not stored).
	Version uint64 `json:"-"`

	// Schedule names the schedule whose tick ScheduledAt started this
	// execution (package schedule); empty for a run a client asked for.
	Schedule    string    `json:"schedule,omitempty"`
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
}

// clone returns a copy that shares no mutable state with e.
func (e *Execution) clone() Execution {
	c := *e
	c.History = append([]Attempt(nil), e.History...)
	return c
}

// Attempt is one try on one runner.
type Attempt struct {
	N          int       `json:"n"`
	Runner     string    `json:"runner"`
	Owner      string    `json:"owner"`
	Outcome    string    `json:"outcome,omitempty"` // a Status, or "unreachable"
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// RunResponse is the API's answer to a run (PRODUCT.md).
type RunResponse struct {
	ExecutionID string `json:"execution_id"`
	Service     string `json:"service"`
	Runner      string `json:"runner"`
	Status      Status `json:"status"`
	ExitCode    int    `json:"exit_code"`
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	Attempts    int    `json:"attempts"`
	DurationMs  int64  `json:"duration_ms"`
	Error       string `json:"error,omitempty"`
	Truncated   bool   `json:"truncated,omitempty"`
	Commit      string `json:"commit,omitempty"` // services from a repository
}

// Response returns the run response shape of the execution.
func (e *Execution) Response() RunResponse {
	return RunResponse{
		ExecutionID: e.ID,
		Service:     e.Service,
		Runner:      e.Runner,
		Status:      e.Status,
		ExitCode:    e.ExitCode,
		Stdout:      e.Stdout,
		Stderr:      e.Stderr,
		Attempts:    e.Attempts,
		DurationMs:  e.DurationMs,
		Error:       e.Error,
		Truncated:   e.Truncated,
		Commit:      e.Commit,
	}
}

// ExecKey is the store key of an execution record.
func ExecKey(id string) string { return "exec/" + id }

// IdemKey is the store key of an idempotency key.
func IdemKey(service, key string) string { return "idem/" + service + "/" + key }

// MaxIdempotencyKeyLen bounds client idempotency keys.
const MaxIdempotencyKeyLen = 128

// NewID returns a time-sortable execution ID: 16 hex digits of Unix
// nanoseconds followed by 8 random hex digits, so store keys list in
// creation order.
func NewID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(b[8:])
	return hex.EncodeToString(b[:])
}

// IDTime returns the creation time encoded in an ID (zero if malformed).
func IDTime(id string) time.Time {
	if len(id) != 24 {
		return time.Time{}
	}
	n, err := strconv.ParseUint(id[:16], 16, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, int64(n))
}

// ValidID reports whether id has the shape NewID produces.
func ValidID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
