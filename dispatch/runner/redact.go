package runner

import (
	"bytes"
	"io"
	"sort"
	"sync"
)

// Redaction replaces every occurrence of Value in a process's output with
// "[redacted:Name]".
type Redaction struct {
	Name  string
	Value []byte
}

// redactor is a streaming writer that redacts secret values before the
// bytes reach out. A value split across writes (chunk boundaries of the
// pipe) is still found: the tail of what came so far that could begin a
// value is held back until the next write, or Flush, decides. It holds at
// most the longest value's length minus one byte.
type redactor struct {
	mu      sync.Mutex
	out     io.Writer
	rs      []Redaction // longest value first: at one position the longest match wins
	maxLen  int
	pending []byte
}

func newRedactor(out io.Writer, rs []Redaction) *redactor {
	r := &redactor{out: out}
	for _, x := range rs {
		if len(x.Value) == 0 {
			continue
		}
		r.rs = append(r.rs, x)
		r.maxLen = max(r.maxLen, len(x.Value))
	}
	sort.SliceStable(r.rs, func(i, j int) bool { return len(r.rs[i].Value) > len(r.rs[j].Value) })
	return r
}

func (r *redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(r.pending, p...)
	r.emit(false)
	return len(p), nil
}

// Flush writes what is held back: the output has ended, so no value can
// complete any more.
func (r *redactor) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emit(true)
}

// emit writes out every byte of pending that is decided: full matches are
// replaced, and (unless final) a tail that may still become a value stays.
func (r *redactor) emit(final bool) {
	var buf bytes.Buffer
	p := r.pending
	for {
		at, which := r.find(p)
		if at < 0 {
			break
		}
		buf.Write(p[:at])
		buf.WriteString("[redacted:" + r.rs[which].Name + "]")
		p = p[at+len(r.rs[which].Value):]
	}
	keep := 0
	if !final {
		keep = r.holdBack(p)
	}
	buf.Write(p[:len(p)-keep])
	r.pending = append(r.pending[:0], p[len(p)-keep:]...)
	if buf.Len() > 0 {
		_, _ = r.out.Write(buf.Bytes())
	}
}

// find returns the earliest position of a value in p and which value.
func (r *redactor) find(p []byte) (int, int) {
	best, which := -1, -1
	for i, x := range r.rs {
		j := bytes.Index(p, x.Value)
		if j >= 0 && (best < 0 || j < best) {
			best, which = j, i
		}
	}
	return best, which
}

// holdBack is the length of the longest suffix of p that is a proper
// prefix of some value (it may complete with the next write).
func (r *redactor) holdBack(p []byte) int {
	from := max(0, len(p)-(r.maxLen-1))
	for i := from; i < len(p); i++ {
		s := p[i:]
		for _, x := range r.rs {
			if len(s) < len(x.Value) && bytes.HasPrefix(x.Value, s) {
				return len(s)
			}
		}
	}
	return 0
}

// Redact returns b with every value of rs replaced (for text that is
// already whole: error messages).
func Redact(b []byte, rs []Redaction) []byte {
	if len(rs) == 0 {
		return b
	}
	var out bytes.Buffer
	w := newRedactor(&out, rs)
	_, _ = w.Write(b)
	w.Flush()
	return out.Bytes()
}
