package node

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// minorityKV is a replicated state seen from a node that a partition can
// put on the minority side: until the cut its replica is the group's state,
// current as of now; from the cut (down[cluster] in groupsKV) linearizable
// reads fail with no quorum, and the replica stays as it was at the cut,
// while the majority side (kv.data) may go on changing.
type minorityKV struct {
	*groupsKV
	now    func() time.Time
	mu     sync.Mutex
	frozen map[string]map[string][]byte
	cutAt  map[string]time.Time
	stales int
}

func newMinorityKV(now func() time.Time) *minorityKV {
	return &minorityKV{groupsKV: &groupsKV{data: map[string]map[string][]byte{}, down: map[string]bool{}},
		now: now, frozen: map[string]map[string][]byte{}, cutAt: map[string]time.Time{}}
}

// cut puts this node on the minority side of cluster's group.
func (k *minorityKV) cut(cluster string) {
	k.groupsKV.mu.Lock()
	k.mu.Lock()
	snap := map[string][]byte{}
	for key, v := range k.data[cluster] {
		snap[key] = v
	}
	k.frozen[cluster], k.cutAt[cluster] = snap, k.now()
	k.down[cluster] = true
	k.mu.Unlock()
	k.groupsKV.mu.Unlock()
}

// heal ends the cut: the replica catches up.
func (k *minorityKV) heal(cluster string) {
	k.groupsKV.mu.Lock()
	k.mu.Lock()
	delete(k.frozen, cluster)
	delete(k.cutAt, cluster)
	k.down[cluster] = false
	k.mu.Unlock()
	k.groupsKV.mu.Unlock()
}

// majority changes the state on the majority side (during a cut, the
// minority's replica does not see it).
func (k *minorityKV) majority(cluster, key string, value []byte) {
	k.groupsKV.mu.Lock()
	defer k.groupsKV.mu.Unlock()
	if k.data[cluster] == nil {
		k.data[cluster] = map[string][]byte{}
	}
	if value == nil {
		delete(k.data[cluster], key)
		return
	}
	k.data[cluster][key] = value
}

func (k *minorityKV) StaleGet(ctx context.Context, cluster, key string) (fsm.Item, bool, time.Time, error) {
	k.mu.Lock()
	k.stales++
	snap, cut := k.frozen[cluster]
	at := k.cutAt[cluster]
	k.mu.Unlock()
	if !cut {
		k.groupsKV.mu.Lock()
		defer k.groupsKV.mu.Unlock()
		v, ok := k.data[cluster][key]
		return fsm.Item{Key: key, Value: v}, ok, k.now(), nil
	}
	v, ok := snap[key]
	return fsm.Item{Key: key, Value: v}, ok, at, nil
}

func (k *minorityKV) staleReads() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stales
}

// staleStores is a token store and a service backend over one minorityKV,
// wired as the agent's wireStale does, on one fake clock.
func staleStores(t *testing.T, bound time.Duration, denyTokens bool) (*minorityKV, *tokenStore, *execBackend, func(time.Duration)) {
	t.Helper()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	kv := newMinorityKV(clock)
	s := newTokenStore(kv)
	s.now, s.secrets.now = clock, clock
	s.stale, s.staleTokens = kv, !denyTokens
	s.flags.maxStale, s.secrets.maxStale = bound, bound
	if denyTokens {
		s.secrets.maxStale = 0
	}
	b := newExecBackend(&stateBackend{kv: kv}, nil, s.secrets.down)
	b.stale, b.services.maxStale, b.services.now = kv, bound, clock
	t.Cleanup(func() { s.close(); b.close() })
	return kv, s, b, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

func apiStatus(err error) (int, string) {
	var he *httpapi.Error
	switch {
	case err == nil:
		return 200, ""
	case errors.As(err, &he):
		return he.Status, he.Code + ": " + he.Message
	}
	return 500, err.Error()
}

// TestMinorityServesWithinBound: cut off from its group's quorum, a node
// checks tokens and finds services and the ACL flag in its last known
// state, including a token it never looked up; refuses a token that state
// lacks (revoked before the cut) and still accepts one revoked on the
// majority side during the cut, until the bound has passed since the cut;
// then it fails closed (503 no_quorum naming the option), and after the
// heal it is fresh again: the revocation is seen.
func TestMinorityServesWithinBound(t *testing.T) {
	kv, s, b, advance := staleStores(t, time.Minute, false)
	ctx := context.Background()
	kv.majority("blue", aclEnabledKey, []byte(`{"enabled":true}`))
	tok, secret, err := s.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	_, unseen, err := s.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	old, oldSecret, err := s.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "blue", old.AccessorID); err != nil {
		t.Fatal(err)
	}
	kv.majority("blue", dispatch.ServiceKey("web"), []byte(`{"name":"web","type":"http","upstream":"http://127.0.0.1:1"}`))
	kv.cut("blue")
	// The majority revokes tok during the cut.
	kv.majority("blue", aclSecretPrefix+tok.SecretHash, nil)
	advance(10 * time.Second)

	if code, msg := apiStatus(lookup(s, "blue", secret)); code != 200 {
		t.Fatalf("token valid at the cut: %d %s", code, msg)
	}
	if code, msg := apiStatus(lookup(s, "blue", unseen)); code != 200 {
		t.Fatalf("token in the last known state, never looked up: %d %s", code, msg)
	}
	if code, _ := apiStatus(lookup(s, "blue", oldSecret)); code != 401 {
		t.Fatalf("token revoked before the cut: %d, want 401", code)
	}
	if code, _ := apiStatus(lookup(s, "blue", "random")); code != 401 {
		t.Fatalf("unknown token: %d, want 401", code)
	}
	if on, err := s.ACLEnabled(ctx, "blue"); err != nil || !on {
		t.Fatalf("ACL flag without quorum: %v %v", on, err)
	}
	if svc, ok, err := b.cachedService(ctx, "blue", "web"); err != nil || !ok || svc.Name != "web" {
		t.Fatalf("service without quorum: %v %v %v", svc.Name, ok, err)
	}
	st := s.secrets.down.status()
	if len(st) != 1 || st[0].Cluster != "blue" || !st[0].Serving || !st[0].AsOf.Equal(time.Unix(1000, 0).UTC()) {
		t.Fatalf("status while serving stale: %+v", st)
	}
	// Once down, requests do not wait out a linearizable read each: at
	// most one background read per second looks for the group.
	gets := kv.secretReads()
	for i := 0; i < 20; i++ {
		if code, msg := apiStatus(lookup(s, "blue", unseen)); code != 200 {
			t.Fatalf("call %d: %d %s", i, code, msg)
		}
	}
	waitCond(t, func() bool { return kv.secretReads()-gets <= 2 }, "background reads only")

	advance(time.Minute) // 70 s since the cut
	code, msg := apiStatus(lookup(s, "blue", secret))
	if code != 503 || !strings.Contains(msg, "no_quorum") || !strings.Contains(msg, "-stale-serve-for") {
		t.Fatalf("past the bound: %d %s, want 503 no_quorum naming -stale-serve-for", code, msg)
	}
	if _, _, err := b.cachedService(ctx, "blue", "web"); err == nil {
		t.Fatal("service served past the bound")
	}
	if st := s.secrets.down.status(); len(st) != 1 || st[0].Serving {
		t.Fatalf("status past the bound: %+v", st)
	}

	kv.heal("blue")
	advance(time.Second)
	waitCond(t, func() bool {
		code, _ := apiStatus(lookup(s, "blue", secret))
		return code == 401 && len(s.secrets.down.status()) == 0 && !s.secrets.down.is("blue")
	}, "fresh again after the heal, the majority's revocation seen")
	if code, msg := apiStatus(lookup(s, "blue", unseen)); code != 200 {
		t.Fatalf("after the heal: %d %s", code, msg)
	}
}

// TestStaleServeForZeroFailsClosed: with a zero bound nothing is served
// without quorum, not even a token or service read a moment before.
func TestStaleServeForZeroFailsClosed(t *testing.T) {
	kv, s, b, advance := staleStores(t, 0, false)
	ctx := context.Background()
	_, secret, err := s.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	kv.majority("blue", dispatch.ServiceKey("web"), []byte(`{"name":"web","type":"http","upstream":"http://127.0.0.1:1"}`))
	if code, _ := apiStatus(lookup(s, "blue", secret)); code != 200 {
		t.Fatal("lookup before the cut")
	}
	if _, ok, err := b.cachedService(ctx, "blue", "web"); !ok || err != nil {
		t.Fatal("service before the cut")
	}
	kv.cut("blue")
	advance(cacheFresh)
	if code, _ := apiStatus(lookup(s, "blue", secret)); code != 503 {
		t.Fatalf("token without quorum, bound 0: %d, want 503", code)
	}
	if _, _, err := b.cachedService(ctx, "blue", "web"); err == nil {
		t.Fatal("service served without quorum, bound 0")
	}
	if _, err := s.ACLEnabled(ctx, "blue"); err == nil {
		t.Fatal("ACL flag answered without quorum, bound 0")
	}
	if n := kv.staleReads(); n != 0 {
		t.Fatalf("%d stale reads with bound 0", n)
	}
	// Known down: refused at once, not after a linearizable read each.
	gets := kv.secretReads()
	for i := 0; i < 20; i++ {
		if code, _ := apiStatus(lookup(s, "blue", secret)); code != 503 {
			t.Fatalf("call %d: %d, want 503", i, code)
		}
	}
	// At most one background read per cache (tokens, services, flag).
	if n := kv.secretReads() - gets; n > 3 {
		t.Fatalf("20 refusals cost %d reads, want at most 3 background ones", n)
	}
}

// TestACLDownPolicyDeny: with deny, tokens are never checked against the
// last known state (nor a cached answer) once the group cannot answer,
// while the service definitions and the ACL flag still serve.
func TestACLDownPolicyDeny(t *testing.T) {
	kv, s, b, advance := staleStores(t, time.Minute, true)
	ctx := context.Background()
	kv.majority("blue", aclEnabledKey, []byte(`{"enabled":true}`))
	_, secret, err := s.CreateToken(ctx, "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := apiStatus(lookup(s, "blue", secret)); code != 200 {
		t.Fatal("lookup before the cut")
	}
	kv.majority("blue", dispatch.ServiceKey("pub"), []byte(`{"name":"pub","type":"http","upstream":"http://127.0.0.1:1","public":true}`))
	kv.cut("blue")
	advance(cacheFresh)
	if code, _ := apiStatus(lookup(s, "blue", secret)); code != 503 {
		t.Fatalf("token without quorum, deny: %d, want 503", code)
	}
	if on, err := s.ACLEnabled(ctx, "blue"); err != nil || !on {
		t.Fatalf("ACL flag, deny: %v %v", on, err)
	}
	if p, err := b.ProxyPolicy(ctx, "blue", "pub"); err != nil || !p.Public {
		t.Fatalf("public service, deny: %+v %v", p, err)
	}
}

func lookup(s *tokenStore, cluster, secret string) error {
	_, err := s.LookupSecret(context.Background(), cluster, httpapi.HashSecret(secret))
	return err
}

// waitCond polls cond for up to 10 s (background reads run on goroutines).
func waitCond(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunsSayWhyTheyNeedQuorum: a run's no-quorum answer says runs need
// the quorum for their record while /svc/ goes on.
func TestRunsSayWhyTheyNeedQuorum(t *testing.T) {
	err := staleNoQuorum(apiError("get service", consensus.ErrNoQuorum))
	code, msg := apiStatus(err)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "recorded durably") {
		t.Fatalf("%d %s", code, msg)
	}
}

// hangingKV is a cut where linearizable reads hang until their deadline
// (a read index asked of a leader that cannot reach its followers).
type hangingKV struct{ *minorityKV }

func (k hangingKV) Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error) {
	k.groupsKV.mu.Lock()
	down := k.down[cluster]
	k.groupsKV.mu.Unlock()
	if !down {
		return k.minorityKV.Get(ctx, cluster, key)
	}
	<-ctx.Done()
	return fsm.Item{}, false, consensus.ErrNoQuorum
}

// TestLinearWaitBoundsTheFirstCall: with a stale answer to fall back on,
// the first call after a cut waits linearWait for the group, not the whole
// read timeout.
func TestLinearWaitBoundsTheFirstCall(t *testing.T) {
	m := newMinorityKV(time.Now)
	kv := hangingKV{m}
	s := newTokenStore(kv)
	s.stale = kv
	s.secrets.linearWait = 200 * time.Millisecond
	t.Cleanup(s.close)
	_, secret, err := s.CreateToken(context.Background(), "blue", httpapi.Token{Policies: []string{"run"}})
	if err != nil {
		t.Fatal(err)
	}
	m.cut("blue")
	start := time.Now()
	if code, msg := apiStatus(lookup(s, "blue", secret)); code != 200 {
		t.Fatalf("first call after the cut: %d %s", code, msg)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("first call after the cut took %s, want about linearWait (200ms)", d)
	}
}

// TestGroupsDownIgnoresOlderOutcomes: a slow read that failed while the
// group was away, recorded after a later read found it back, leaves it up
// (before, it marked the group down again and, with no newer read due, a
// healed node went on serving stale answers).
func TestGroupsDownIgnoresOlderOutcomes(t *testing.T) {
	d := newGroupsDown()
	t0 := time.Unix(1000, 0)
	d.set("blue", true, t0)
	d.set("blue", false, t0.Add(2*time.Second)) // the later read: up
	d.set("blue", true, t0.Add(time.Second))    // the slow one, started before it
	if d.is("blue") {
		t.Fatal("an older failure marked the group down after a newer success")
	}
	d.set("blue", true, t0.Add(3*time.Second))
	if !d.is("blue") {
		t.Fatal("a newer failure did not mark the group down")
	}
}
