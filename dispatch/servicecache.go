package dispatch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"
)

// CacheSpec is an http service's "cache" field: its responses are cached
// by the replicated response cache (package cache).
type CacheSpec struct {
	// TTL is the longest a response stays fresh; upstream
	// Cache-Control s-maxage / max-age may shorten it. Required.
	TTL Duration `json:"ttl"`
	// Methods cached: GET and/or HEAD (default both).
	Methods []string `json:"methods,omitempty"`
	// Vary: request headers that are part of the key.
	Vary []string `json:"vary,omitempty"`
	// MaxEntryBytes: the largest body cached (default 1 MiB, at most 4 MiB).
	MaxEntryBytes int64 `json:"max_entry_bytes,omitempty"`
	// StaleIfError: how long past its ttl an entry may answer when the
	// upstream fails (0: never).
	StaleIfError Duration `json:"stale_if_error,omitempty"`
}

// Bounds of a cache spec.
const (
	MaxCacheTTL        = 24 * time.Hour
	MaxCacheEntryBytes = 4 << 20
	maxCacheVary       = 16
)

type cacheSpecJSON CacheSpec

// UnmarshalJSON refuses unknown fields and names the sub-field a value
// does not decode into ("ttl: invalid duration").
func (c *CacheSpec) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var v cacheSpecJSON
	if err := dec.Decode(&v); err != nil {
		var raw map[string]json.RawMessage
		if json.Unmarshal(b, &raw) != nil {
			return fmt.Errorf("must be an object like {\"ttl\": \"30s\"}")
		}
		keys := make([]string, 0, len(raw))
		for k := range raw {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			one, _ := json.Marshal(map[string]json.RawMessage{k: raw[k]})
			d := json.NewDecoder(bytes.NewReader(one))
			d.DisallowUnknownFields()
			var x cacheSpecJSON
			if e := d.Decode(&x); e != nil {
				return fmt.Errorf("%s: %s", k, strings.TrimPrefix(e.Error(), "json: "))
			}
		}
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	*c = CacheSpec(v)
	return nil
}

// validateCache checks the "cache" field (called from Validate).
func (s *Service) validateCache() error {
	c := s.Cache
	if c == nil {
		return nil
	}
	if s.Type != TypeHTTP {
		return invalid("cache", "only http services have responses to cache")
	}
	if c.TTL <= 0 {
		return invalid("cache.ttl", "required: how long a response stays fresh, like \"30s\"")
	}
	if c.TTL.Std() > MaxCacheTTL {
		return invalid("cache.ttl", "must be at most %s", MaxCacheTTL)
	}
	seen := map[string]bool{}
	for i, m := range c.Methods {
		if m != http.MethodGet && m != http.MethodHead {
			return invalid(fmt.Sprintf("cache.methods[%d]", i), "%q: only GET and HEAD are cached", m)
		}
		if seen[m] {
			return invalid(fmt.Sprintf("cache.methods[%d]", i), "%q given twice", m)
		}
		seen[m] = true
	}
	if len(c.Vary) > maxCacheVary {
		return invalid("cache.vary", "more than %d headers", maxCacheVary)
	}
	for i, h := range c.Vary {
		if !validHeaderName(h) {
			return invalid(fmt.Sprintf("cache.vary[%d]", i), "%q is not a header name", h)
		}
		switch http.CanonicalHeaderKey(h) {
		case "Authorization", "X-Meshgw-Token", "Cookie":
			// A key is shared between nodes: a credential must not be in it.
			return invalid(fmt.Sprintf("cache.vary[%d]", i), "%q carries credentials; responses that depend on it must not be cached", h)
		}
	}
	if c.MaxEntryBytes < 0 || c.MaxEntryBytes > MaxCacheEntryBytes {
		return invalid("cache.max_entry_bytes", "must be between 0 (the default, 1 MiB) and %d", MaxCacheEntryBytes)
	}
	if c.StaleIfError < 0 || c.StaleIfError.Std() > MaxCacheTTL {
		return invalid("cache.stale_if_error", "must be between 0 and %s", MaxCacheTTL)
	}
	return nil
}

// validHeaderName accepts an HTTP token (RFC 9110) of at most 128 bytes.
func validHeaderName(h string) bool {
	if h == "" || len(h) > 128 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
