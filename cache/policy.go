package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Bounds of a policy and of an entry.
const (
	// DefaultMaxEntryBytes bounds a cached body when the policy says nothing.
	DefaultMaxEntryBytes = 1 << 20
	// MaxEntryBytes is the largest body a policy may allow: an entry
	// travels between nodes in one transport frame (8 MiB).
	MaxEntryBytes = 4 << 20
	// maxHeaderBytes bounds the headers kept with an entry.
	maxHeaderBytes = 32 << 10
)

// Policy is what a service's "cache" field asks for.
type Policy struct {
	TTL           time.Duration // the longest an entry is fresh (upstream max-age may shorten it)
	Methods       []string      // cached methods; empty: GET and HEAD
	Vary          []string      // request headers that are part of the key
	MaxEntryBytes int64         // largest body cached; 0: DefaultMaxEntryBytes
	StaleIfError  time.Duration // how long past freshness an entry may answer an upstream failure
}

func (p Policy) methodOK(m string) bool {
	if len(p.Methods) == 0 {
		return m == http.MethodGet || m == http.MethodHead
	}
	return slices.Contains(p.Methods, m)
}

func (p Policy) maxEntry() int64 {
	if p.MaxEntryBytes <= 0 {
		return DefaultMaxEntryBytes
	}
	return min(p.MaxEntryBytes, MaxEntryBytes)
}

// Target is the service a request is for, as the cache needs it.
type Target struct {
	Service string
	// Version is the definition's store version: an entry filled under
	// another version is never served, so a changed definition purges.
	Version uint64
	Policy  Policy
	// PassAuthorization: the caller's Authorization reaches the upstream,
	// so a request carrying one may be answered per caller: not cached.
	PassAuthorization bool
}

// Key is the cache key of a request: service, method, path, query and the
// policy's vary headers. ID is its digest, used for placement and on the
// wire; Text is kept to tell digests apart and for prefix purges (Path).
type Key struct {
	ID   string
	Text string
	Path string
}

// Request is what the cache reads of a request, so that a server other
// than net/http's (the data plane's fasthttp) can ask for a hit without
// building an *http.Request. Header names are case-insensitive.
type Request interface {
	Method() string
	RawQuery() string
	// ContentLength is the declared body length; -1 unknown, 0 none.
	ContentLength() int64
	// Header is the first value of the named header ("" when absent);
	// HeaderValues every value, in order.
	Header(name string) string
	HeaderValues(name string) []string
}

// NetRequest is an *http.Request as a Request.
type NetRequest struct{ R *http.Request }

func (n NetRequest) Method() string                    { return n.R.Method }
func (n NetRequest) RawQuery() string                  { return n.R.URL.RawQuery }
func (n NetRequest) ContentLength() int64              { return n.R.ContentLength }
func (n NetRequest) Header(name string) string         { return n.R.Header.Get(name) }
func (n NetRequest) HeaderValues(name string) []string { return n.R.Header.Values(name) }

// KeyOf builds r's key for t; path is the path below the service.
func KeyOf(t Target, r *http.Request, path string) Key { return keyOf(t, NetRequest{r}, path) }

func keyOf(t Target, r Request, path string) Key {
	text := appendKeyText(nil, t, r, path)
	sum := sha256.Sum256(text)
	return Key{ID: hex.EncodeToString(sum[:16]), Text: string(text), Path: path}
}

// appendKeyText appends r's key text for t (Key.Text) to dst. A hit looks
// its entry up by this text in a buffer of its own (store.getByKey), so
// the key costs neither an allocation nor a digest; the digest (the ID)
// is for placement and the wire.
func appendKeyText(dst []byte, t Target, r Request, path string) []byte {
	dst = append(dst, t.Service...)
	dst = append(dst, 0)
	dst = append(dst, r.Method()...)
	dst = append(dst, 0)
	dst = append(dst, path...)
	dst = append(dst, '?')
	dst = append(dst, r.RawQuery()...)
	for _, h := range t.Policy.Vary {
		dst = append(dst, 0)
		for i := 0; i < len(h); i++ {
			c := h[i]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			dst = append(dst, c)
		}
		dst = append(dst, '=')
		for i, v := range r.HeaderValues(h) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, v...)
		}
	}
	return dst
}

// requestCacheable reports whether r may be answered from the cache or
// fill it: a cached method, no body, no Range, and no Authorization the
// upstream would see.
func requestCacheable(t Target, r Request) bool {
	if !t.Policy.methodOK(r.Method()) || t.Policy.TTL <= 0 {
		return false
	}
	if r.ContentLength() > 0 || r.Header("Range") != "" {
		return false
	}
	if t.PassAuthorization && r.Header("Authorization") != "" {
		return false
	}
	return true
}

// cacheableStatus are the statuses stored (RFC 9111 "heuristically
// cacheable" ones, without the partial 206).
func cacheableStatus(code int) bool {
	switch code {
	case 200, 203, 204, 300, 301, 404, 410:
		return true
	}
	return false
}

// lifetime decides whether a response may be stored and for how long:
// Cache-Control no-store, private and no-cache refuse it (a shared cache
// that does not revalidate must not keep them), s-maxage then max-age
// shorten the policy's TTL (0 refuses), Set-Cookie and a Vary naming a
// header outside the key refuse it.
func lifetime(p Policy, code int, h http.Header) (time.Duration, bool) {
	if !cacheableStatus(code) || p.TTL <= 0 {
		return 0, false
	}
	if len(h.Values("Set-Cookie")) > 0 {
		return 0, false
	}
	for _, v := range h.Values("Vary") {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if name == "*" || !slices.ContainsFunc(p.Vary, func(x string) bool { return strings.EqualFold(x, name) }) {
				return 0, false
			}
		}
	}
	ttl := p.TTL
	maxAge, sMaxAge := -1, -1
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			name, val, _ := strings.Cut(d, "=")
			switch strings.TrimSpace(name) {
			case "no-store", "private", "no-cache":
				return 0, false
			case "max-age":
				if n, err := strconv.Atoi(strings.Trim(val, `" `)); err == nil && n >= 0 {
					maxAge = n
				}
			case "s-maxage":
				if n, err := strconv.Atoi(strings.Trim(val, `" `)); err == nil && n >= 0 {
					sMaxAge = n
				}
			}
		}
	}
	if sMaxAge >= 0 {
		maxAge = sMaxAge
	}
	if maxAge >= 0 {
		ttl = min(ttl, time.Duration(maxAge)*time.Second)
	}
	if ttl <= 0 {
		return 0, false
	}
	return ttl, true
}

// hopHeaders are not stored with an entry: they describe one connection.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "X-Cache": true, "Age": true,
}

// storedHeader is the part of h kept with an entry, or false when over
// maxHeaderBytes.
func storedHeader(h http.Header) (http.Header, bool) {
	out := make(http.Header, len(h))
	size := 0
	for k, vs := range h {
		if hopHeaders[http.CanonicalHeaderKey(k)] {
			continue
		}
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
		out[k] = slices.Clone(vs)
	}
	return out, size <= maxHeaderBytes
}
