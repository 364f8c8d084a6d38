package upstreams

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"sort"
	"strings"
)

// Route is one (host, prefix) claimed by a service.
type Route struct {
	Host    string `json:"host"` // "*" for every host
	Prefix  string `json:"prefix"`
	Strip   bool   `json:"strip,omitempty"`
	Service string `json:"service"`
}

// Table is a node's route table; the zero value routes nothing.
type Table struct {
	byHost   map[string][]Route // longest prefix first
	any      []Route
	routes   []Route // sorted, as listed
	revision string
}

// NewTable builds a table. Routes are expected conflict free (the store
// refuses conflicting claims); of duplicates the first in (host, prefix,
// service) order wins.
func NewTable(routes []Route) *Table {
	rs := append([]Route(nil), routes...)
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Prefix != b.Prefix {
			return a.Prefix < b.Prefix
		}
		return a.Service < b.Service
	})
	t := &Table{byHost: map[string][]Route{}, routes: rs}
	h := sha256.New()
	for _, r := range rs {
		strip := "0"
		if r.Strip {
			strip = "1"
		}
		h.Write([]byte(r.Host + "\x00" + r.Prefix + "\x00" + strip + "\x00" + r.Service + "\n"))
		if r.Host == "*" {
			t.any = append(t.any, r)
		} else {
			t.byHost[strings.ToLower(r.Host)] = append(t.byHost[strings.ToLower(r.Host)], r)
		}
	}
	t.revision = hex.EncodeToString(h.Sum(nil))[:16]
	longestFirst := func(l []Route) {
		sort.SliceStable(l, func(i, j int) bool { return len(l[i].Prefix) > len(l[j].Prefix) })
	}
	longestFirst(t.any)
	for _, l := range t.byHost {
		longestFirst(l)
	}
	return t
}

// Routes are the table's routes, sorted by host, prefix and service.
func (t *Table) Routes() []Route {
	if t == nil {
		return nil
	}
	return t.routes
}

// Revision names the table's content: equal tables, equal revisions.
func (t *Table) Revision() string {
	if t == nil {
		return NewTable(nil).revision
	}
	return t.revision
}

// Len is the number of routes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.routes)
}

// Match finds the route of a request to host (a Host header, port
// allowed) and path, and the path to proxy (the prefix removed when the
// route strips it).
func (t *Table) Match(host, path string) (Route, string, bool) {
	if t == nil || len(t.routes) == 0 {
		return Route{}, "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, l := range [][]Route{t.byHost[host], t.any} {
		for _, r := range l {
			if rest, ok := cut(path, r.Prefix); ok {
				if !r.Strip {
					rest = path
				}
				return r, rest, true
			}
		}
	}
	return Route{}, "", false
}

// cut matches prefix at a segment boundary and returns what follows it
// (always starting with '/').
func cut(path, prefix string) (string, bool) {
	base := strings.TrimSuffix(prefix, "/")
	if base == "" {
		return path, strings.HasPrefix(path, "/")
	}
	if path == base {
		return "/", true
	}
	if strings.HasPrefix(path, base+"/") {
		return path[len(base):], true
	}
	return "", false
}
