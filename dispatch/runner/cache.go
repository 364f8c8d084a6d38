package runner

import (
	"sync"
	"sync/atomic"
)

// boundedCache maps the few keys the proxy sees on every request
// (upstream URLs, upstream hosts) to values built once. Past max entries it
// starts over, handing each dropped value to drop: the keys come from
// service definitions, and a flood of distinct ones must not grow it
// without end.
type boundedCache[V any] struct {
	m    sync.Map
	n    atomic.Int64
	max  int64
	drop func(V) // may be nil
}

// get returns key's value, building it with build on a miss. An error from
// build is returned and nothing is cached.
func (c *boundedCache[V]) get(key string, build func() (V, error)) (V, error) {
	if v, ok := c.m.Load(key); ok {
		return v.(V), nil
	}
	v, err := build()
	if err != nil {
		return v, err
	}
	if c.n.Add(1) > c.max {
		c.clear()
		c.n.Store(1)
	}
	got, loaded := c.m.LoadOrStore(key, v)
	if loaded && c.drop != nil {
		c.drop(v) // another caller stored its own first
	}
	return got.(V), nil
}

// clear drops every entry.
func (c *boundedCache[V]) clear() {
	c.m.Range(func(k, v any) bool {
		c.m.Delete(k)
		if c.drop != nil {
			c.drop(v.(V))
		}
		return true
	})
}
