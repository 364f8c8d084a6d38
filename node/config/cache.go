package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Bounds of -cache-size: at least the largest entry a policy may allow
// (4 MiB), at most 1 TiB.
const (
	DefaultCacheSize = 64 << 20
	minCacheSize     = 4 << 20
	maxCacheSize     = 1 << 40
)

func setCacheSize(r *Runtime, v string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer (bytes)", v)
	}
	r.CacheSize = n
	return nil
}

func (r *Runtime) validateCacheSize() error {
	if r.CacheSize < minCacheSize || r.CacheSize > maxCacheSize {
		return fieldErr("cache-size", "%d is not between %d (the largest cached entry) and %d", r.CacheSize, minCacheSize, maxCacheSize)
	}
	return nil
}
