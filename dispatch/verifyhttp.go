package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// Where a runner proxies to for a remote caller.
//
// Any member of the mesh may call MethodHTTP, and a runner often reaches
// what the caller cannot, so it does not take the caller's word for the
// upstream either (verify.go is the same rule for exec). It serves only
// http services of its own cluster (Config.Cluster), resolves the one the
// header frame names from that cluster's state (the definitions cache of
// verify.go: a copy reused for at most defCacheTTL while the request's
// ServiceVersion is not newer, else a linearizable read), and proxies only
// to an upstream that definition names: Upstream or one of Upstreams,
// compared on scheme, userinfo, host and port (lower case, default port
// made explicit) and base path (one trailing slash aside, which joining a
// path ignores). What it proxies to is then the definition's own string,
// not the caller's. The request path is joined under that base and may
// not leave it (runner.JoinPath). The hop carries no other setting: TLS
// verification, dial and header timeouts and the header rules (hop-by-hop,
// X-Meshgw-Token, X-Forwarded-*) are the runner's own.
//
// Refusals, with the codes of verify.go; nothing is sent upstream:
//
//	refused          not an http service of this cluster, or an upstream
//	                 its definition does not name (and the definition is
//	                 not newer than the caller's copy)
//	service_changed  the definition was rewritten (or deleted) since the
//	                 caller read the version it sends: the gateway reads
//	                 it again and retries once when the request has no
//	                 body, else answers 503 with Retry-After
//	unverified       the state could not be read: the gateway tries
//	                 another runner
//
// While its cluster's state cannot be read (no quorum), a runner checks
// against the copy it read last, or else the node's last known state
// (Config.StaleDefinitions: its replica, or one on its side of a cut), as long
// as that was current less than Config.StaleServeFor ago (the agent's
// -stale-serve-for, the bound a gateway serves /svc/ by): an upstream
// named there is served. Past the bound, without either, or when the
// caller's copy is newer and names an upstream the old one does not, the
// answer is unverified. Exec runs never use an old copy: they need the
// quorum for their record anyway.
//
// A header frame without a service (a gateway of an earlier build) is
// checked against every http service of the cluster (one read of the
// service list per upstream and defCacheTTL): the upstream must be one of
// theirs.
//
// Local proxying (the gateway is the runner, ProxyInPlace and ProxyHTTP's
// in-place branch) is not checked: the definition is this node's own read.

// Errors of ProxyHTTP when the runner refused the request (see above).
var (
	// ErrProxyRefused: the runner's cluster does not define the request's
	// upstream for the service (502).
	ErrProxyRefused = errors.New("dispatch: the runner refused the request")
	// ErrServiceChanged: the definition changed while the request was
	// routed; a retry uses the new one (503, Retry-After).
	ErrServiceChanged = errors.New("dispatch: the service's definition changed")
	// ErrUnverified: no runner could read its cluster's state to check
	// the request (503, Retry-After).
	ErrUnverified = errors.New("dispatch: no runner could check the request against its cluster's state")
)

// maxLegacyScan bounds the services read to check a header frame that
// names none.
const maxLegacyScan = 4096

// verifyHTTP checks a remote caller's MethodHTTP request against this
// runner's cluster state (the comment above) and returns the upstream to
// proxy to: the definition's spelling of it. The error is a transport
// error with one of verify.go's codes.
func (d *Dispatcher) verifyHTTP(ctx context.Context, peer string, hdr *httpReqWire) (string, error) {
	if hdr.Cluster != "" && hdr.Cluster != d.cfg.Cluster {
		return "", d.refuseHTTP(peer, hdr, codeRefused,
			"this runner belongs to cluster %q and proxies only its services, not cluster %q's",
			d.cfg.Cluster, hdr.Cluster)
	}
	if hdr.Service == "" {
		return d.verifyLegacyHTTP(ctx, peer, hdr)
	}
	if err := ValidateName(hdr.Service); err != nil {
		return "", d.refuseHTTP(peer, hdr, codeRefused, "not a service name")
	}
	svc, found, stale, err := d.httpDefinition(ctx, hdr.Service, hdr.ServiceVersion)
	if err != nil {
		return "", transport.Errorf(codeUnverified,
			"runner %s could not read the definition of %q from cluster %s's state to check the upstream: %v; "+
				"another runner may", d.local, hdr.Service, d.cfg.Cluster, err)
	}
	changed := hdr.ServiceVersion != 0 && svc.Version > hdr.ServiceVersion
	if !found {
		if hdr.ServiceVersion != 0 {
			return "", d.refuseHTTP(peer, hdr, codeChanged,
				"cluster %q no longer defines it (the request was routed with version %d)",
				d.cfg.Cluster, hdr.ServiceVersion)
		}
		return "", d.refuseHTTP(peer, hdr, codeRefused, "cluster %q defines no such service", d.cfg.Cluster)
	}
	if up, ok := definedUpstream(&svc, hdr.Upstream); ok && svc.Type == TypeHTTP {
		return up, nil
	}
	switch {
	case changed:
		return "", d.refuseHTTP(peer, hdr, codeChanged,
			"its definition changed (version %d, the request was routed with %d) and no longer names that upstream",
			svc.Version, hdr.ServiceVersion)
	case stale && svc.Version < hdr.ServiceVersion:
		return "", transport.Errorf(codeUnverified,
			"runner %s cannot read cluster %s's state, and its last copy of %q (version %d, older than the "+
				"request's %d) does not name that upstream; another runner may", d.local, d.cfg.Cluster,
			hdr.Service, svc.Version, hdr.ServiceVersion)
	case svc.Type != TypeHTTP:
		return "", d.refuseHTTP(peer, hdr, codeRefused,
			"cluster %q defines it as a %s service, which has no upstream", d.cfg.Cluster, svc.Type)
	}
	return "", d.refuseHTTP(peer, hdr, codeRefused,
		"cluster %q's definition (version %d) names no such upstream", d.cfg.Cluster, svc.Version)
}

// refuseHTTP logs and returns a refusal of hdr from peer with code.
func (d *Dispatcher) refuseHTTP(peer string, hdr *httpReqWire, code, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	ev := d.log.Warn() // a caller named an upstream its cluster does not define
	if code != codeRefused {
		ev = d.log.Info() // a definition rewritten in flight
	}
	ev.Str("caller", peer).Str("service", hdr.Service).Str("cluster", hdr.Cluster).
		Str("upstream", upstreamHost(hdr.Upstream)).Str("code", code).Str("why", msg).
		Msg("refused to proxy to an upstream this runner's cluster does not define")
	return transport.Errorf(code, "runner %s refused to proxy to %s for %q: %s",
		d.local, upstreamHost(hdr.Upstream), hdr.Service, msg)
}

// StaleDefinitions reads a definition from this node's last known state
// of cluster, without the quorum (node: consensus StaleGet); asOf is when
// that state was last known current, zero for never. It must be safe for
// concurrent use.
type StaleDefinitions func(ctx context.Context, cluster, name string) (
	svc Service, found bool, asOf time.Time, err error)

// httpDefinition is definition, falling back, while the state cannot be
// read, on the last copy read or else the node's last known state, either
// current less than Config.StaleServeFor ago; stale says the answer is one
// of those.
//
// After a failed read, for defCacheTTL, requests go to the old copy
// without trying a read first: a cut must not cost every request the
// store's timeout.
func (d *Dispatcher) httpDefinition(ctx context.Context, name string, want uint64) (
	svc Service, found, stale bool, err error) {
	now := time.Now()
	if svc, ok := d.defs.get(name, now); ok && want != 0 && svc.Version >= want {
		return svc, true, false, nil // definition's cache hit, without its heap copy
	}
	if until := d.stateDown.Load(); d.cfg.StaleServeFor <= 0 || now.UnixNano() >= until {
		svc, found, err = d.definition(ctx, name, want)
		if err == nil || d.cfg.StaleServeFor <= 0 {
			return svc, found, false, err
		}
		d.stateDown.Store(now.Add(defCacheTTL).UnixNano())
	} else if svc, ok := d.defs.get(name, now); ok && want == 0 {
		return svc, true, false, nil // read before the failure
	} else {
		err = fmt.Errorf("cluster %s's state could not be read in the last %s", d.cfg.Cluster, defCacheTTL)
	}
	old, asOf, ok := d.defs.last(name)
	if !ok || time.Since(asOf) >= d.cfg.StaleServeFor {
		if d.cfg.StaleDefinitions == nil {
			return Service{}, false, false, err
		}
		sctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
		defer cancel()
		var serr error
		old, ok, asOf, serr = d.cfg.StaleDefinitions(sctx, d.cfg.Cluster, name)
		if serr != nil || asOf.IsZero() || time.Since(asOf) >= d.cfg.StaleServeFor {
			return Service{}, false, false, err
		}
	}
	d.log.Debug().Str("service", name).Time("as_of", asOf).Err(err).
		Msg("checking a proxied request against a definition of the last known state")
	return old, ok, true, nil
}

// last returns the copy of name read last, however old, while it is kept.
func (c *defCache) last(name string) (Service, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	return e.svc, e.at, ok
}

// legacyCache remembers, for defCacheTTL, the upstreams found defined for
// header frames that name no service, so an earlier build's gateway costs
// one read of the service list per upstream and second, not per request.
// Only found upstreams go in, at most defCacheMax.
type legacyCache struct {
	mu sync.Mutex
	m  map[string]legacyHit // the frame's upstream → the definition's spelling
}

type legacyHit struct {
	up string
	at time.Time
}

func (c *legacyCache) get(up string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[up]
	return h.up, ok && now.Sub(h.at) < defCacheTTL
}

func (c *legacyCache) put(up, def string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= defCacheMax {
		c.m = map[string]legacyHit{}
	}
	c.m[up] = legacyHit{up: def, at: now}
}

// verifyLegacyHTTP checks a header frame that names no service (an earlier
// build's gateway): the upstream must be one of an http service of this
// runner's cluster.
func (d *Dispatcher) verifyLegacyHTTP(ctx context.Context, peer string, hdr *httpReqWire) (string, error) {
	now := time.Now()
	if up, ok := d.legacy.get(hdr.Upstream, now); ok {
		return up, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	const page = 256
	after := ""
	for n := 0; n < maxLegacyScan; {
		es, err := d.store.List(ctx, d.cfg.Cluster, ServiceKey(""), ListOptions{After: after, Limit: page,
			MaxBytes: defaultListBytes})
		if err != nil {
			return "", transport.Errorf(codeUnverified,
				"runner %s could not read cluster %s's services to check the upstream: %v; another runner may",
				d.local, d.cfg.Cluster, err)
		}
		for _, e := range es {
			var svc Service
			if json.Unmarshal(e.Value, &svc) != nil || svc.Type != TypeHTTP {
				continue
			}
			if up, ok := definedUpstream(&svc, hdr.Upstream); ok {
				d.legacy.put(hdr.Upstream, up, now)
				return up, nil
			}
		}
		if !morePages(es, page, defaultListBytes) {
			return "", d.refuseHTTP(peer, hdr, codeRefused,
				"no http service of cluster %q names that upstream", d.cfg.Cluster)
		}
		after, n = es[len(es)-1].Key, n+len(es)
	}
	return "", d.refuseHTTP(peer, hdr, codeRefused,
		"the request names no service and cluster %q has too many to search; upgrade the gateway", d.cfg.Cluster)
}

// definedUpstream returns the upstream of svc that up names (see the top of
// this file), as the definition spells it.
func definedUpstream(svc *Service, up string) (string, bool) {
	if svc.Upstream != "" && svc.Upstream == up {
		return up, true // what a gateway sends: no parsing on the hot path
	}
	for i := range svc.Upstreams {
		if svc.Upstreams[i].URL == up {
			return up, true
		}
	}
	want, ok := upstreamKeyOf(up)
	if !ok {
		return "", false
	}
	if svc.Upstream != "" {
		if k, ok := upstreamKeyOf(svc.Upstream); ok && k == want {
			return svc.Upstream, true
		}
	}
	for i := range svc.Upstreams {
		if k, ok := upstreamKeyOf(svc.Upstreams[i].URL); ok && k == want {
			return svc.Upstreams[i].URL, true
		}
	}
	return "", false
}

// upstreamKey is an upstream URL as compared: what decides where a request
// goes. ok is false for anything that is not a plain http(s) base URL.
type upstreamKey struct{ scheme, user, host, port, path string }

func upstreamKeyOf(s string) (upstreamKey, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return upstreamKey{}, false
	}
	k := upstreamKey{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname())}
	if k.scheme != "http" && k.scheme != "https" || k.host == "" {
		return upstreamKey{}, false
	}
	if u.User != nil {
		k.user = u.User.String()
	}
	switch p := u.Port(); {
	case p == "" && k.scheme == "http":
		k.port = "80"
	case p == "":
		k.port = "443"
	default:
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return upstreamKey{}, false
		}
		k.port = strconv.FormatUint(n, 10)
	}
	k.path = strings.TrimSuffix(u.EscapedPath(), "/")
	return k, true
}

// upstreamHost is the host:port of an upstream URL, for messages: never
// its userinfo.
func upstreamHost(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Host
	}
	return "an upstream that is not a URL"
}

// proxyRefusal is the error ProxyHTTP returns for a runner's refusal
// (verifyHTTP), saying what happened and what to do; other errors pass.
func proxyRefusal(cluster, service string, err error) error {
	var re *transport.RemoteError
	if err == nil || !errors.As(err, &re) {
		return err
	}
	switch re.Code {
	case codeRefused:
		return fmt.Errorf("%w: %s. This node's definition of %q is not the one cluster %s's state holds: "+
			"check the service (GET /v1/services/%s?cluster=%s) and this node's logs; a node that keeps "+
			"sending it is misconfigured or compromised",
			ErrProxyRefused, re.Message, service, cluster, service, cluster)
	case codeChanged:
		return fmt.Errorf("%w: %s. Retry: this node reads the new definition within a second",
			ErrServiceChanged, re.Message)
	case codeUnverified:
		return fmt.Errorf("%w: %s. Retry later, or check that a majority of cluster %s's voters is up",
			ErrUnverified, re.Message, cluster)
	}
	return err
}

// reread is the current definition of cluster's service name, read
// linearizably, for a retry after service_changed; ok is false when it is
// gone, not http, or cannot be read.
func (d *Dispatcher) reread(ctx context.Context, cluster, name string) (svc Service, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	b, ver, found, err := d.store.Get(ctx, cluster, ServiceKey(name))
	if err != nil || !found || json.Unmarshal(b, &svc) != nil || svc.Type != TypeHTTP {
		return Service{}, false
	}
	svc.Version = ver
	return svc, true
}
