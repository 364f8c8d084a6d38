package cache

import (
	"container/list"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Entry is one cached response.
type Entry struct {
	ID         string      `json:"id"`
	Key        string      `json:"key"`
	Service    string      `json:"service"`
	Path       string      `json:"path"`
	SvcVersion uint64      `json:"svc_version"`
	Epoch      uint64      `json:"epoch"` // the service's epoch counter when the fill started
	Status     int         `json:"status"`
	Header     http.Header `json:"header,omitempty"`
	Stored     time.Time   `json:"stored"`
	Expires    time.Time   `json:"expires"`
	StaleUntil time.Time   `json:"stale_until"` // Expires plus the policy's stale_if_error
	Body       []byte      `json:"-"`

	// fields is Header as a StoredWriter takes it, set once by the store
	// before the entry is shared (store.put) and never changed.
	fields [][2][]byte
}

// wireSkip are the stored headers a StoredWriter does not get: the server
// frames the response (Content-Length, Transfer-Encoding, Connection), and
// a hit sets its own Age and X-Cache.
var wireSkip = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Age": true, "X-Cache": true}

// wireFields is h as canonical name and value pairs, sorted by name (one
// order for every hit), without wireSkip's.
func wireFields(h http.Header) [][2][]byte {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][2][]byte, 0, len(keys)) // not nil: put computes it once
	for _, k := range keys {
		name := http.CanonicalHeaderKey(k)
		if wireSkip[name] {
			continue
		}
		for _, v := range h[k] {
			out = append(out, [2][]byte{[]byte(name), []byte(v)})
		}
	}
	return out
}

// size is what an entry counts against the node's bound.
func (e *Entry) size() int64 {
	n := int64(len(e.Body) + len(e.Key) + len(e.ID) + len(e.Service) + len(e.Path) + 256)
	for k, vs := range e.Header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 32)
		}
	}
	return n
}

func (e *Entry) fresh(now time.Time) bool { return now.Before(e.Expires) }

// ServiceStats are one service's figures on one node.
type ServiceStats struct {
	Entries int64 `json:"entries"`
	Bytes   int64 `json:"bytes"`
	Hits    int64 `json:"hits"`
	Misses  int64 `json:"misses"`
}

// store holds this node's copies, least recently used first out when
// over maxBytes.
type store struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	lru      *list.List // of *Entry, front: most recent
	byID     map[string]*list.Element
	byKey    map[string]*list.Element // the same elements by Entry.Key: a hit's lookup (getByKey)
	stats    map[string]*ServiceStats
}

func newStore(maxBytes int64) *store {
	return &store{maxBytes: maxBytes, lru: list.New(), byID: map[string]*list.Element{},
		byKey: map[string]*list.Element{}, stats: map[string]*ServiceStats{}}
}

func (s *store) svc(name string) *ServiceStats {
	st := s.stats[name]
	if st == nil {
		st = &ServiceStats{}
		s.stats[name] = st
	}
	return st
}

// get returns the entry for id (nil if none or past its stale window).
func (s *store) get(id string, now time.Time) *Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked(s.byID[id], now)
}

// getByKey is get by the entry's key text rather than its ID: a hit
// builds the text in a buffer of its own and the map reads it in place.
func (s *store) getByKey(text []byte, now time.Time) *Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked(s.byKey[string(text)], now)
}

// liveLocked returns el's entry, made the most recently used, or nil (and
// drops it) when it is past its stale window. s.mu is held.
func (s *store) liveLocked(el *list.Element, now time.Time) *Entry {
	if el == nil {
		return nil
	}
	e := el.Value.(*Entry)
	if !now.Before(e.StaleUntil) {
		s.removeLocked(el)
		return nil
	}
	s.lru.MoveToFront(el)
	return e
}

func (s *store) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id] != nil
}

// put stores e (replacing a copy of the same id), evicting the least
// recently used entries to stay under the bound. An entry larger than
// the whole bound is refused.
func (s *store) put(e *Entry) bool {
	sz := e.size()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sz > s.maxBytes {
		return false
	}
	if el := s.byID[e.ID]; el != nil {
		old := el.Value.(*Entry)
		if old.Epoch > e.Epoch || (old.Epoch == e.Epoch && old.Stored.After(e.Stored)) {
			return true // a newer copy is kept
		}
		s.removeLocked(el)
	}
	if el := s.byKey[e.Key]; el != nil {
		s.removeLocked(el) // another ID for this key: only a peer's bad put makes one
	}
	for s.bytes+sz > s.maxBytes && s.lru.Len() > 0 {
		s.removeLocked(s.lru.Back())
	}
	if e.fields == nil {
		e.fields = wireFields(e.Header)
	}
	el := s.lru.PushFront(e)
	s.byID[e.ID], s.byKey[e.Key] = el, el
	s.bytes += sz
	st := s.svc(e.Service)
	st.Entries++
	st.Bytes += sz
	return true
}

func (s *store) removeLocked(el *list.Element) {
	e := el.Value.(*Entry)
	s.lru.Remove(el)
	delete(s.byID, e.ID)
	if s.byKey[e.Key] == el {
		delete(s.byKey, e.Key)
	}
	sz := e.size()
	s.bytes -= sz
	st := s.svc(e.Service)
	st.Entries--
	st.Bytes -= sz
}

func (s *store) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el := s.byID[id]; el != nil {
		s.removeLocked(el)
	}
}

// sweep drops every entry drop says to, and returns how many.
func (s *store) sweep(drop func(*Entry) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for el := s.lru.Front(); el != nil; {
		next := el.Next()
		if drop(el.Value.(*Entry)) {
			s.removeLocked(el)
			n++
		}
		el = next
	}
	return n
}

// snapshot lists the entries held (for rebalancing).
func (s *store) snapshot() []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Entry, 0, s.lru.Len())
	for el := s.lru.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*Entry))
	}
	return out
}

func (s *store) count(service string, hit bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hit {
		s.svc(service).Hits++
	} else {
		s.svc(service).Misses++
	}
}

// Stats returns a copy of the per-service figures.
func (s *store) statsCopy() map[string]ServiceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]ServiceStats, len(s.stats))
	for k, v := range s.stats {
		out[k] = *v
	}
	return out
}
