package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/node/httpapi"
)

// secretReads counts the reads of token secrets kv has served.
func (k *groupsKV) secretReads() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gets
}

// cachedStores is two nodes' token stores over one replicated state, with
// one fake clock for both caches.
func cachedStores(t *testing.T) (kv *groupsKV, a, b *tokenStore, advance func(time.Duration)) {
	kv = &groupsKV{data: map[string]map[string][]byte{}, down: map[string]bool{}}
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a, b = newTokenStore(kv), newTokenStore(kv)
	for _, s := range []*tokenStore{a, b} {
		s.now, s.secrets.now = clock, clock
		t.Cleanup(s.close)
	}
	return kv, a, b, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

func lookupStatus(s *tokenStore, cluster, secret string) int {
	_, err := s.LookupSecret(context.Background(), cluster, httpapi.HashSecret(secret))
	var he *httpapi.Error
	switch {
	case err == nil:
		return 200
	case errors.As(err, &he):
		return he.Status
	}
	return 500
}

// TestTokenLookupsAreCached: N requests with one token cost one read per
// node within cacheFresh, concurrent ones included; a revocation is seen
// at once by the node that made it and by the others once cacheFresh has
// passed.
func TestTokenLookupsAreCached(t *testing.T) {
	kv, a, b, advance := cachedStores(t)
	ctx := context.Background()
	tok, secret, err := a.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := lookupStatus(b, "blue", secret); code != 200 {
				t.Errorf("lookup: %d", code)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 100; i++ {
		lookupStatus(b, "blue", secret)
	}
	if n := kv.secretReads(); n != 1 {
		t.Fatalf("200 lookups of one token cost %d reads, want 1", n)
	}
	advance(cacheFresh)
	lookupStatus(b, "blue", secret)
	if n := kv.secretReads(); n != 2 {
		t.Fatalf("after cacheFresh: %d reads, want 2", n)
	}
	lookupStatus(a, "blue", secret) // a caches it too
	if err := a.RevokeToken(ctx, "blue", tok.AccessorID); err != nil {
		t.Fatal(err)
	}
	if code := lookupStatus(a, "blue", secret); code != 401 {
		t.Errorf("revoking node: %d right after the revocation, want 401", code)
	}
	advance(cacheFresh - time.Millisecond)
	if code := lookupStatus(b, "blue", secret); code != 200 {
		t.Logf("other node within cacheFresh: %d (the cached answer may be used)", code)
	}
	advance(time.Millisecond)
	if code := lookupStatus(b, "blue", secret); code != 401 {
		t.Errorf("other node cacheFresh after the revocation: %d, want 401", code)
	}
	// A token of blue is looked up, and cached, in blue only.
	if code := lookupStatus(b, "red", secret); code != 401 {
		t.Errorf("blue's secret in red: %d", code)
	}
}

// TestRandomTokensDoNotEvictAGoodOne: a flood of unknown secrets fills the
// negative cache only; a valid token's answer stays and costs no read.
func TestRandomTokensDoNotEvictAGoodOne(t *testing.T) {
	kv, a, _, _ := cachedStores(t)
	_, secret, err := a.CreateToken(context.Background(), "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	if code := lookupStatus(a, "blue", secret); code != 200 {
		t.Fatalf("lookup: %d", code)
	}
	for i := 0; i < 3*tokenCacheNegative; i++ {
		if code := lookupStatus(a, "blue", fmt.Sprintf("random-%d", i)); code != 401 {
			t.Fatalf("random token: %d", code)
		}
	}
	before := kv.secretReads()
	if code := lookupStatus(a, "blue", secret); code != 200 || kv.secretReads() != before {
		t.Fatalf("good token after the flood: %d, %d more reads", code, kv.secretReads()-before)
	}
	a.secrets.mu.Lock()
	neg, pos := len(a.secrets.neg), len(a.secrets.pos)
	a.secrets.mu.Unlock()
	if neg > tokenCacheNegative || pos != 1 {
		t.Fatalf("cache holds %d negative (bound %d) and %d positive answers", neg, tokenCacheNegative, pos)
	}
	// A repeated bad token costs one read per cacheFresh too.
	before = kv.secretReads()
	for i := 0; i < 10; i++ {
		lookupStatus(a, "blue", "wrong")
	}
	if n := kv.secretReads() - before; n != 1 {
		t.Fatalf("10 lookups of one bad token: %d reads, want 1", n)
	}
}

// TestCachedTokenOutlivesQuorum: while the group cannot answer, a token
// read successfully in the last cacheMaxStale is still valid and costs
// the request no read (one background read per second looks for the
// group), a token never seen is a 503, not a 200 nor a 401; once the
// group is back its answers are fresh again.
func TestCachedTokenOutlivesQuorum(t *testing.T) {
	kv, a, _, advance := cachedStores(t)
	ctx := context.Background()
	tok, secret, err := a.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	if code := lookupStatus(a, "blue", secret); code != 200 {
		t.Fatalf("lookup: %d", code)
	}
	probes := make(chan struct{}, 16)
	a.secrets.mu.Lock()
	a.secrets.onProbeDone = func() { probes <- struct{}{} }
	a.secrets.mu.Unlock()
	kv.mu.Lock()
	kv.down["blue"] = true
	kv.mu.Unlock()
	advance(2 * cacheFresh)
	if code := lookupStatus(a, "blue", secret); code != 200 {
		t.Fatalf("cached token without quorum: %d, want 200", code)
	}
	if code := lookupStatus(a, "blue", "never-issued"); code != http.StatusServiceUnavailable {
		t.Fatalf("unknown token without quorum: %d, want 503", code)
	}
	before := kv.secretReads()
	for i := 0; i < 50; i++ {
		if code := lookupStatus(a, "blue", secret); code != 200 {
			t.Fatalf("cached token without quorum: %d", code)
		}
	}
	select {
	case <-probes:
	case <-time.After(10 * time.Second):
		t.Fatal("no background read looked for the group")
	}
	if n := kv.secretReads() - before; n != 1 {
		t.Fatalf("50 requests without quorum cost %d reads, want 1 background read", n)
	}
	advance(cacheMaxStale)
	if code := lookupStatus(a, "blue", secret); code != http.StatusServiceUnavailable {
		t.Fatalf("token last read cacheMaxStale ago, without quorum: %d, want 503", code)
	}
	// Back: a revocation made now is seen.
	kv.mu.Lock()
	kv.down["blue"] = false
	kv.mu.Unlock()
	if code := lookupStatus(a, "blue", secret); code != 200 {
		t.Fatalf("group back: %d", code)
	}
	if err := a.RevokeToken(ctx, "blue", tok.AccessorID); err != nil {
		t.Fatal(err)
	}
	if code := lookupStatus(a, "blue", secret); code != 401 {
		t.Fatalf("revoked: %d", code)
	}
}
