package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// What a runner runs for a remote caller.
//
// Any member of the mesh may call MethodExec (the node that drives a run
// of cluster C need not belong to C), so a runner does not take the
// caller's word for what to run. It serves only services of its own
// cluster (Config.Cluster), resolved by name from that cluster's state
// (a copy it read itself, kept while the caller's ServiceVersion says it
// is current, else read again linearizably), and it refuses a request
// whose command, env, dir, user, timeout, source (kind, repository with
// the URL and ref its state gives, path) or secrets list (names, env,
// files) differs from that definition, or whose input the definition's
// decorator rejects. What the caller still chooses: the input (checked
// against the decorator), the secret values and repository credentials
// it read for the attempt, and the execution ID. Local runs (the driving
// node is the runner) are not checked: the definition is this node's own
// read.
//
// Refusals, each a transport.RemoteError code the caller classifies:
//
//	refused          the request is not what the cluster defines (forged,
//	                 another cluster's service, an unknown service):
//	                 permanent, the execution fails, nothing ran
//	service_changed  the definition was rewritten after the execution was
//	                 accepted (an older ServiceVersion that no longer
//	                 matches): permanent too, since every runner of the
//	                 cluster reads the same state; run the service again
//	unverified       the runner could not read its cluster's state (no
//	                 quorum, timeout): like busy, another runner may
//	                 answer (one with the definition cached)
const (
	codeRefused    = "refused"
	codeChanged    = "service_changed"
	codeUnverified = "unverified"
)

// Bounds of a runner's copies of its cluster's definitions. A copy serves
// requests naming its version (or an older one) for defCacheTTL: versions
// only grow, so a copy at that version is that definition, and a rewrite
// or a delete is seen within the TTL (the API's service cache is as
// fresh): a request for the older definition is refused from then on.
const (
	defCacheTTL = time.Second
	defCacheMax = 1024
)

// defCache holds the definitions this runner read from its cluster's state,
// by service name. Only found definitions go in, so a caller cannot fill it
// with names of its choosing.
type defCache struct {
	mu sync.Mutex
	m  map[string]cachedDef
}

type cachedDef struct {
	svc Service
	at  time.Time
}

func (c *defCache) get(name string, now time.Time) (Service, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[name]
	if !ok || now.Sub(e.at) >= defCacheTTL {
		return Service{}, false
	}
	return e.svc, true
}

func (c *defCache) put(svc Service, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedDef{}
	}
	if _, ok := c.m[svc.Name]; !ok && len(c.m) >= defCacheMax {
		for k, e := range c.m { // expired first; else any one
			if now.Sub(e.at) >= defCacheTTL {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < defCacheMax {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[svc.Name] = cachedDef{svc: svc, at: now}
}

func (c *defCache) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, name)
}

// definition returns the runner's definition of service name as of at
// least version want (0: unknown, always read), from the cache or the
// store. found is false when the cluster defines no such service.
func (d *Dispatcher) definition(ctx context.Context, name string, want uint64) (svc Service, found bool, err error) {
	now := time.Now()
	if want != 0 {
		if svc, ok := d.defs.get(name, now); ok && svc.Version >= want {
			return svc, true, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.StoreTimeout)
	defer cancel()
	b, ver, found, err := d.store.Get(ctx, d.cfg.Cluster, ServiceKey(name))
	if err != nil || !found {
		if err == nil {
			d.defs.forget(name)
		}
		return Service{}, false, err
	}
	if err := json.Unmarshal(b, &svc); err != nil {
		return Service{}, false, fmt.Errorf("service %q: stored definition unreadable: %v", name, err)
	}
	svc.Version = ver
	d.defs.put(svc, now)
	return svc, true, nil
}

// verifyExec checks a remote caller's exec request against this runner's
// cluster state (see the comment at the top of this file) and returns the
// source to prepare: the one the state defines, with the caller's
// credentials. The error is a transport error with one of the codes above.
func (d *Dispatcher) verifyExec(ctx context.Context, peer string, req *execWire) (*sourceWire, error) {
	refuse := func(code, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		ev := d.log.Warn() // a caller sent what its cluster does not define
		if code == codeChanged {
			ev = d.log.Info() // a definition rewritten while a run waited: no one's fault
		}
		ev.Str("caller", peer).Str("exec", req.ID).Str("service", req.Service).
			Str("cluster", req.Cluster).Str("code", code).Str("why", msg).
			Msg("refused an execution this runner's cluster does not define")
		return transport.Errorf(code, "runner %s refused the execution of %q: %s", d.local, req.Service, msg)
	}
	if req.Cluster != "" && req.Cluster != d.cfg.Cluster {
		return nil, refuse(codeRefused, "this runner belongs to cluster %q and runs only its services, not cluster %q's",
			d.cfg.Cluster, req.Cluster)
	}
	if err := ValidateName(req.Service); err != nil {
		return nil, refuse(codeRefused, "not a service name")
	}
	svc, found, err := d.definition(ctx, req.Service, req.ServiceVersion)
	if err != nil {
		return nil, transport.Errorf(codeUnverified,
			"runner %s could not read the definition of %q from cluster %s's state to check the request: %v; "+
				"another runner may", d.local, req.Service, d.cfg.Cluster, err)
	}
	if !found {
		return nil, refuse(codeRefused, "cluster %q defines no such service", d.cfg.Cluster)
	}
	if !runsProcess(svc.Type) {
		return nil, refuse(codeRefused, "cluster %q defines it as a %s service, which runs no process",
			d.cfg.Cluster, svc.Type)
	}
	mismatch := func(field string) error {
		if req.ServiceVersion != 0 && svc.Version > req.ServiceVersion {
			return refuse(codeChanged, "its definition changed (version %d, the execution was accepted with %d; "+
				"%s differs): run the service again", svc.Version, req.ServiceVersion, field)
		}
		return refuse(codeRefused, "its %s is not the one cluster %q defines (version %d)",
			field, d.cfg.Cluster, svc.Version)
	}
	switch {
	case !slices.Equal(req.Command, svc.Command):
		return nil, mismatch("command")
	case !maps.Equal(req.Env, svc.Env):
		return nil, mismatch("env")
	case req.Dir != svc.Dir:
		return nil, mismatch("dir")
	case req.User != svc.User:
		return nil, mismatch("user")
	case req.TimeoutMs != svc.EffectiveTimeout().Milliseconds():
		return nil, mismatch("timeout")
	case !sameSecretRefs(req.Secrets, svc.Secrets):
		return nil, mismatch("secrets list")
	}
	want, _, err := d.sourceSpec(ctx, d.cfg.Cluster, &svc)
	var missing *missingRepoError
	switch {
	case errors.As(err, &missing):
		return nil, refuse(codeRefused, "%v", err)
	case err != nil:
		return nil, transport.Errorf(codeUnverified, "runner %s could not read the source of %q to check the request: %v",
			d.local, req.Service, err)
	case (want == nil) != (req.Source == nil):
		return nil, mismatch("source")
	case want != nil:
		if want.Kind != req.Source.Kind || want.Repository != req.Source.Repository || want.URL != req.Source.URL ||
			want.Ref != req.Source.Ref || want.PollMs != req.Source.PollMs || want.Path != req.Source.Path ||
			!slices.Equal(want.Prefix, req.Source.Prefix) {
			return nil, mismatch("source")
		}
		want.Username, want.Password = req.Source.Username, req.Source.Password
	}
	if err := d.validateInput(ctx, d.cfg.Cluster, &svc, req.Input); err != nil {
		var se *SchemaError
		if errors.As(err, &se) || errors.Is(err, ErrInvalidInput) {
			return nil, refuse(codeRefused, "%v", err)
		}
		return nil, transport.Errorf(codeUnverified, "runner %s could not read the decorator of %q to check the input: %v",
			d.local, req.Service, err)
	}
	return want, nil
}

// sameSecretRefs reports whether a request's secrets are the definition's
// (names and destinations, in order; the values are the caller's read).
func sameSecretRefs(ws []secretWire, refs []SecretRef) bool {
	if len(ws) != len(refs) {
		return false
	}
	for i, w := range ws {
		if w.Name != refs[i].Name || w.Env != refs[i].Env || w.File != refs[i].File {
			return false
		}
	}
	return true
}
