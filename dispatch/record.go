package dispatch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/meshgw/meshgw/dispatch/runner"
)

// Records are JSON, and JSON makes a string bigger than its bytes: with
// encoding/json's defaults `<`, `>` and `&` take 6 bytes each, and so do
// control characters and every byte of invalid UTF-8 (\ufffd). Raw caps on
// input and output therefore did not bound a record: one over
// MaxRecordSize was refused by the store, its terminal write failed, and
// recovery ran it again and again until it ended lost.
//
// So a record is encoded without HTML escaping (it is never served as
// HTML) and its encoded size is bounded (encodeRecord): what MaxRecordSize
// leaves after the other fields goes first to the input (an async
// execution is re-run from it), then is shared between stdout and stderr,
// each cut at a rune boundary and ended with runner.TruncationMarker,
// setting Truncated (InputTruncated for the input). Output is measured as
// encoded (encodedLen); invalid UTF-8 in it reads as U+FFFD, as the API's
// JSON would show it anyway. The input is kept exactly: one that is not
// valid UTF-8 is stored as base64 (InputB64, 4/3 of its size), not as a
// string JSON would corrupt and a re-run would then feed the process. A
// record that still does not fit is written minimal (no input or output,
// the reason in Error), so an execution always gets its terminal record.

// recordFieldSlack covers the name, quotes and comma of a field whose
// value the budget sizes; any error in the estimate is caught by measuring
// the final encoding.
const recordFieldSlack = 32

// maxMinimalError bounds an error message kept in a minimal record.
const maxMinimalError = 4 << 10

// marshalRecord is the record's stored encoding: JSON without HTML escaping.
func marshalRecord(e *Execution) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("encode execution: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// encodeRecord encodes c in at most limit bytes: whole if it fits, else
// with input and output cut to fit, else minimal. ErrTooLarge if not even
// the minimal record fits.
func encodeRecord(c Execution, limit int) ([]byte, error) {
	b, err := marshalRecord(&c)
	if err != nil || len(b) <= limit {
		return b, err
	}
	fitRecord(&c, limit)
	if b, err := marshalRecord(&c); err == nil && len(b) <= limit {
		return b, nil
	}
	return encodeMinimal(c, limit)
}

// encodeMinimal encodes c without input or output (and, if even that is
// too large, without its service definition): the record that is written
// when nothing else fits.
func encodeMinimal(c Execution, limit int) ([]byte, error) {
	hadInput := c.Input != "" || len(c.InputB64) > 0
	c.Input, c.InputB64, c.Stdout, c.Stderr = "", nil, "", ""
	c.Truncated = true
	c.InputTruncated = c.InputTruncated || hadInput
	msg, _ := cutEncoded(c.Error, maxMinimalError)
	if msg != "" {
		msg += "; "
	}
	c.Error = msg + "record too large for the store: input and output not kept"
	c.History = append([]Attempt(nil), c.History...)
	for i := range c.History {
		c.History[i].Error, _ = cutEncoded(c.History[i].Error, maxMinimalError)
	}
	b, err := marshalRecord(&c)
	if err == nil && len(b) > limit {
		// Recovery needs the definition to re-run a non-terminal one; without
		// it the execution ends lost, which beats a record that never lands.
		c.ServiceDef = nil
		b, err = marshalRecord(&c)
	}
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%w: even a minimal record of execution %s takes %d bytes, more than %d",
			ErrTooLarge, c.ID, len(b), limit)
	}
	return b, nil
}

// fitRecord cuts c's input and output so that its encoding takes about
// limit bytes at most (see the comment at the top of this file).
func fitRecord(c *Execution, limit int) {
	in, in64, stdout, stderr := c.Input, c.InputB64, c.Stdout, c.Stderr
	truncated, inTruncated := c.Truncated, c.InputTruncated
	c.Input, c.InputB64, c.Stdout, c.Stderr = "", nil, "", ""
	c.Truncated, c.InputTruncated = true, true // the larger encoding of the rest
	base, err := marshalRecord(c)
	if err != nil {
		return // encodeRecord's final encoding reports it
	}
	budget := limit - len(base) - 3*recordFieldSlack
	c.Truncated, c.InputTruncated = truncated, inTruncated
	if in64 != nil {
		if base64.StdEncoding.EncodedLen(len(in64)) > budget {
			in64 = in64[:max(budget, 0)/4*3]
			c.InputTruncated = true
		}
		c.InputB64 = in64
		budget -= base64.StdEncoding.EncodedLen(len(in64))
	} else {
		kept, n := cutEncoded(in, budget)
		if len(kept) < len(in) {
			c.InputTruncated = true
		}
		c.Input = kept
		budget -= n
	}
	var cut bool
	c.Stdout, c.Stderr, cut = shareOutput(stdout, stderr, budget)
	c.Truncated = c.Truncated || cut
}

// shareOutput cuts stdout and stderr so that their encodings take at most
// budget bytes together: each gets half, and what one does not need goes
// to the other. A cut stream ends with runner.TruncationMarker.
func shareOutput(stdout, stderr string, budget int) (string, string, bool) {
	lo, le := encodedLen(stdout), encodedLen(stderr)
	if lo+le <= budget {
		return stdout, stderr, false
	}
	budget = max(budget, 0)
	half := budget / 2
	switch {
	case lo <= half:
		return stdout, cutMarked(stderr, budget-lo), true
	case le <= half:
		return cutMarked(stdout, budget-le), stderr, true
	}
	return cutMarked(stdout, half), cutMarked(stderr, budget-half), true
}

// cutMarked returns the longest prefix of s that, followed by
// runner.TruncationMarker, encodes in at most budget bytes (empty when
// not even the marker fits).
func cutMarked(s string, budget int) string {
	mk := encodedLen(runner.TruncationMarker)
	if budget < mk {
		return ""
	}
	kept, _ := cutEncoded(s, budget-mk)
	return kept + runner.TruncationMarker
}

// encodedLen is the size of s inside a JSON string (quotes excluded) as
// marshalRecord writes it: encoding/json's escapes with HTML escaping off.
func encodedLen(s string) int {
	_, n := cutEncoded(s, len(s)*6)
	return n
}

// cutEncoded returns the longest prefix of s, cut at a rune boundary (an
// invalid byte counts as one rune), whose encoding inside a JSON string
// takes at most budget bytes, and that encoded size.
func cutEncoded(s string, budget int) (string, int) {
	n := 0
	for i := 0; i < len(s); {
		size, w := 1, 1
		if c := s[i]; c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				w = 2
			case c < 0x20:
				w = 6 // \u00XX
			}
		} else {
			var r rune
			r, size = utf8.DecodeRuneInString(s[i:])
			w = size
			if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
				w = 6 // \ufffd, \u2028, \u2029
			}
		}
		if n+w > budget {
			return s[:i], n
		}
		n += w
		i += size
	}
	return s, n
}

// setInput stores in as the record's input: as a string when it is valid
// UTF-8, as base64 (InputB64) when JSON would corrupt it.
func (e *Execution) setInput(in []byte) {
	if utf8.Valid(in) {
		e.Input, e.InputB64 = string(in), nil
		return
	}
	e.Input, e.InputB64 = "", append([]byte{}, in...)
}

// input returns the record's input as the process received it.
func (e *Execution) input() []byte {
	if e.InputB64 != nil {
		return e.InputB64
	}
	return []byte(e.Input)
}

// cutInput returns at most n bytes of in, not splitting a UTF-8 rune of
// valid input (a split would turn it into base64 in the record).
func cutInput(in []byte, n int) []byte {
	if len(in) <= n {
		return in
	}
	if !utf8.Valid(in) {
		return in[:n]
	}
	for n > 0 && !utf8.RuneStart(in[n]) {
		n--
	}
	return in[:n]
}
