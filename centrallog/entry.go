package centrallog

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Kinds of entries.
const (
	KindHTTP  = "http"  // one proxied /svc/ request
	KindRun   = "run"   // one execution that reached a terminal state
	KindAdmin = "admin" // one change to services, tokens or keys
)

// Entry is one line of the central log (the contract's fields).
type Entry struct {
	ID            string    `json:"id"`
	Time          time.Time `json:"time"`
	Node          string    `json:"node"`
	Cluster       string    `json:"cluster"`
	Kind          string    `json:"kind"`
	Service       string    `json:"service"`
	Method        string    `json:"method"`
	Path          string    `json:"path"`
	Status        int       `json:"status"`
	DurationMS    float64   `json:"duration_ms"`
	BytesIn       int64     `json:"bytes_in"`
	BytesOut      int64     `json:"bytes_out"`
	ClientIP      string    `json:"client_ip"`
	TokenAccessor string    `json:"token_accessor"`
	ExecutionID   string    `json:"execution_id"`
}

// MaxEntryBytes bounds one encoded entry (longer paths are cut first).
const MaxEntryBytes = 8 << 10

// maxPath is how much of a request path an entry keeps.
const maxPath = 2048

// NewID returns a fresh random entry ID (128 bits, hex).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand's documented contract)
	return hex.EncodeToString(b[:])
}

// encode validates and encodes e for the spool.
func encode(e Entry) ([]byte, error) {
	if e.ID == "" {
		return nil, fmt.Errorf("central log entry: id is required")
	}
	if len(e.Path) > maxPath {
		e.Path = e.Path[:maxPath]
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode central log entry: %w", err)
	}
	if len(b) > MaxEntryBytes {
		return nil, fmt.Errorf("central log entry %s: %d bytes encoded, more than %d", e.ID, len(b), MaxEntryBytes)
	}
	return b, nil
}

// Failed reports whether the entry counts as an error in the KPIs: a
// status of 500 or more, or no status at all (the request or run never
// got an answer).
func (e Entry) Failed() bool { return e.Status >= 500 || e.Status == 0 }
