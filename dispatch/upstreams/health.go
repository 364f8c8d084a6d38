package upstreams

import (
	"sort"
	"sync"
	"time"
)

// Observation is one observer's verdict on one upstream.
type Observation struct {
	Key     string `json:"k"`           // HealthKey
	Healthy bool   `json:"h"`           // after hysteresis
	Certain bool   `json:"c,omitempty"` // failures were refusals or answers, not timeouts
	TTLms   int64  `json:"t"`           // how long the verdict stands without news
}

// Observer is one observer's verdict as a node holds it.
type Observer struct {
	Node    string `json:"node"`
	Healthy bool   `json:"healthy"`
	Certain bool   `json:"certain,omitempty"`
	AgeMs   int64  `json:"age_ms"`
}

// Bounds of what Health keeps, whatever peers send.
const (
	MaxObservers       = 256
	MaxObservationsPer = 4096
	maxTTL             = 5 * time.Minute
)

// Health holds the verdicts of every observer and applies the agreement
// rule (package doc).
type Health struct {
	now func() time.Time
	mu  sync.Mutex
	// by observer: its latest report
	reports map[string]*report
}

type report struct {
	at  time.Time
	obs map[string]Observation
}

// NewHealth returns an empty view; now is the clock (nil: time.Now).
func NewHealth(now func() time.Time) *Health {
	if now == nil {
		now = time.Now
	}
	return &Health{now: now, reports: map[string]*report{}}
}

// Observe replaces from's verdicts with obs (its whole current set).
// Reports beyond the bounds are cut.
func (h *Health) Observe(from string, obs []Observation) {
	if len(obs) > MaxObservationsPer {
		obs = obs[:MaxObservationsPer]
	}
	m := make(map[string]Observation, len(obs))
	for _, o := range obs {
		if o.TTLms <= 0 {
			continue
		}
		if o.TTLms > maxTTL.Milliseconds() {
			o.TTLms = maxTTL.Milliseconds()
		}
		m[o.Key] = o
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.reports[from]; !ok && len(h.reports) >= MaxObservers {
		h.expire(now)
		if len(h.reports) >= MaxObservers {
			return
		}
	}
	h.reports[from] = &report{at: now, obs: m}
}

// expire drops reports every verdict of which has lapsed. h.mu held.
func (h *Health) expire(now time.Time) {
	for from, r := range h.reports {
		live := false
		for _, o := range r.obs {
			if now.Sub(r.at) < time.Duration(o.TTLms)*time.Millisecond {
				live = true
				break
			}
		}
		if !live {
			delete(h.reports, from)
		}
	}
}

// Healthy applies the agreement rule to key's recent verdicts.
func (h *Health) Healthy(key string) bool {
	ok, _ := h.verdict(key, false)
	return ok
}

// Verdict is Healthy with the recent observers' verdicts.
func (h *Health) Verdict(key string) (bool, []Observer) { return h.verdict(key, true) }

func (h *Health) verdict(key string, list bool) (bool, []Observer) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	n, bad, certainBad := 0, 0, 0
	var obs []Observer
	for from, r := range h.reports {
		o, ok := r.obs[key]
		if !ok || now.Sub(r.at) >= time.Duration(o.TTLms)*time.Millisecond {
			continue
		}
		n++
		if !o.Healthy {
			bad++
			if o.Certain {
				certainBad++
			}
		}
		if list {
			obs = append(obs, Observer{Node: from, Healthy: o.Healthy, Certain: o.Certain, AgeMs: now.Sub(r.at).Milliseconds()})
		}
	}
	sort.Slice(obs, func(i, j int) bool { return obs[i].Node < obs[j].Node })
	return Agree(n, bad, certainBad), obs
}

// Agree is the agreement rule: of n recent observers, bad say unhealthy,
// certainBad of them certain. It reports whether the upstream stays in.
func Agree(n, bad, certainBad int) bool {
	switch {
	case n == 0:
		return true
	case n == 1:
		return certainBad == 0
	}
	return 2*bad <= n
}
