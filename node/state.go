package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
)

// kvStore is what node needs from consensus.
type kvStore interface {
	Apply(ctx context.Context, cluster string, cmd fsm.Command) (fsm.Result, error)
	Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error)
	List(ctx context.Context, cluster string, q fsm.ListQuery) ([]fsm.Item, error)
	IsLeader(cluster string) bool
	Snapshot(ctx context.Context, cluster string) ([]byte, error)
	Restore(ctx context.Context, cluster string, data []byte) error
}

var _ kvStore = (*consensus.Manager)(nil)

// apiError maps consensus and dispatch errors to API errors.
func apiError(op string, err error) error {
	if err == nil {
		return nil
	}
	var he *httpapi.Error
	msg := withOp(op, err)
	switch {
	case errors.As(err, &he):
		return err
	case errors.Is(err, consensus.ErrNoQuorum), errors.Is(err, consensus.ErrNotBootstrapped):
		return httpapi.Errorf(http.StatusServiceUnavailable, "no_quorum", "%s", msg).WithRetryAfter(1)
	case errors.Is(err, consensus.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return httpapi.Errorf(http.StatusServiceUnavailable, "timeout", "%s", msg).WithRetryAfter(1)
	case errors.Is(err, consensus.ErrForbidden):
		return httpapi.Errorf(http.StatusForbidden, "forbidden", "%s", msg)
	case errors.Is(err, dispatch.ErrConflict):
		return httpapi.Errorf(http.StatusConflict, "conflict", "%s", msg)
	case errors.Is(err, context.Canceled):
		return httpapi.Errorf(499, "canceled", "%s: client went away", op)
	}
	if strings.HasPrefix(err.Error(), op+": ") {
		return err
	}
	return fmt.Errorf("%s: %w", op, err)
}

// withOp is "op: err", without doubling op when err already starts with
// it (dispatch names its own operations, e.g. "list executions: ...").
func withOp(op string, err error) string {
	if m := err.Error(); strings.HasPrefix(m, op+": ") {
		return m
	}
	return op + ": " + err.Error()
}

// stateBackend serves services, clusters and snapshots over consensus.
type stateBackend struct {
	kv     kvStore
	gossip *gossip.Gossip
	cons   *consensus.Manager
	// changed, when set, hears of every service this node writes or
	// deletes (the service cache forgets it: this node sees its own
	// writes at once, others within cacheFresh).
	changed func(cluster, name string)
}

func (s *stateBackend) serviceChanged(cluster, name string) {
	if s.changed != nil {
		s.changed(cluster, name)
	}
}

var _ httpapi.StateBackend = (*stateBackend)(nil)

func (s *stateBackend) PutService(ctx context.Context, cluster string, svc dispatch.Service, cas *uint64) (uint64, error) {
	svc.Version = 0
	if err := checkDecoratorRef(ctx, s.kv, cluster, svc); err != nil { // decorators.go
		return 0, err
	}
	val, err := json.Marshal(svc)
	if err != nil {
		return 0, err
	}
	// The revision goes in the same command as the definition; it is read
	// again at each attempt of a write with route claims.
	hist := func() ([]fsm.Op, error) { return historyOps(ctx, s.kv, cluster, svc.Name, val, time.Now()) }
	if v, done, err := s.putRouted(ctx, cluster, svc, val, cas, hist); done { // with its route claims (routeclaims.go)
		return v, err
	}
	histOps, err := hist()
	if err != nil {
		return 0, apiError("put service", err)
	}
	ops := append([]fsm.Op{{Type: fsm.OpPut, Key: dispatch.ServiceKey(svc.Name), Value: val, CAS: cas}}, histOps...)
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
	s.serviceChanged(cluster, svc.Name)
	if err != nil {
		return 0, apiError("put service", err)
	}
	if res.Conflict && isHistoryKey(res.ConflictKey) {
		return 0, historyConflict(svc.Name)
	}
	if res.Conflict {
		return 0, conflict(svc.Name, cas)
	}
	return res.Versions[0], nil
}

func conflict(name string, cas *uint64) error {
	if cas != nil && *cas == 0 {
		return httpapi.Errorf(http.StatusConflict, "conflict", "service %q already exists (cas=0 requires that it does not)", name)
	}
	v := uint64(0)
	if cas != nil {
		v = *cas
	}
	return httpapi.Errorf(http.StatusConflict, "conflict", "service %q is not at version %d", name, v)
}

func notFound(what, name string) error {
	return httpapi.Errorf(http.StatusNotFound, "not_found", "%s %q not found", what, name)
}

func (s *stateBackend) GetService(ctx context.Context, cluster, name string) (dispatch.Service, error) {
	it, ok, err := s.kv.Get(ctx, cluster, dispatch.ServiceKey(name))
	if err != nil {
		return dispatch.Service{}, apiError("get service", err)
	}
	if !ok {
		return dispatch.Service{}, notFound("service", name)
	}
	return decodeService(it)
}

func decodeService(it fsm.Item) (dispatch.Service, error) {
	var svc dispatch.Service
	if err := json.Unmarshal(it.Value, &svc); err != nil {
		return svc, fmt.Errorf("decode %s: %w", it.Key, err)
	}
	svc.Version = it.Version
	return svc, nil
}

func (s *stateBackend) ListServices(ctx context.Context, cluster string) ([]dispatch.Service, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.ServiceKey("")})
	if err != nil {
		return nil, apiError("list services", err)
	}
	out := make([]dispatch.Service, 0, len(items))
	for _, it := range items {
		svc, err := decodeService(it)
		if err != nil {
			return nil, err
		}
		out = append(out, svc)
	}
	return out, nil
}

func (s *stateBackend) DeleteService(ctx context.Context, cluster, name string, cas *uint64) error {
	if done, err := s.deleteRouted(ctx, cluster, name, cas); done { // with its route claims (routeclaims.go)
		return err
	}
	key := dispatch.ServiceKey(name)
	if cas == nil {
		// A delete of an unknown service is a 404, not a silent success.
		if _, ok, err := s.kv.Get(ctx, cluster, key); err != nil {
			return apiError("delete service", err)
		} else if !ok {
			return notFound("service", name)
		}
	}
	res, err := s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: cas}}})
	s.serviceChanged(cluster, name)
	if err != nil {
		return apiError("delete service", err)
	}
	if res.Conflict {
		return conflict(name, cas)
	}
	return nil
}

func (s *stateBackend) Clusters(ctx context.Context) ([]httpapi.Cluster, error) {
	byID := map[string]*httpapi.Cluster{}
	for _, m := range s.gossip.Members(gossip.Filter{}) {
		c := byID[m.Cluster]
		if c == nil {
			c = &httpapi.Cluster{ID: m.Cluster}
			byID[m.Cluster] = c
		}
		c.Members++
		if m.Status == gossip.StatusAlive {
			c.Alive++
			for _, r := range m.Roles {
				if r == "runner" {
					c.Runners++
				}
			}
		}
	}
	for _, g := range s.cons.Status(ctx) {
		if c := byID[g.Cluster]; c != nil {
			c.Leader, c.ShardID = g.Leader, g.ShardID
		}
	}
	out := make([]httpapi.Cluster, 0, len(byID))
	for _, c := range byID {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *stateBackend) Snapshot(ctx context.Context, cluster string) ([]byte, error) {
	data, err := s.kv.Snapshot(ctx, cluster)
	return data, apiError("snapshot", err)
}

func (s *stateBackend) Restore(ctx context.Context, cluster string, data []byte) error {
	err := s.kv.Restore(ctx, cluster, data)
	if errors.Is(err, fsm.ErrBadSnapshot) || errors.Is(err, fsm.ErrBadCommand) {
		return httpapi.Errorf(http.StatusBadRequest, "bad_snapshot", "%v", err)
	}
	if err != nil {
		return apiError("restore", err)
	}
	return apiError("restore: drop the snapshot's role fence records", dropRoleRecords(ctx, s.kv, cluster))
}
