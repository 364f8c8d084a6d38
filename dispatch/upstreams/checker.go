package upstreams

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Check is one active health check: GET URL+Path every Interval.
type Check struct {
	Key            string // HealthKey
	URL            string // the upstream's base URL
	Path           string
	Interval       time.Duration
	Timeout        time.Duration
	HealthyAfter   int
	UnhealthyAfter int
}

// Checker runs this node's active checks.
type Checker struct {
	client   *http.Client
	onChange func() // a verdict changed; must not block
	mu       sync.Mutex
	probes   map[string]*probe
	wg       sync.WaitGroup
	closed   bool
}

type probe struct {
	c      Check
	cancel context.CancelFunc
	mu     sync.Mutex
	// verdict with hysteresis
	healthy      bool
	certain      bool
	passes, fail int
	lastDefinite bool // every failure of the current run was definite
}

// NewChecker returns a checker using client (nil: a client without
// keep-alive, so a check sees the upstream's accept queue as a new client
// does); onChange hears of every change of a verdict.
func NewChecker(client *http.Client, onChange func()) *Checker {
	if client == nil {
		client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if onChange == nil {
		onChange = func() {}
	}
	return &Checker{client: client, onChange: onChange, probes: map[string]*probe{}}
}

// Sync runs exactly checks: new ones start (in rotation until proven
// otherwise), changed ones restart, missing ones stop.
func (c *Checker) Sync(checks []Check) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := make(map[string]Check, len(checks))
	for _, ch := range checks {
		want[ch.Key] = ch
	}
	for k, p := range c.probes {
		if ch, ok := want[k]; !ok || ch != p.c {
			p.cancel()
			delete(c.probes, k)
		}
	}
	for k, ch := range want {
		if _, ok := c.probes[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := &probe{c: ch, cancel: cancel, healthy: true}
		c.probes[k] = p
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.run(ctx, p)
		}()
	}
}

// Observations are this node's current verdicts; ttl is how long a peer
// should keep each without news, at least three check intervals.
func (c *Checker) Observations() []Observation {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Observation, 0, len(c.probes))
	for k, p := range c.probes {
		p.mu.Lock()
		ttl := 3*p.c.Interval + p.c.Timeout + 2*time.Second
		out = append(out, Observation{Key: k, Healthy: p.healthy, Certain: p.certain, TTLms: ttl.Milliseconds()})
		p.mu.Unlock()
	}
	return out
}

// Close stops every check and waits for them.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	for k, p := range c.probes {
		p.cancel()
		delete(c.probes, k)
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Checker) run(ctx context.Context, p *probe) {
	// A timer re-armed after each check, not a ticker: after a stall (a
	// starved CPU, a slow check) a ticker's pending tick would run the next
	// check at once, and two results milliseconds apart would count as the
	// healthy_after or unhealthy_after streak of two intervals.
	t := time.NewTimer(p.c.Interval)
	defer t.Stop()
	for {
		pass, definite := c.once(ctx, p.c)
		if ctx.Err() != nil {
			return
		}
		if p.record(pass, definite) {
			c.onChange()
		}
		t.Reset(p.c.Interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record applies one result to the verdict; true when it changed.
func (p *probe) record(pass, definite bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was, wasCertain := p.healthy, p.certain
	if pass {
		p.passes++
		p.fail = 0
		p.lastDefinite = true
		if !p.healthy && p.passes >= p.c.HealthyAfter {
			p.healthy, p.certain = true, false
		}
	} else {
		if p.fail == 0 {
			p.lastDefinite = true
		}
		p.fail++
		p.passes = 0
		p.lastDefinite = p.lastDefinite && definite
		if p.healthy && p.fail >= p.c.UnhealthyAfter {
			p.healthy = false
		}
		if !p.healthy {
			p.certain = p.lastDefinite
		}
	}
	return was != p.healthy || wasCertain != p.certain
}

// once runs one check: pass, or a failure that is definite (refused, or
// an answer with a bad status) rather than a timeout or other error.
func (c *Checker) once(ctx context.Context, ch Check) (pass, definite bool) {
	ctx, cancel := context.WithTimeout(ctx, ch.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(ch.URL, "/")+ch.Path, nil)
	if err != nil {
		return false, true
	}
	req.Header.Set("User-Agent", "meshgw-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return false, errors.Is(err, syscall.ECONNREFUSED)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400, true
}
