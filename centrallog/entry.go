package centrallog

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
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

// An ID Record gives an entry is this process's random prefix and a
// counter: 32 hex digits, as NewID's, without a random read per request.
// Entries are deduplicated by spool position, not by ID (see logSM), so
// an ID needs only be unique: the prefix is fresh for every process, and
// the counter never repeats within one.
var (
	idPrefix = NewID()[:16]
	idSeq    atomic.Uint64
)

// appendNewID appends the next ID.
func appendNewID(b []byte) []byte {
	b = append(b, idPrefix...)
	n := idSeq.Add(1)
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[n>>uint(shift)&0xf])
	}
	return b
}

// encode validates and encodes e for the spool.
func encode(e Entry) ([]byte, error) {
	if e.ID == "" {
		return nil, fmt.Errorf("central log entry: id is required")
	}
	return appendEntry(make([]byte, 0, 320+min(len(e.Path), maxPath)), &e)
}

// appendEntry appends e's encoding for the spool to b: the JSON
// encoding/json would produce for Entry (without its HTML escaping),
// written by hand because it runs on every request. An entry without an
// ID gets the next one (appendNewID). e is not changed.
func appendEntry(b []byte, e *Entry) ([]byte, error) {
	start := len(b)
	path := e.Path
	if len(path) > maxPath {
		path = path[:maxPath]
	}
	b = append(b, `{"id":`...)
	if e.ID == "" {
		b = append(b, '"')
		b = appendNewID(b)
		b = append(b, '"')
	} else {
		b = appendString(b, e.ID)
	}
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","node":`...)
	b = appendString(b, e.Node)
	b = append(b, `,"cluster":`...)
	b = appendString(b, e.Cluster)
	b = append(b, `,"kind":`...)
	b = appendString(b, e.Kind)
	b = append(b, `,"service":`...)
	b = appendString(b, e.Service)
	b = append(b, `,"method":`...)
	b = appendString(b, e.Method)
	b = append(b, `,"path":`...)
	b = appendString(b, path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"duration_ms":`...)
	b = strconv.AppendFloat(b, e.DurationMS, 'f', -1, 64)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, `,"client_ip":`...)
	b = appendString(b, e.ClientIP)
	b = append(b, `,"token_accessor":`...)
	b = appendString(b, e.TokenAccessor)
	b = append(b, `,"execution_id":`...)
	b = appendString(b, e.ExecutionID)
	b = append(b, '}')
	if n := len(b) - start; n > MaxEntryBytes {
		id := e.ID
		if id == "" {
			id = string(b[start+len(`{"id":"`) : start+len(`{"id":"`)+32])
		}
		return b[:start], fmt.Errorf("central log entry %s: %d bytes encoded, more than %d", id, n, MaxEntryBytes)
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD,
// as with encoding/json.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, `\u202`...)
			b = append(b, hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// Failed reports whether the entry counts as an error in the KPIs: a
// status of 500 or more, or no status at all (the request or run never
// got an answer).
func (e Entry) Failed() bool { return e.Status >= 500 || e.Status == 0 }
