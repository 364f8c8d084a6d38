package schedule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // every node resolves a schedule's timezone the same way

	"github.com/robfig/cron/v3"
)

// Role is the name of the scheduler's singleton role.
const Role = "scheduler"

// Overlap policies.
const (
	OverlapAllow  = "allow"  // fire every tick (the default)
	OverlapForbid = "forbid" // skip a tick while the previous firing is not terminal
)

// Bounds of a schedule definition.
const (
	MaxNameLen  = 63
	MaxCronLen  = 256
	MaxInput    = 64 << 10
	MaxSize     = 96 << 10 // the encoded definition
	maxTZLen    = 64
	maxNextScan = 5 // years robfig/cron looks ahead for a next tick
)

// Schedule is a named definition stored under schedule/<name>: run Service
// with Input at every tick of Cron, read in Timezone.
type Schedule struct {
	Name string `json:"name"`
	// Service is the exec service to run (async).
	Service string `json:"service"`
	// Cron has 5 fields (minute hour day-of-month month day-of-week) or 6
	// (seconds first), or a descriptor (@hourly, @every 10s).
	Cron string `json:"cron"`
	// Input is the JSON input of each run; empty: {}.
	Input json.RawMessage `json:"input,omitempty"`
	// Overlap is allow (default) or forbid.
	Overlap string `json:"overlap,omitempty"`
	// Timezone is an IANA name the cron fields are read in; empty: UTC.
	Timezone string `json:"timezone,omitempty"`
	// UpdatedAt is when the definition was last written (set by the
	// server; ignored on input): a schedule that never fired has its
	// first tick after it.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Version is the store version (set on read; writes use ?cas=).
	Version uint64 `json:"version,omitempty"`
}

// Key is the store key of schedule name's definition.
func Key(name string) string { return "schedule/" + name }

// StateKey is the store key of schedule name's firing state (kept apart
// from the definition: the scheduler's writes never conflict with a
// user's compare-and-set on the definition).
func StateKey(name string) string { return "schedule-state/" + name }

// Prefix and StatePrefix are the key prefixes of definitions and states.
const (
	Prefix      = "schedule/"
	StatePrefix = "schedule-state/"
)

// State is what the scheduler keeps of a schedule's firings, under
// StateKey. Every write of it is fenced (the scheduler role's term) and
// made by compare-and-set on the version read, in the same command as the
// firing's execution record.
type State struct {
	// Last is the last tick handled: fired, skipped or missed. The next
	// firing is the first tick after it.
	Last time.Time `json:"last"`
	// LastFired is the tick of the last execution started, LastExecution
	// its ID.
	LastFired     time.Time `json:"last_fired,omitzero"`
	LastExecution string    `json:"last_execution,omitempty"`
	// Fired, Skipped (overlap forbid) and Missed (older than the catch-up
	// window, or failed: LastError says why) count ticks.
	Fired   uint64 `json:"fired"`
	Skipped uint64 `json:"skipped,omitempty"`
	Missed  uint64 `json:"missed,omitempty"`
	// LastSkipped is the last tick skipped.
	LastSkipped time.Time `json:"last_skipped,omitzero"`
	// LastError is why the last tick that could not fire did not.
	LastError string `json:"last_error,omitempty"`
}

// ValidationError names the field of a definition that is wrong.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return "invalid schedule: " + e.Message
	}
	return fmt.Sprintf("invalid schedule: %s: %s", e.Field, e.Message)
}

// ErrInvalid matches every *ValidationError.
var ErrInvalid = errors.New("schedule: invalid definition")

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, args...)}
}

var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse decodes a definition (unknown fields refused, at most MaxSize
// bytes) and validates it.
func Parse(b []byte) (Schedule, error) {
	var s Schedule
	if len(b) > MaxSize {
		return s, invalid("", "definition is %d bytes, more than %d", len(b), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		if f := badField(b); f != "" {
			return s, invalid(f, "%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		return s, invalid("", "malformed JSON: %v", err)
	}
	if dec.More() {
		return s, invalid("", "trailing data after the definition")
	}
	return s, s.Validate()
}

// badField names the top-level field that does not decode.
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
		var s Schedule
		if dec.Decode(&s) != nil {
			return k
		}
	}
	return ""
}

// Normalize fills the defaults (overlap allow, input {}) and drops the
// server's fields.
func (s *Schedule) Normalize() {
	if s.Overlap == "" {
		s.Overlap = OverlapAllow
	}
	if len(bytes.TrimSpace(s.Input)) == 0 || string(bytes.TrimSpace(s.Input)) == "null" {
		s.Input = nil
	}
}

// Validate checks the definition and returns a *ValidationError naming
// the first bad field.
func (s *Schedule) Validate() error {
	if err := validName("name", s.Name); err != nil {
		return err
	}
	if err := validName("service", s.Service); err != nil {
		return err
	}
	if _, err := s.Spec(); err != nil {
		return err
	}
	switch s.Overlap {
	case "", OverlapAllow, OverlapForbid:
	default:
		return invalid("overlap", "%q is not allow or forbid", s.Overlap)
	}
	if in := bytes.TrimSpace(s.Input); len(in) > 0 {
		if len(in) > MaxInput {
			return invalid("input", "%d bytes, more than %d", len(in), MaxInput)
		}
		if !json.Valid(in) {
			return invalid("input", "not valid JSON")
		}
	}
	if b, err := json.Marshal(s); err != nil {
		return invalid("", "cannot encode: %v", err)
	} else if len(b) > MaxSize {
		return invalid("", "definition is %d bytes, more than %d", len(b), MaxSize)
	}
	return nil
}

// Spec is the parsed cron expression in the schedule's timezone.
type Spec struct {
	sched cron.Schedule
	loc   *time.Location
}

// Spec parses Cron and Timezone.
func (s *Schedule) Spec() (Spec, error) {
	loc := time.UTC
	if s.Timezone != "" {
		if len(s.Timezone) > maxTZLen || strings.HasPrefix(s.Timezone, "/") || strings.Contains(s.Timezone, "..") {
			return Spec{}, invalid("timezone", "%q is not an IANA time zone name (e.g. Europe/Paris)", s.Timezone)
		}
		l, err := time.LoadLocation(s.Timezone)
		if err != nil || s.Timezone == "Local" {
			return Spec{}, invalid("timezone", "%q is not an IANA time zone name (e.g. Europe/Paris)", s.Timezone)
		}
		loc = l
	}
	c := strings.TrimSpace(s.Cron)
	switch {
	case c == "":
		return Spec{}, invalid("cron", "missing (5 fields, or 6 with seconds first, or @hourly, @every 10s)")
	case len(c) > MaxCronLen:
		return Spec{}, invalid("cron", "longer than %d bytes", MaxCronLen)
	case strings.HasPrefix(c, "TZ=") || strings.HasPrefix(c, "CRON_TZ="):
		return Spec{}, invalid("cron", "give the time zone in the timezone field, not in the expression")
	}
	if every, ok := strings.CutPrefix(c, "@every "); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(every)); err == nil && (d < time.Second || d%time.Second != 0) {
			return Spec{}, invalid("cron", "@every takes whole seconds, at least 1s")
		}
	}
	sched, err := parser.Parse(c)
	if err != nil {
		return Spec{}, invalid("cron", "%q: %v", c, err)
	}
	sp := Spec{sched: sched, loc: loc}
	if sp.Next(time.Now()).IsZero() {
		return Spec{}, invalid("cron", "%q never fires in the next %d years", c, maxNextScan)
	}
	return sp, nil
}

// Next is the first tick strictly after t (zero: none within five years).
func (sp Spec) Next(t time.Time) time.Time {
	n := sp.sched.Next(t.In(sp.loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

func validName(field, name string) error {
	if name == "" {
		return invalid(field, "missing")
	}
	if len(name) > MaxNameLen {
		return invalid(field, "longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return invalid(field, "must start with a letter or digit")
		}
		if !alnum && c != '-' && c != '_' && c != '.' {
			return invalid(field, "may only contain letters, digits, '-', '_' and '.'")
		}
	}
	return nil
}

// ValidateName checks a schedule name (as in a path).
func ValidateName(name string) error { return validName("name", name) }
