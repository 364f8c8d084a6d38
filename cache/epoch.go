package cache

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"
)

// MaxPrefixPurges is how many prefix purges a service's record keeps; an
// older one is folded into the base (purging the whole service).
const MaxPrefixPurges = 64

// EpochRecord is a service's purge state, kept in the cluster's group.
// Counter goes up by one with every purge; a fill is stamped with the
// counter it started under. An entry stamped e is valid when e >= Base and
// e >= Prefixes[p] for every purged prefix p of its path.
type EpochRecord struct {
	Counter  uint64            `json:"counter"`
	Base     uint64            `json:"base"`
	Prefixes map[string]uint64 `json:"prefixes,omitempty"`
}

// Bump returns the record after a purge of prefix ("" for the whole
// service).
func (r EpochRecord) Bump(prefix string) EpochRecord {
	out := EpochRecord{Counter: r.Counter + 1, Base: r.Base}
	if prefix == "" {
		out.Base = out.Counter
		return out
	}
	out.Prefixes = map[string]uint64{}
	for p, k := range r.Prefixes {
		if k > out.Base {
			out.Prefixes[p] = k
		}
	}
	out.Prefixes[prefix] = out.Counter
	if len(out.Prefixes) > MaxPrefixPurges {
		// Fold the oldest into the base: a whole-service purge, which
		// is safe (it only drops more).
		type pk struct {
			p string
			k uint64
		}
		all := make([]pk, 0, len(out.Prefixes))
		for p, k := range out.Prefixes {
			all = append(all, pk{p, k})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].k < all[j].k })
		cut := all[len(all)-MaxPrefixPurges]
		out.Base = cut.k
		for _, x := range all {
			if x.k <= out.Base {
				delete(out.Prefixes, x.p)
			}
		}
	}
	return out
}

// Valid reports whether an entry of path stamped epoch survives r.
func (r EpochRecord) Valid(epoch uint64, path string) bool {
	if epoch < r.Base {
		return false
	}
	for p, k := range r.Prefixes {
		if epoch < k && strings.HasPrefix(path, p) {
			return false
		}
	}
	return true
}

// Epochs is the cluster's purge state, in its Raft group.
type Epochs interface {
	// Load reads every service's record linearizably.
	Load(ctx context.Context) (map[string]EpochRecord, error)
	// Bump purges prefix ("" for all) of service and returns the new
	// record once the group has committed it.
	Bump(ctx context.Context, service, prefix string) (EpochRecord, error)
}

// epochView is this node's knowledge of the records, and since when it is
// confirmed: confirmedAt is the start of the last linearizable read that
// succeeded (a read started later sees every purge committed before it
// started).
type epochView struct {
	mu          sync.Mutex
	recs        map[string]EpochRecord
	confirmedAt time.Time
	confirmed   bool
}

// merge keeps, per service, the record with the higher counter: the
// group's counters only grow, so a pushed record and a read one agree.
func (v *epochView) merge(recs map[string]EpochRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.recs == nil {
		v.recs = map[string]EpochRecord{}
	}
	for s, r := range recs {
		if cur, ok := v.recs[s]; !ok || r.Counter > cur.Counter {
			v.recs[s] = r
		}
	}
}

func (v *epochView) confirm(start time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.confirmed || start.After(v.confirmedAt) {
		v.confirmedAt, v.confirmed = start, true
	}
}

// current returns service's record and whether the view may serve hits:
// confirmed by a read that started less than bound ago.
func (v *epochView) current(service string, now time.Time, bound time.Duration) (EpochRecord, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.recs[service], v.confirmed && now.Sub(v.confirmedAt) < bound
}
