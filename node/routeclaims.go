package node

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Route claims (dispatch.RouteKeyPrefix): a service's definition and its
// claims are written in one replicated command, each claim with a CAS
// (absent, or held by this same service), so two services never hold one
// route whatever the interleaving of their writes. The definition itself
// is written with a CAS on the version read (or the caller's ?cas=), so
// the claims dropped are those of the definition replaced.

type routeClaim struct {
	Service string `json:"service"`
}

const claimAttempts = 5

// putRouted writes svc with its route claims; done is false when neither
// svc nor the definition it replaces has routes (the plain write serves).
// extra gives writes for the same command (the history revision), asked
// again at each attempt.
func (s *stateBackend) putRouted(ctx context.Context, cluster string, svc dispatch.Service, val []byte, cas *uint64,
	extra func() ([]fsm.Op, error)) (uint64, bool, error) {
	key := dispatch.ServiceKey(svc.Name)
	for range claimAttempts {
		old, oldVer, found, err := s.readService(ctx, cluster, key)
		if err != nil {
			return 0, true, apiError("put service", err)
		}
		oldRoutes := old.Routes()
		newRoutes := svc.Routes()
		if len(oldRoutes) == 0 && len(newRoutes) == 0 {
			return 0, false, nil
		}
		if cas != nil && *cas != oldVer {
			return 0, true, conflict(svc.Name, cas)
		}
		if !found {
			oldVer = 0
		}
		v := oldVer
		ops := []fsm.Op{{Type: fsm.OpPut, Key: key, Value: val, CAS: &v}}
		more, err := extra()
		if err != nil {
			return 0, true, apiError("put service", err)
		}
		ops = append(ops, more...)
		claimVal, _ := json.Marshal(routeClaim{Service: svc.Name})
		keep := map[string]bool{}
		for _, r := range newRoutes {
			keep[r.Key()] = true
			cv, err := s.claimable(ctx, cluster, r, svc.Name)
			if err != nil {
				return 0, true, err
			}
			ops = append(ops, fsm.Op{Type: fsm.OpPut, Key: r.Key(), Value: claimVal, CAS: &cv})
		}
		for _, r := range oldRoutes {
			if keep[r.Key()] {
				continue
			}
			if op, ok, err := s.releaseOp(ctx, cluster, r, svc.Name); err != nil {
				return 0, true, err
			} else if ok {
				ops = append(ops, op)
			}
		}
		res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
		s.serviceChanged(cluster, svc.Name)
		if err != nil {
			return 0, true, apiError("put service", err)
		}
		if !res.Conflict {
			return res.Versions[0], true, nil
		}
		// Someone wrote the service or a claim meanwhile: read again (the
		// next round names the claim's holder, or the caller's CAS fails).
	}
	return 0, true, httpapi.Errorf(http.StatusConflict, "conflict",
		"service %q or one of its routes kept changing under concurrent writes; try again", svc.Name)
}

// deleteRouted deletes the service cluster/name with its route claims;
// done is false when it has none.
func (s *stateBackend) deleteRouted(ctx context.Context, cluster, name string, cas *uint64) (bool, error) {
	key := dispatch.ServiceKey(name)
	for range claimAttempts {
		old, ver, found, err := s.readService(ctx, cluster, key)
		if err != nil {
			return true, apiError("delete service", err)
		}
		if !found || len(old.Routes()) == 0 {
			return false, nil
		}
		if cas != nil && *cas != ver {
			return true, conflict(name, cas)
		}
		v := ver
		ops := []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: &v}}
		for _, r := range old.Routes() {
			if op, ok, err := s.releaseOp(ctx, cluster, r, name); err != nil {
				return true, err
			} else if ok {
				ops = append(ops, op)
			}
		}
		res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
		s.serviceChanged(cluster, name)
		if err != nil {
			return true, apiError("delete service", err)
		}
		if !res.Conflict {
			return true, nil
		}
	}
	return true, httpapi.Errorf(http.StatusConflict, "conflict", "service %q kept changing under concurrent writes; try again", name)
}

func (s *stateBackend) readService(ctx context.Context, cluster, key string) (dispatch.Service, uint64, bool, error) {
	it, ok, err := s.kv.Get(ctx, cluster, key)
	if err != nil || !ok {
		return dispatch.Service{}, 0, false, err
	}
	svc, err := decodeService(it)
	if err != nil {
		return dispatch.Service{}, 0, false, err
	}
	return svc, it.Version, true, nil
}

// claimable returns the CAS version under which name may write claim r:
// 0 when free, the claim's version when name holds it or when its holder
// no longer claims it (a claim left behind), else a 409 naming the holder.
func (s *stateBackend) claimable(ctx context.Context, cluster string, r dispatch.Route, name string) (uint64, error) {
	it, ok, err := s.kv.Get(ctx, cluster, r.Key())
	if err != nil {
		return 0, apiError("put service", err)
	}
	if !ok {
		return 0, nil
	}
	var c routeClaim
	if json.Unmarshal(it.Value, &c) != nil || c.Service == name {
		return it.Version, nil
	}
	holder, _, found, err := s.readService(ctx, cluster, dispatch.ServiceKey(c.Service))
	if err != nil {
		return 0, apiError("put service", err)
	}
	if found {
		for _, hr := range holder.Routes() {
			if hr.Key() == r.Key() {
				return 0, routeConflict(r, c.Service)
			}
		}
	}
	return it.Version, nil
}

// releaseOp deletes claim r if name holds it (ok false: it does not).
func (s *stateBackend) releaseOp(ctx context.Context, cluster string, r dispatch.Route, name string) (fsm.Op, bool, error) {
	it, ok, err := s.kv.Get(ctx, cluster, r.Key())
	if err != nil {
		return fsm.Op{}, false, apiError("put service", err)
	}
	var c routeClaim
	if !ok || json.Unmarshal(it.Value, &c) != nil || c.Service != name {
		return fsm.Op{}, false, nil
	}
	v := it.Version
	return fsm.Op{Type: fsm.OpDelete, Key: r.Key(), CAS: &v}, true, nil
}
