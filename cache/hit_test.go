package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestKeyTextIsTheWireKey: the key a hit builds in place is the text and
// digest every node computes (nodes of two builds must place a key alike).
func TestKeyTextIsTheWireKey(t *testing.T) {
	r := httptest.NewRequest("GET", "/svc/web/a?q=1", nil)
	r.Header.Add("Accept", "text/html")
	r.Header.Add("Accept", "text/plain")
	k := KeyOf(target, r, "/a")
	text := "web\x00GET\x00/a?q=1\x00accept=text/html,text/plain"
	sum := sha256.Sum256([]byte(text))
	if k.Text != text || k.ID != hex.EncodeToString(sum[:16]) {
		t.Fatalf("key %q %s, want %q %x", k.Text, k.ID, text, sum[:16])
	}
	if got := string(appendKeyText(nil, target, NetRequest{r}, "/a")); got != text {
		t.Fatalf("appendKeyText %q", got)
	}
}

// storedWriter records what a StoredWriter is given.
type storedWriter struct {
	*httptest.ResponseRecorder
	status int
	fields [][2][]byte
	age    int
	xcache string
	body   []byte
	calls  int
}

func newStoredWriter() *storedWriter { return &storedWriter{ResponseRecorder: httptest.NewRecorder()} }

func (s *storedWriter) WriteStored(status int, fields [][2][]byte, age int, xcache string, body []byte) {
	s.status, s.fields, s.age, s.xcache, s.body = status, fields, age, xcache, body
	s.calls++
}

// fill stores path's response on every node of m (a miss through c) and
// returns the node that holds it.
func fill(t *testing.T, m *mesh, c *Cache, u *upstream, path string) *Cache {
	t.Helper()
	r := httptest.NewRequest("GET", "/svc/web"+path, nil)
	if err := c.Serve(httptest.NewRecorder(), r, target, path, u.proxy); err != nil {
		t.Fatal(err)
	}
	var holder *Cache
	waitFor(t, func() bool {
		for _, n := range m.nodes {
			if n.Stats()["web"].Entries > 0 {
				holder = n
				return true
			}
		}
		return false
	})
	return holder
}

// TestServeHitToAStoredWriter: a StoredWriter gets the entry's status,
// its headers as canonical name and value bytes (sorted, without the
// framing headers, Age and X-Cache), the Age and the body as stored; a
// HEAD no body; and a purged entry is not served.
func TestServeHitToAStoredWriter(t *testing.T) {
	m := newMesh(t, "a", "b")
	u := &upstream{body: "v1", hdr: http.Header{"Content-Type": {"text/plain"}, "X-B": {"1", "2"},
		"Connection": {"x"}, "Age": {"9"}}}
	holder := fill(t, m, m.nodes["a"], u, "/x")
	w := newStoredWriter()
	v := viewRequest{method: "GET", hdr: map[string][]string{}}
	if !holder.ServeHit(w, v, target, "/x") || w.calls != 1 {
		t.Fatalf("no hit: %d calls", w.calls)
	}
	want := [][2][]byte{{[]byte("Content-Type"), []byte("text/plain")}, {[]byte("X-B"), []byte("1")}, {[]byte("X-B"), []byte("2")}}
	if w.status != 200 || w.xcache != "HIT" || w.age != 0 || string(w.body) != "v1" || !reflect.DeepEqual(w.fields, want) {
		t.Fatalf("wrote %d %q age %d %q %q", w.status, w.xcache, w.age, w.body, w.fields)
	}
	if len(w.Header()) != 0 || w.Body.Len() != 0 {
		t.Fatalf("also wrote through http.ResponseWriter: %v %q", w.Header(), w.Body)
	}

	// A HEAD is a key of its own: fill it, then its hit has no body.
	headReq := httptest.NewRequest("HEAD", "/svc/web/x", nil)
	if err := holder.Serve(httptest.NewRecorder(), headReq, target, "/x", u.proxy); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		w = newStoredWriter()
		return holder.ServeHit(w, viewRequest{method: "HEAD"}, target, "/x")
	})
	if w.body != nil || w.status != 200 {
		t.Fatalf("HEAD: %d body %q", w.status, w.body)
	}

	holder.applyEpoch("web", EpochRecord{Counter: 1, Base: 1})
	w = newStoredWriter()
	if holder.ServeHit(w, v, target, "/x") || w.calls != 0 {
		t.Fatal("a purged entry was served")
	}
}

// TestServeHitAllocatesNothing: a hit for a policy without vary headers,
// written to a StoredWriter, allocates nothing.
func TestServeHitAllocatesNothing(t *testing.T) {
	m := newMesh(t, "a", "b")
	tg := target
	tg.Policy.Vary = nil
	u := &upstream{body: "v1", hdr: http.Header{"Content-Type": {"text/plain"}}}
	r := httptest.NewRequest("GET", "/svc/web/x?q=1", nil)
	if err := m.nodes["a"].Serve(httptest.NewRecorder(), r, tg, "/x", u.proxy); err != nil {
		t.Fatal(err)
	}
	var v Request = viewRequest{method: "GET", query: "q=1"} // boxed once, as the data plane's pointer is
	var holder *Cache
	waitFor(t, func() bool {
		for _, n := range m.nodes {
			if n.ServeHit(newStoredWriter(), v, tg, "/x") {
				holder = n
				return true
			}
		}
		return false
	})
	w := newStoredWriter()
	if n := testing.AllocsPerRun(200, func() { holder.ServeHit(w, v, tg, "/x") }); n != 0 || w.calls == 0 {
		t.Fatalf("%v allocations per hit (%d hits)", n, w.calls)
	}
}

// TestStoreKeyIndex: the key index follows the ID index through
// replacement, eviction and removal, and a peer's put of another ID for a
// key already held replaces it rather than leaving two.
func TestStoreKeyIndex(t *testing.T) {
	s := newStore(1 << 20)
	now := time.Now()
	e := func(id, key string) *Entry {
		return &Entry{ID: id, Key: key, Service: "web", Stored: now, Expires: now.Add(time.Hour), StaleUntil: now.Add(time.Hour)}
	}
	s.put(e("id1", "k1"))
	if got := s.getByKey([]byte("k1"), now); got == nil || got.ID != "id1" || got.fields == nil {
		t.Fatalf("by key: %+v", got)
	}
	s.put(e("id2", "k1"))
	if s.get("id1", now) != nil || s.getByKey([]byte("k1"), now).ID != "id2" || s.lru.Len() != 1 {
		t.Fatalf("two entries for one key: %d", s.lru.Len())
	}
	s.remove("id2")
	if s.getByKey([]byte("k1"), now) != nil || len(s.byKey) != 0 || len(s.byID) != 0 {
		t.Fatalf("left after remove: %v %v", s.byKey, s.byID)
	}
	s.put(e("id3", "k3"))
	if s.getByKey([]byte("k3"), now.Add(2*time.Hour)) != nil || len(s.byKey) != 0 {
		t.Fatal("an entry past its stale window is still indexed")
	}
}

// BenchmarkServeHit is one hit on a node's own copy: to a StoredWriter
// (the data plane) and to an http.ResponseWriter (the API port).
func BenchmarkServeHit(b *testing.B) {
	c, err := New(func() Config {
		cfg := DefaultConfig()
		cfg.Node = "a"
		cfg.Members = func() []Member { return []Member{{Name: "a", Live: true, Gateway: true}} }
		cfg.MayCall = func(string) bool { return true }
		cfg.RPC = meshCaller{}
		cfg.Epochs = &memEpochs{recs: map[string]EpochRecord{}}
		return cfg
	}(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	c.Start() // its refresher keeps the purge records confirmed
	b.Cleanup(c.Stop)
	for !c.Serving() {
		time.Sleep(time.Millisecond)
	}
	tg := Target{Service: "web", Version: 1, Policy: Policy{TTL: time.Hour}}
	body := make([]byte, 1024)
	now := time.Now()
	r := httptest.NewRequest("GET", "/svc/web/c", nil)
	k := KeyOf(tg, r, "/c")
	c.putLocal(&Entry{ID: k.ID, Key: k.Text, Service: "web", Path: "/c", SvcVersion: 1, Status: 200,
		Header: http.Header{"Content-Type": {"text/plain"}, "Cache-Control": {"max-age=3600"}, "Date": {"x"}},
		Stored: now, Expires: now.Add(time.Hour), StaleUntil: now.Add(time.Hour), Body: body})
	var v Request = viewRequest{method: "GET"} // boxed once, as the data plane's pointer is
	b.Run("stored-writer", func(b *testing.B) {
		w := newStoredWriter()
		b.ReportAllocs()
		for b.Loop() {
			if !c.ServeHit(w, v, tg, "/c") {
				b.Fatal("no hit")
			}
		}
	})
	b.Run("http-header", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w := httptest.NewRecorder()
			if !c.ServeHit(w, v, tg, "/c") {
				b.Fatal("no hit")
			}
		}
	})
}

// TestNonOwnerKeepsANearCopy: a node that holds no copy of a key answers
// its hits for nearTTL from the copy an owner sent it, with the owners
// unreachable; it does not count it as an entry; the copy lapses; and a
// purge leaves no old body on it, near copy or not.
func TestNonOwnerKeepsANearCopy(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "old"}
	get(t, m.nodes["a"], target, "/n", u)
	var other *Cache
	var owners []string
	waitFor(t, func() bool {
		owners, other = nil, nil
		for name, c := range m.nodes {
			if c.Stats()["web"].Entries > 0 {
				owners = append(owners, name)
			} else {
				other = c
			}
		}
		return len(owners) == Replicas
	})
	if w := get(t, other, target, "/n", u); w.Header().Get("X-Cache") != "HIT" || w.Body.String() != "old" {
		t.Fatalf("through the non-owner: %q %q", w.Header().Get("X-Cache"), w.Body)
	}
	setDown := func(down bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, o := range owners {
			m.down[o] = down
		}
	}
	v := viewRequest{method: "GET", hdr: map[string][]string{}}
	setDown(true)
	w := newStoredWriter()
	if !other.ServeHit(w, v, target, "/n") || string(w.body) != "old" {
		t.Fatal("the non-owner did not answer from its near copy with the owners unreachable")
	}
	if st := other.Stats()["web"]; st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("a near copy counted as an entry: %+v", st)
	}
	waitFor(t, func() bool { return !other.ServeHit(newStoredWriter(), v, target, "/n") })
	setDown(false)

	// A near copy again, then a purge through an owner: the old body is
	// gone from the non-owner at once.
	if w := get(t, other, target, "/n", u); w.Header().Get("X-Cache") != "HIT" {
		t.Fatal("no hit through the non-owner")
	}
	if !other.ServeHit(newStoredWriter(), v, target, "/n") {
		t.Fatal("no near copy")
	}
	u.set("new", 200)
	if _, err := m.nodes[owners[0]].Purge(context.Background(), "web", ""); err != nil {
		t.Fatal(err)
	}
	if other.ServeHit(newStoredWriter(), v, target, "/n") {
		t.Fatal("the near copy answered after the purge")
	}
	if w := get(t, other, target, "/n", u); w.Body.String() != "new" {
		t.Fatalf("after the purge: %q %s", w.Body, w.Header().Get("X-Cache"))
	}
}
