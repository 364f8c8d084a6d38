package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// memEpochs is Epochs over a map, as the group would keep it.
type memEpochs struct {
	mu   sync.Mutex
	recs map[string]EpochRecord
	fail atomic.Bool
}

func (m *memEpochs) Load(ctx context.Context) (map[string]EpochRecord, error) {
	if m.fail.Load() {
		return nil, errors.New("no quorum")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]EpochRecord{}
	for k, v := range m.recs {
		out[k] = v
	}
	return out, nil
}

func (m *memEpochs) Bump(ctx context.Context, service, prefix string) (EpochRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[service].Bump(prefix)
	m.recs[service] = r
	return r, nil
}

// mesh is caches calling one another through Handle, like the transport:
// a node marked down answers nothing (its calls fail after the deadline).
type mesh struct {
	t      *testing.T
	mu     sync.Mutex
	nodes  map[string]*Cache
	down   map[string]bool
	live   map[string]bool
	epochs *memEpochs
}

type meshCaller struct {
	m    *mesh
	from string
}

func (c meshCaller) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	c.m.mu.Lock()
	n, down := c.m.nodes[addr], c.m.down[addr]
	c.m.mu.Unlock()
	if n == nil || down {
		<-ctx.Done()
		return nil, fmt.Errorf("unreachable %s: %w", addr, ctx.Err())
	}
	return n.Handle(ctx, c.from, method, append([]byte(nil), body...))
}

func newMesh(t *testing.T, names ...string) *mesh {
	m := &mesh{t: t, nodes: map[string]*Cache{}, down: map[string]bool{}, live: map[string]bool{},
		epochs: &memEpochs{recs: map[string]EpochRecord{}}}
	for _, n := range names {
		m.live[n] = true
	}
	for _, n := range names {
		cfg := DefaultConfig()
		cfg.Node = n
		cfg.Refresh, cfg.Confirm = 20*time.Millisecond, 300*time.Millisecond
		cfg.CallTimeout, cfg.FillWait, cfg.Cleanup = 100*time.Millisecond, 2*time.Second, 50*time.Millisecond
		cfg.Members = m.members
		cfg.MayCall = func(p string) bool { m.mu.Lock(); defer m.mu.Unlock(); return m.live[p] || m.down[p] }
		cfg.RPC = meshCaller{m: m, from: n}
		cfg.Epochs = m.epochs
		c, err := New(cfg, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		m.nodes[n] = c
		c.Start()
		t.Cleanup(c.Stop)
	}
	for _, c := range m.nodes {
		waitFor(t, func() bool { _, ok := c.epochs.current("x", time.Now(), c.cfg.Confirm); return ok })
	}
	return m
}

func (m *mesh) members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Member
	for n := range m.nodes {
		out = append(out, Member{Name: n, RPCAddr: n, Live: m.live[n], Gateway: true})
	}
	return out
}

// kill makes n unreachable and, with seen, gossip sees it failed.
func (m *mesh) kill(n string, seen bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down[n] = true
	if seen {
		m.live[n] = false
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// upstream counts calls and answers body() with the headers hdr.
type upstream struct {
	calls atomic.Int64
	delay time.Duration
	mu    sync.Mutex
	body  string
	hdr   http.Header
	code  int
}

func (u *upstream) proxy(w http.ResponseWriter, r *http.Request) error {
	u.calls.Add(1)
	if u.delay > 0 {
		time.Sleep(u.delay)
	}
	u.mu.Lock()
	body, code := u.body, u.code
	for k, vs := range u.hdr {
		w.Header()[k] = vs
	}
	u.mu.Unlock()
	if code == 0 {
		code = 200
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
	return nil
}

func (u *upstream) set(body string, code int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.body, u.code = body, code
}

var target = Target{Service: "web", Version: 7, Policy: Policy{TTL: time.Minute, Vary: []string{"Accept"}}}

func get(t *testing.T, c *Cache, tg Target, path string, u *upstream, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("GET", "/svc/web"+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	if err := c.Serve(w, r, tg, path, u.proxy); err != nil {
		t.Fatalf("serve: %v", err)
	}
	return w
}

func TestKeyOf(t *testing.T) {
	mk := func(path, query, accept, other string) Key {
		r := httptest.NewRequest("GET", "/svc/web"+path+"?"+query, nil)
		r.Header.Set("Accept", accept)
		r.Header.Set("X-Other", other)
		return KeyOf(target, r, path)
	}
	base := mk("/a", "q=1", "text/html", "x")
	if base.ID != mk("/a", "q=1", "text/html", "y").ID {
		t.Fatal("a header outside vary changed the key")
	}
	for _, k := range []Key{mk("/b", "q=1", "text/html", "x"), mk("/a", "q=2", "text/html", "x"), mk("/a", "q=1", "application/json", "x")} {
		if k.ID == base.ID {
			t.Fatalf("%q and %q share an id", k.Text, base.Text)
		}
	}
	other := target
	other.Service = "api"
	r := httptest.NewRequest("GET", "/svc/api/a?q=1", nil)
	r.Header.Set("Accept", "text/html")
	if KeyOf(other, r, "/a").ID == base.ID {
		t.Fatal("two services share a key")
	}
	if len(base.ID) != 32 {
		t.Fatalf("id %q", base.ID)
	}
}

func TestLifetime(t *testing.T) {
	p := Policy{TTL: time.Minute, Vary: []string{"Accept"}}
	cases := []struct {
		code int
		h    []string
		want time.Duration
		ok   bool
	}{
		{200, nil, time.Minute, true},
		{500, nil, 0, false},
		{206, nil, 0, false},
		{404, nil, time.Minute, true},
		{200, []string{"Cache-Control", "no-store"}, 0, false},
		{200, []string{"Cache-Control", "public, private"}, 0, false},
		{200, []string{"Cache-Control", "no-cache"}, 0, false},
		{200, []string{"Cache-Control", "max-age=10"}, 10 * time.Second, true},
		{200, []string{"Cache-Control", "max-age=600"}, time.Minute, true},
		{200, []string{"Cache-Control", "max-age=10, s-maxage=20"}, 20 * time.Second, true},
		{200, []string{"Cache-Control", "max-age=0"}, 0, false},
		{200, []string{"Set-Cookie", "a=b"}, 0, false},
		{200, []string{"Vary", "accept"}, time.Minute, true},
		{200, []string{"Vary", "Accept, Cookie"}, 0, false},
		{200, []string{"Vary", "*"}, 0, false},
	}
	for _, tc := range cases {
		h := http.Header{}
		for i := 0; i+1 < len(tc.h); i += 2 {
			h.Add(tc.h[i], tc.h[i+1])
		}
		got, ok := lifetime(p, tc.code, h)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%d %v: %v %v, want %v %v", tc.code, tc.h, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRequestCacheable(t *testing.T) {
	mk := func(method string, h ...string) Request {
		r := httptest.NewRequest(method, "/svc/web/", nil)
		for i := 0; i+1 < len(h); i += 2 {
			r.Header.Set(h[i], h[i+1])
		}
		return NetRequest{r}
	}
	if !requestCacheable(target, mk("GET")) || !requestCacheable(target, mk("HEAD")) {
		t.Fatal("GET/HEAD not cached")
	}
	if requestCacheable(target, mk("POST")) || requestCacheable(target, mk("GET", "Range", "bytes=0-1")) {
		t.Fatal("POST or Range cached")
	}
	pa := target
	pa.PassAuthorization = true
	if requestCacheable(pa, mk("GET", "Authorization", "Bearer x")) || !requestCacheable(target, mk("GET", "Authorization", "Bearer x")) {
		t.Fatal("Authorization rule")
	}
	only := target
	only.Policy.Methods = []string{"GET"}
	if requestCacheable(only, mk("HEAD")) {
		t.Fatal("HEAD cached though methods says GET only")
	}
}

func TestStoreBound(t *testing.T) {
	s := newStore(10_000)
	now := time.Now()
	mk := func(id string, n int) *Entry {
		return &Entry{ID: id, Service: "web", Body: make([]byte, n), Status: 200, Expires: now.Add(time.Hour), StaleUntil: now.Add(time.Hour)}
	}
	for i := range 20 {
		if !s.put(mk(fmt.Sprint(i), 1000)) {
			t.Fatal("put refused")
		}
		if s.bytes > s.maxBytes {
			t.Fatalf("bytes %d over bound %d", s.bytes, s.maxBytes)
		}
	}
	if s.get("0", now) != nil || s.get("19", now) == nil {
		t.Fatal("not least recently used out first")
	}
	if s.put(mk("big", 20_000)) {
		t.Fatal("entry larger than the bound stored")
	}
	st := s.statsCopy()["web"]
	if st.Entries != int64(s.lru.Len()) || st.Bytes != s.bytes {
		t.Fatalf("stats %+v vs %d entries %d bytes", st, s.lru.Len(), s.bytes)
	}
	old := mk("x", 10)
	old.StaleUntil = now.Add(-time.Second)
	s.put(old)
	if s.get("x", now) != nil {
		t.Fatal("entry past its stale window served")
	}
}

func TestPlacement(t *testing.T) {
	ms := []Member{{Name: "a", Live: true, Gateway: true}, {Name: "b", Live: true, Gateway: true},
		{Name: "c", Live: true, Gateway: true}, {Name: "d", Live: true, Gateway: true}}
	counts := map[string]int{}
	moved := 0
	for i := range 2000 {
		id := fmt.Sprintf("%032x", i)
		o := place(id, ms, 2)
		if len(o) != 2 || o[0].Name == o[1].Name {
			t.Fatalf("owners %v", o)
		}
		counts[o[0].Name]++
		// d dies: keys it did not own keep their owners.
		o2 := place(id, []Member{ms[0], ms[1], ms[2], {Name: "d", Gateway: true}}, 2)
		if o[0].Name != "d" && o[1].Name != "d" {
			if o2[0] != o[0] || o2[1] != o[1] {
				moved++
			}
		}
	}
	if moved != 0 {
		t.Fatalf("%d keys not owned by the dead member moved", moved)
	}
	for n, c := range counts {
		if c < 350 || c > 650 {
			t.Fatalf("primary counts uneven: %v (%s)", counts, n)
		}
	}
}

func TestEpochRecord(t *testing.T) {
	var r EpochRecord
	if !r.Valid(0, "/a") {
		t.Fatal("fresh record refuses")
	}
	r = r.Bump("/a/")
	if r.Valid(0, "/a/x") || !r.Valid(0, "/b") || !r.Valid(1, "/a/x") {
		t.Fatalf("prefix purge: %+v", r)
	}
	r = r.Bump("")
	if r.Valid(1, "/b") || !r.Valid(2, "/b") || len(r.Prefixes) != 0 {
		t.Fatalf("full purge: %+v", r)
	}
	for i := range MaxPrefixPurges + 5 {
		r = r.Bump(fmt.Sprintf("/p%d/", i))
	}
	if len(r.Prefixes) > MaxPrefixPurges || r.Valid(2, "/p0/x") || !r.Valid(r.Counter, "/p0/x") {
		t.Fatalf("fold: %d prefixes, %+v", len(r.Prefixes), r.Base)
	}
}

func TestHitThroughAnotherNode(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "v1"}
	if w := get(t, m.nodes["a"], target, "/x", u); w.Header().Get("X-Cache") != "MISS" || w.Body.String() != "v1" {
		t.Fatalf("first: %q %q", w.Header().Get("X-Cache"), w.Body)
	}
	for _, n := range []string{"b", "c", "a"} {
		waitFor(t, func() bool {
			w := get(t, m.nodes[n], target, "/x", u)
			return w.Header().Get("X-Cache") == "HIT" && w.Body.String() == "v1"
		})
	}
	if u.calls.Load() != 1 {
		t.Fatalf("upstream called %d times", u.calls.Load())
	}
	waitFor(t, func() bool { // the second copy is written in the background
		held := 0
		for _, c := range m.nodes {
			held += int(c.Stats()["web"].Entries)
		}
		return held == Replicas
	})
	// Another vary value is another entry; a new definition version too.
	if w := get(t, m.nodes["b"], target, "/x", u, "Accept", "application/json"); w.Header().Get("X-Cache") != "MISS" {
		t.Fatal("vary ignored")
	}
	v8 := target
	v8.Version = 8
	if w := get(t, m.nodes["b"], v8, "/x", u); w.Header().Get("X-Cache") != "MISS" {
		t.Fatal("an entry of the old definition served")
	}
}

func TestNoStoreNeverCached(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "secret", hdr: http.Header{"Cache-Control": {"no-store"}}}
	for _, n := range []string{"a", "b", "c", "a"} {
		if w := get(t, m.nodes[n], target, "/ns", u); w.Header().Get("X-Cache") != "MISS" {
			t.Fatalf("%s: %q", n, w.Header().Get("X-Cache"))
		}
	}
	if u.calls.Load() != 4 {
		t.Fatalf("upstream %d calls, want 4", u.calls.Load())
	}
	for _, c := range m.nodes {
		if c.Stats()["web"].Entries != 0 {
			t.Fatal("no-store stored")
		}
	}
}

func TestConcurrentMissesGoUpstreamOnce(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "slow", delay: 200 * time.Millisecond}
	var wg sync.WaitGroup
	var hits, misses atomic.Int64
	for i := range 30 {
		n := []string{"a", "b", "c"}[i%3]
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("GET", "/svc/web/c", nil)
			w := httptest.NewRecorder()
			if err := m.nodes[n].Serve(w, r, target, "/c", u.proxy); err != nil || w.Body.String() != "slow" {
				t.Errorf("%s: %v %q", n, err, w.Body)
			}
			if w.Header().Get("X-Cache") == "HIT" {
				hits.Add(1)
			} else {
				misses.Add(1)
			}
		}()
	}
	wg.Wait()
	if u.calls.Load() != 1 || misses.Load() != 1 {
		t.Fatalf("upstream %d calls, %d misses %d hits; want 1 call", u.calls.Load(), misses.Load(), hits.Load())
	}
}

func TestPurge(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "old"}
	get(t, m.nodes["a"], target, "/p/1", u)
	get(t, m.nodes["a"], target, "/q/1", u)
	waitFor(t, func() bool { return get(t, m.nodes["b"], target, "/p/1", u).Header().Get("X-Cache") == "HIT" })
	u.set("new", 200)
	start := time.Now()
	res, err := m.nodes["c"].Purge(context.Background(), "web", "/p/")
	if err != nil || res.Waited || len(res.Acknowledged) != 3 {
		t.Fatalf("purge: %+v %v", res, err)
	}
	if time.Since(start) > 200*time.Millisecond {
		t.Fatalf("purge with every node acknowledging took %v", time.Since(start))
	}
	for _, n := range []string{"a", "b", "c"} {
		if w := get(t, m.nodes[n], target, "/p/1", u); w.Body.String() != "new" {
			t.Fatalf("%s after purge: %q %s", n, w.Body, w.Header().Get("X-Cache"))
		}
		if w := get(t, m.nodes[n], target, "/q/1", u); w.Body.String() != "old" || w.Header().Get("X-Cache") != "HIT" {
			t.Fatalf("%s: other prefix purged: %q", n, w.Body)
		}
	}
	// A silent node: the purge waits out the confirmation bound, and
	// that node, cut off from the records, serves no hit by then.
	m.kill("b", false)
	u.set("newer", 200)
	start = time.Now()
	res, err = m.nodes["a"].Purge(context.Background(), "web", "")
	if err != nil || !res.Waited {
		t.Fatalf("purge: %+v %v", res, err)
	}
	if d := time.Since(start); d < m.nodes["a"].cfg.Confirm {
		t.Fatalf("purge returned after %v, before the bound", d)
	}
	m.epochs.fail.Store(true) // b can read nothing (it is cut off)
	defer m.epochs.fail.Store(false)
	b := m.nodes["b"]
	_, ok := b.epochs.current("web", time.Now(), b.cfg.Confirm)
	if ok && b.epochs.recs["web"].Counter < res.Record.Counter {
		t.Fatal("a node neither confirmed the purge nor stopped serving")
	}
}

func TestUnconfirmedServesNoHits(t *testing.T) {
	m := newMesh(t, "a", "b")
	u := &upstream{body: "v"}
	get(t, m.nodes["a"], target, "/u", u)
	if w := get(t, m.nodes["a"], target, "/u", u); w.Header().Get("X-Cache") != "HIT" {
		t.Fatal("no hit")
	}
	m.epochs.fail.Store(true)
	time.Sleep(m.nodes["a"].cfg.Confirm) // the bound itself is what is tested
	if w := get(t, m.nodes["a"], target, "/u", u); w.Header().Get("X-Cache") != "MISS" {
		t.Fatal("hit served without a confirmed purge record")
	}
	m.epochs.fail.Store(false)
	waitFor(t, func() bool { return get(t, m.nodes["a"], target, "/u", u).Header().Get("X-Cache") == "HIT" })
}

func TestOwnerLossKeepsHits(t *testing.T) {
	m := newMesh(t, "a", "b", "c")
	u := &upstream{body: "v"}
	for i := range 30 {
		get(t, m.nodes["a"], target, fmt.Sprintf("/k%d", i), u)
	}
	waitFor(t, func() bool {
		n := 0
		for _, c := range m.nodes {
			n += int(c.Stats()["web"].Entries)
		}
		return n == 60
	})
	// c dies unseen, then seen: every key is still a hit through a and b.
	m.kill("c", false)
	for _, seen := range []bool{false, true} {
		if seen {
			m.kill("c", true)
		}
		for i := range 30 {
			for _, n := range []string{"a", "b"} {
				if w := get(t, m.nodes[n], target, fmt.Sprintf("/k%d", i), u); w.Header().Get("X-Cache") != "HIT" {
					t.Fatalf("seen=%v key %d through %s: %s", seen, i, n, w.Header().Get("X-Cache"))
				}
			}
		}
	}
	if u.calls.Load() != 30 {
		t.Fatalf("upstream %d calls", u.calls.Load())
	}
	// The cleanup pass leaves every entry on both live owners.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.nodes["a"].RunCleanup(ctx, 1) }()
	waitFor(t, func() bool {
		return m.nodes["a"].Stats()["web"].Entries == 30 && m.nodes["b"].Stats()["web"].Entries == 30
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := m.nodes["b"].maintain(context.Background(), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("older fence: %v", err)
	}
}

func TestStaleIfError(t *testing.T) {
	m := newMesh(t, "a", "b")
	tg := target
	tg.Policy.TTL, tg.Policy.StaleIfError = 50*time.Millisecond, time.Minute
	u := &upstream{body: "good"}
	get(t, m.nodes["a"], tg, "/s", u)
	time.Sleep(60 * time.Millisecond) // past the ttl under test
	u.set("broken", 503)
	w := get(t, m.nodes["b"], tg, "/s", u)
	if w.Code != 200 || w.Body.String() != "good" || w.Header().Get("X-Cache") != "STALE" {
		t.Fatalf("stale: %d %q %q", w.Code, w.Body, w.Header().Get("X-Cache"))
	}
	u.set("fixed", 200)
	if w := get(t, m.nodes["b"], tg, "/s", u); w.Body.String() != "fixed" || w.Header().Get("X-Cache") != "MISS" {
		t.Fatalf("after recovery: %q", w.Body)
	}
	// Without stale_if_error the failure goes through.
	u.set("broken", 503)
	time.Sleep(60 * time.Millisecond)
	tg.Policy.StaleIfError = 0
	if w := get(t, m.nodes["a"], tg, "/s", u); w.Code != 503 {
		t.Fatalf("no stale_if_error: %d", w.Code)
	}
}

func TestBoundsAndMalformed(t *testing.T) {
	m := newMesh(t, "a", "b")
	tg := target
	tg.Policy.MaxEntryBytes = 10
	u := &upstream{body: strings.Repeat("x", 11)}
	get(t, m.nodes["a"], tg, "/big", u)
	if w := get(t, m.nodes["a"], tg, "/big", u); w.Header().Get("X-Cache") != "MISS" {
		t.Fatal("body over max_entry_bytes cached")
	}
	c := m.nodes["a"]
	for _, method := range Methods() {
		if _, err := c.Handle(context.Background(), "a", method, []byte("{garbage")); err == nil && method != MethodStats {
			t.Fatalf("%s took garbage", method)
		}
	}
	if _, err := c.Handle(context.Background(), "stranger", MethodStats, nil); err == nil {
		t.Fatal("a non-member called")
	}
	if _, err := decodeEntry([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Fatal("malformed entry decoded")
	}
}

func TestLapsedLeaseReleasesWaiters(t *testing.T) {
	m := newMesh(t, "a")
	c := m.nodes["a"]
	id := fmt.Sprintf("%032x", 1)
	if _, st := c.serveGet("x", id, true); !st.leased {
		t.Fatal("no lease for the first asker")
	}
	if _, st := c.serveGet("y", id, true); !st.busy {
		t.Fatal("a second asker was not told a fill is in flight")
	}
	done := make(chan struct{})
	go func() { c.waitFill(context.Background(), id); close(done) }()
	select {
	case <-done:
		t.Fatal("a waiter did not wait for the fill in flight")
	case <-time.After(100 * time.Millisecond):
	}
	c.dropLapsed(time.Now().Add(c.cfg.FillWait))
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("a waiter stayed blocked on a lapsed lease")
	}
	c.mu.Lock()
	n := len(c.flights)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d leases kept", n)
	}
	if _, st := c.serveGet("y", id, true); !st.leased {
		t.Fatal("no new lease after the old one lapsed")
	}
	c.endFlight(id, "y")
}

// viewRequest is a Request that is not an *http.Request, as the data
// plane's is.
type viewRequest struct {
	method, query string
	hdr           map[string][]string
}

func (v viewRequest) Method() string       { return v.method }
func (v viewRequest) RawQuery() string     { return v.query }
func (v viewRequest) ContentLength() int64 { return 0 }
func (v viewRequest) Header(name string) string {
	if vs := v.hdr[http.CanonicalHeaderKey(name)]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
func (v viewRequest) HeaderValues(name string) []string { return v.hdr[http.CanonicalHeaderKey(name)] }

// TestServeHitThroughAView: ServeHit answers what Serve would from a copy
// held here, for a request read through Request only (same key: method,
// path, query, vary), and otherwise writes and counts nothing.
func TestServeHitThroughAView(t *testing.T) {
	m := newMesh(t, "a", "b")
	c := m.nodes["a"]
	u := &upstream{body: "v1"}
	r := httptest.NewRequest("GET", "/svc/web/x?q=1", nil)
	if err := c.Serve(httptest.NewRecorder(), r, target, "/x", u.proxy); err != nil {
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
	v := viewRequest{method: "GET", query: "q=1", hdr: map[string][]string{}}
	w := httptest.NewRecorder()
	before := holder.Stats()["web"]
	if !holder.ServeHit(w, v, target, "/x") || w.Body.String() != "v1" || w.Header().Get("X-Cache") != "HIT" ||
		w.Header().Get("Age") == "" || w.Code != 200 {
		t.Fatalf("hit through a view: %d %q %v", w.Code, w.Body, w.Header())
	}
	if after := holder.Stats()["web"]; after.Hits != before.Hits+1 || after.Misses != before.Misses {
		t.Errorf("counted %+v, then %+v", before, after)
	}
	// Another query, another vary value, a body, another method, an old
	// definition: no hit, nothing written, nothing counted.
	v8 := target
	v8.Version = 8
	for name, tc := range map[string]struct {
		v  viewRequest
		tg Target
	}{
		"query":   {viewRequest{method: "GET", query: "q=2"}, target},
		"vary":    {viewRequest{method: "GET", query: "q=1", hdr: map[string][]string{"Accept": {"text/x"}}}, target},
		"method":  {viewRequest{method: "POST", query: "q=1"}, target},
		"version": {viewRequest{method: "GET", query: "q=1"}, v8},
	} {
		w := httptest.NewRecorder()
		if holder.ServeHit(w, tc.v, tc.tg, "/x") || w.Body.Len() != 0 || len(w.Header()) != 0 {
			t.Errorf("%s: served %q %v", name, w.Body, w.Header())
		}
	}
	if after := holder.Stats()["web"]; after.Hits != before.Hits+1 || after.Misses != before.Misses {
		t.Errorf("misses were counted: %+v, then %+v", before, after)
	}
	if u.calls.Load() != 1 {
		t.Errorf("upstream called %d times", u.calls.Load())
	}
}
