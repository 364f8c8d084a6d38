package dispatch

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Routing fields of an http service (docs/SERVICES.md): several weighted
// upstreams, their active health check, stickiness, and the Host and path
// routes the data plane serves the service on. The balancing, health and
// routing logic itself is package dispatch/upstreams'.

// Upstream is one weighted upstream of an http service.
type Upstream struct {
	URL    string            `json:"url"`
	Weight int               `json:"weight,omitempty"` // 0: 1
	Tags   map[string]string `json:"tags,omitempty"`   // informational (canary, zone, ...)
}

// Health is the active HTTP check of every upstream of a service.
type Health struct {
	Path           string   `json:"path"`
	Interval       Duration `json:"interval,omitempty"`        // default 2s
	Timeout        Duration `json:"timeout,omitempty"`         // default 1s
	HealthyAfter   int      `json:"healthy_after,omitempty"`   // consecutive passes to come back; default 2
	UnhealthyAfter int      `json:"unhealthy_after,omitempty"` // consecutive failures to go out; default 3
}

// PathRoute claims a path prefix on the data plane.
type PathRoute struct {
	Prefix string `json:"prefix"`
	Strip  bool   `json:"strip,omitempty"` // remove the prefix before proxying
}

// Sticky keeps requests with the same header or cookie value on the same
// upstream while it stays healthy (weighted rendezvous hashing).
type Sticky struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

// Bounds and defaults of the routing fields.
const (
	MaxUpstreams      = 64
	MaxUpstreamWeight = 1000
	MaxHosts          = 32
	MaxPaths          = 32
	maxHostLen        = 253
	maxPrefixLen      = 256
	maxHealthPathLen  = 1024
	maxUpstreamTags   = 16

	DefaultHealthInterval = 2 * time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthyAfter   = 2
	DefaultUnhealthyAfter = 3
	minHealthInterval     = 100 * time.Millisecond
	maxHealthInterval     = 5 * time.Minute
	maxHealthThreshold    = 100
)

// RouteKeyPrefix is where route claims live in the store: one key per
// (host, prefix) a service claims, "route/<host><prefix>" with host "*" for
// any host, its value the claiming service's name. Claims are written in
// the same command as the service, each with a CAS, so two services can
// never hold the same route.
const RouteKeyPrefix = "route/"

// AnyHost is the host of a route that matches every Host.
const AnyHost = "*"

// Route is one (host, prefix) a service claims.
type Route struct {
	Host    string `json:"host"` // AnyHost for every host
	Prefix  string `json:"prefix"`
	Strip   bool   `json:"strip,omitempty"`
	Service string `json:"service"`
}

// Key is the route's claim key in the store.
func (r Route) Key() string { return RouteKeyPrefix + r.Host + r.Prefix }

// Routes are the (host, prefix) pairs s claims: every host with every
// path, a host alone claiming "/", a path alone claiming it on every host.
func (s *Service) Routes() []Route {
	if s.Type != TypeHTTP || len(s.Hosts) == 0 && len(s.Paths) == 0 {
		return nil
	}
	hosts := s.Hosts
	if len(hosts) == 0 {
		hosts = []string{AnyHost}
	}
	paths := s.Paths
	if len(paths) == 0 {
		paths = []PathRoute{{Prefix: "/"}}
	}
	out := make([]Route, 0, len(hosts)*len(paths))
	for _, h := range hosts {
		for _, p := range paths {
			out = append(out, Route{Host: strings.ToLower(h), Prefix: p.Prefix, Strip: p.Strip, Service: s.Name})
		}
	}
	return out
}

// Targets are the service's upstreams with defaults applied: "upstream"
// alone is one upstream of weight 1.
func (s *Service) Targets() []Upstream {
	if len(s.Upstreams) == 0 {
		if s.Upstream == "" {
			return nil
		}
		return []Upstream{{URL: s.Upstream, Weight: 1}}
	}
	out := make([]Upstream, len(s.Upstreams))
	for i, u := range s.Upstreams {
		if u.Weight == 0 {
			u.Weight = 1
		}
		out[i] = u
	}
	return out
}

// HealthConfig is s.Health with defaults applied; ok is false without one.
func (s *Service) HealthConfig() (h Health, ok bool) {
	if s.Health == nil {
		return Health{}, false
	}
	h = *s.Health
	if h.Interval == 0 {
		h.Interval = Duration(DefaultHealthInterval)
	}
	if h.Timeout == 0 {
		h.Timeout = Duration(DefaultHealthTimeout)
	}
	if h.HealthyAfter == 0 {
		h.HealthyAfter = DefaultHealthyAfter
	}
	if h.UnhealthyAfter == 0 {
		h.UnhealthyAfter = DefaultUnhealthyAfter
	}
	return h, true
}

func checkUpstreamURL(field, s string) error {
	if len(s) > maxUpstreamLen {
		return invalid(field, "longer than %d bytes", maxUpstreamLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid(field, "not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return invalid(field, "scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" {
		return invalid(field, "missing host")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return invalid(field, "must not carry a query or fragment")
	}
	return nil
}

// validateRouting checks the routing fields (Validate calls it).
func (s *Service) validateRouting() error {
	if s.Type != TypeHTTP {
		for _, f := range []struct {
			name string
			set  bool
		}{{"upstreams", len(s.Upstreams) > 0}, {"health", s.Health != nil}, {"hosts", len(s.Hosts) > 0},
			{"paths", len(s.Paths) > 0}, {"sticky", s.Sticky != nil}, {"fail_open", s.FailOpen}} {
			if f.set {
				return invalid(f.name, "only http services have upstreams to route to")
			}
		}
		return nil
	}
	if s.Upstream != "" && len(s.Upstreams) > 0 {
		return invalid("upstreams", "give either upstream or upstreams, not both")
	}
	if len(s.Upstreams) > MaxUpstreams {
		return invalid("upstreams", "more than %d upstreams", MaxUpstreams)
	}
	seen := map[string]bool{}
	for i, u := range s.Upstreams {
		f := fmt.Sprintf("upstreams[%d]", i)
		if u.URL == "" {
			return invalid(f+".url", "missing (http://host:port)")
		}
		if err := checkUpstreamURL(f+".url", u.URL); err != nil {
			return err
		}
		if seen[u.URL] {
			return invalid(f+".url", "%q is listed twice", u.URL)
		}
		seen[u.URL] = true
		if u.Weight < 0 || u.Weight > MaxUpstreamWeight {
			return invalid(f+".weight", "must be between 0 (meaning 1) and %d", MaxUpstreamWeight)
		}
		if len(u.Tags) > maxUpstreamTags {
			return invalid(f+".tags", "more than %d tags", maxUpstreamTags)
		}
		for k, v := range u.Tags {
			if k == "" || len(k) > maxTagLen || len(v) > maxTagLen {
				return invalid(f+".tags", "tag keys must be non-empty and tags at most %d bytes", maxTagLen)
			}
		}
	}
	if h := s.Health; h != nil {
		if !strings.HasPrefix(h.Path, "/") || len(h.Path) > maxHealthPathLen || strings.ContainsAny(h.Path, "#\x00 ") {
			return invalid("health.path", "must be an absolute path (\"/healthz\"), at most %d bytes", maxHealthPathLen)
		}
		if h.Interval != 0 && (h.Interval.Std() < minHealthInterval || h.Interval.Std() > maxHealthInterval) {
			return invalid("health.interval", "must be between %s and %s", minHealthInterval, maxHealthInterval)
		}
		if h.Timeout < 0 || h.Timeout != 0 && h.Timeout.Std() < 10*time.Millisecond {
			return invalid("health.timeout", "must be at least 10ms")
		}
		cfg, _ := s.HealthConfig()
		if cfg.Timeout > cfg.Interval {
			return invalid("health.timeout", "must not exceed health.interval (%s)", cfg.Interval.Std())
		}
		if h.HealthyAfter < 0 || h.HealthyAfter > maxHealthThreshold {
			return invalid("health.healthy_after", "must be between 1 and %d (0: %d)", maxHealthThreshold, DefaultHealthyAfter)
		}
		if h.UnhealthyAfter < 0 || h.UnhealthyAfter > maxHealthThreshold {
			return invalid("health.unhealthy_after", "must be between 1 and %d (0: %d)", maxHealthThreshold, DefaultUnhealthyAfter)
		}
	}
	if len(s.Hosts) > MaxHosts {
		return invalid("hosts", "more than %d hosts", MaxHosts)
	}
	hosts := map[string]bool{}
	for i, h := range s.Hosts {
		if !validHost(h) {
			return invalid(fmt.Sprintf("hosts[%d]", i), "%q is not a host name (letters, digits, '-' and '.', no port, at most %d bytes)", h, maxHostLen)
		}
		if hosts[strings.ToLower(h)] {
			return invalid(fmt.Sprintf("hosts[%d]", i), "%q is listed twice", h)
		}
		hosts[strings.ToLower(h)] = true
	}
	if len(s.Paths) > MaxPaths {
		return invalid("paths", "more than %d paths", MaxPaths)
	}
	prefixes := map[string]bool{}
	for i, p := range s.Paths {
		f := fmt.Sprintf("paths[%d].prefix", i)
		if err := checkPrefix(p.Prefix); err != nil {
			return invalid(f, "%v", err)
		}
		if prefixes[p.Prefix] {
			return invalid(f, "%q is listed twice", p.Prefix)
		}
		prefixes[p.Prefix] = true
	}
	if st := s.Sticky; st != nil {
		switch {
		case st.Header == "" && st.Cookie == "":
			return invalid("sticky", "name a header or a cookie")
		case st.Header != "" && st.Cookie != "":
			return invalid("sticky", "name a header or a cookie, not both")
		case st.Header != "" && !validToken(st.Header):
			return invalid("sticky.header", "%q is not a header name", st.Header)
		case st.Cookie != "" && !validToken(st.Cookie):
			return invalid("sticky.cookie", "%q is not a cookie name", st.Cookie)
		}
	}
	return nil
}

// checkPrefix: an absolute path prefix that cannot climb or hide an
// encoding, and that does not shadow meshgw's own data-plane paths.
func checkPrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("must start with '/'")
	case len(p) > maxPrefixLen:
		return fmt.Errorf("longer than %d bytes", maxPrefixLen)
	case strings.ContainsAny(p, "%?#\\\x00 ") || strings.Contains(p, "//"):
		return fmt.Errorf("%q may not hold '%%', '?', '#', '\\', spaces or '//'", p)
	case strings.HasPrefix(p, "/svc/") || p == "/svc" || p == "/v1/health":
		return fmt.Errorf("%q is meshgw's own (/svc/ and /v1/health are served as such on every host)", p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q holds a %q segment", p, seg)
		}
	}
	return nil
}

func validHost(h string) bool {
	if h == "" || len(h) > maxHostLen || h[0] == '.' || h[0] == '-' || strings.HasSuffix(h, ".") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return !strings.Contains(h, "..")
}

// validToken: an HTTP token (RFC 9110 5.6.2), as header and cookie names are.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
