package httpapi

import (
	"net"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
)

// Request is what the API's rules read of a request — routing, the
// cluster and token checks, the credential strip, the path check, limits,
// the cache key and the central log — so that both listeners decide with
// the same code: the API port through netRequest (net/http), the data
// plane through fastRequest (fasthttp's request, read in place, never
// converted). Header names are case-insensitive; a missing header is "".
type Request interface {
	Method() string
	Host() string
	// Path is the decoded path the rules see (on the data plane, a
	// request routed by Host or prefix has its /svc/NAME/ form);
	// EscapedPath the path as sent.
	Path() string
	EscapedPath() string
	RawQuery() string
	// ContentLength is the declared body length: -1 unknown, 0 none.
	ContentLength() int64
	Header(name string) string
	HeaderValues(name string) []string
	RemoteAddr() string
}

// netRequest is an *http.Request as a Request.
type netRequest struct{ r *http.Request }

// NetRequest is r as a Request, for callers of a Throttler outside this
// package's handlers.
func NetRequest(r *http.Request) Request { return netRequest{r} }

func (n netRequest) Method() string                    { return n.r.Method }
func (n netRequest) Host() string                      { return n.r.Host }
func (n netRequest) Path() string                      { return n.r.URL.Path }
func (n netRequest) EscapedPath() string               { return n.r.URL.EscapedPath() }
func (n netRequest) RawQuery() string                  { return n.r.URL.RawQuery }
func (n netRequest) ContentLength() int64              { return n.r.ContentLength }
func (n netRequest) Header(name string) string         { return n.r.Header.Get(name) }
func (n netRequest) HeaderValues(name string) []string { return n.r.Header.Values(name) }
func (n netRequest) RemoteAddr() string                { return n.r.RemoteAddr }

// fastRequest is a data-plane request as a Request. Its strings are
// copies (an entry of the central log outlives the server's buffers).
// It serves only targets that net/http would read the same way
// (nativeTarget): an origin-form path with no escapes and no dot or empty
// segments, so Path and EscapedPath are one string.
type fastRequest struct {
	ctx    *fasthttp.RequestCtx
	method string
	host   string
	path   string
	query  string
	remote string // filled on first use
}

func (f *fastRequest) Method() string      { return f.method }
func (f *fastRequest) Host() string        { return f.host }
func (f *fastRequest) Path() string        { return f.path }
func (f *fastRequest) EscapedPath() string { return f.path }
func (f *fastRequest) RawQuery() string    { return f.query }

func (f *fastRequest) ContentLength() int64 {
	if n := f.ctx.Request.Header.ContentLength(); n >= 0 {
		return int64(n)
	} else if n == -1 {
		return -1 // chunked
	}
	return 0 // -2: neither a length nor chunked, which for a request means no body
}

func (f *fastRequest) Header(name string) string {
	return string(f.ctx.Request.Header.Peek(name))
}

func (f *fastRequest) HeaderValues(name string) []string {
	vs := f.ctx.Request.Header.PeekAll(name)
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

func (f *fastRequest) RemoteAddr() string {
	if f.remote == "" {
		f.remote = f.ctx.RemoteAddr().String()
	}
	return f.remote
}

// clientIP is RemoteAddr without its port, for the central log's entry:
// one string made per request, where RemoteAddr and net.SplitHostPort
// make three.
func (f *fastRequest) clientIP() string {
	if f.remote == "" {
		if a, ok := f.ctx.RemoteAddr().(*net.TCPAddr); ok && a.Zone == "" {
			return a.IP.String()
		}
	}
	return hostOnly(f.RemoteAddr())
}

// nativeTarget splits ctx's request target into path and query when the
// data plane may serve it natively: net/http would parse it to the same
// path (origin form, no escapes, no control bytes), and its ServeMux
// would not redirect it to a cleaned path (no "//" nor dot segments).
// Anything else takes the net/http-typed route, which answers it as the
// API port does.
func nativeTarget(uri []byte) (path, query string, ok bool) {
	if len(uri) == 0 || uri[0] != '/' {
		return "", "", false
	}
	end := len(uri)
	for i, c := range uri {
		if c <= ' ' || c == 0x7f {
			return "", "", false
		}
		if c == '?' && end == len(uri) {
			end = i
		}
	}
	p := uri[:end]
	for i, c := range p {
		switch {
		case c == '%':
			return "", "", false
		case c == '/' && i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.'):
			return "", "", false
		}
	}
	if end < len(uri) {
		query = string(uri[end+1:])
	}
	return string(p), query, true
}

// svcCall is the service and the path below it that a /svc/ path calls:
// "/svc/web/a/b" is web and "/a/b", "/svc/web" web and "/". ok is false
// for a path without a service name.
func svcCall(p string) (name, rest string, ok bool) {
	tail, found := strings.CutPrefix(p, "/svc/")
	if !found {
		return "", "", false
	}
	name, rest, _ = strings.Cut(tail, "/")
	return name, "/" + rest, name != ""
}
