package node

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// decoratorsBackend keeps shared decorators under dispatch.DecoratorKey:
// the schema as written. A service names one with "decorator": "NAME";
// the dispatcher reads the current version at each run.
//
// A decorator in use is not deleted (409 naming a user), and a service
// naming an unknown one is not written (400 on "decorator"). Both checks
// read, then write: a service written at the same moment as its decorator
// is deleted may slip through, and its runs then fail with 400 saying the
// decorator does not exist, until it is put again.
type decoratorsBackend struct {
	kv kvStore
}

var _ httpapi.DecoratorsBackend = (*decoratorsBackend)(nil)

func (d *decoratorsBackend) PutDecorator(ctx context.Context, cluster, name string, schema []byte, cas *uint64) (httpapi.Decorator, error) {
	schema = bytes.TrimSpace(schema)
	res, err := d.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: dispatch.DecoratorKey(name), Value: schema, CAS: cas}}})
	if err != nil {
		return httpapi.Decorator{}, apiError("put decorator", err)
	}
	if res.Conflict {
		return httpapi.Decorator{}, decoratorConflict(name, cas)
	}
	users, err := d.users(ctx, cluster)
	if err != nil {
		return httpapi.Decorator{}, err
	}
	return view(cluster, name, schema, res.Versions[0], users[name]), nil
}

func decoratorConflict(name string, cas *uint64) error {
	if cas != nil && *cas == 0 {
		return httpapi.Errorf(http.StatusConflict, "conflict", "decorator %q already exists (cas=0 requires that it does not)", name)
	}
	v := uint64(0)
	if cas != nil {
		v = *cas
	}
	return httpapi.Errorf(http.StatusConflict, "conflict", "decorator %q is not at version %d", name, v)
}

func view(cluster, name string, schema []byte, version uint64, users []string) httpapi.Decorator {
	if users == nil {
		users = []string{}
	}
	return httpapi.Decorator{Name: name, Cluster: cluster, Version: version, Schema: append([]byte(nil), schema...), UsedBy: users}
}

func (d *decoratorsBackend) GetDecorator(ctx context.Context, cluster, name string) (httpapi.Decorator, error) {
	it, ok, err := d.kv.Get(ctx, cluster, dispatch.DecoratorKey(name))
	if err != nil {
		return httpapi.Decorator{}, apiError("get decorator", err)
	}
	if !ok {
		return httpapi.Decorator{}, notFound("decorator", name)
	}
	users, err := d.users(ctx, cluster)
	if err != nil {
		return httpapi.Decorator{}, err
	}
	return view(cluster, name, it.Value, it.Version, users[name]), nil
}

func (d *decoratorsBackend) ListDecorators(ctx context.Context, cluster string) ([]httpapi.Decorator, error) {
	items, err := d.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.DecoratorKey("")})
	if err != nil {
		return nil, apiError("list decorators", err)
	}
	users, err := d.users(ctx, cluster)
	if err != nil {
		return nil, err
	}
	out := make([]httpapi.Decorator, 0, len(items))
	for _, it := range items {
		name := strings.TrimPrefix(it.Key, dispatch.DecoratorKey(""))
		out = append(out, view(cluster, name, it.Value, it.Version, users[name]))
	}
	return out, nil
}

func (d *decoratorsBackend) DeleteDecorator(ctx context.Context, cluster, name string, cas *uint64) error {
	key := dispatch.DecoratorKey(name)
	if _, ok, err := d.kv.Get(ctx, cluster, key); err != nil {
		return apiError("delete decorator", err)
	} else if !ok && cas == nil {
		return notFound("decorator", name)
	}
	users, err := d.users(ctx, cluster)
	if err != nil {
		return err
	}
	if u := users[name]; len(u) > 0 {
		more := ""
		if len(u) > 1 {
			more = fmt.Sprintf(" and %d more", len(u)-1)
		}
		return httpapi.Errorf(http.StatusConflict, "in_use",
			"decorator %q is used by service %q%s: give those services another decorator (or none) first", name, u[0], more)
	}
	res, err := d.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: cas}}})
	if err != nil {
		return apiError("delete decorator", err)
	}
	if res.Conflict {
		return decoratorConflict(name, cas)
	}
	return nil
}

// users maps each shared decorator's name to the services naming it.
func (d *decoratorsBackend) users(ctx context.Context, cluster string) (map[string][]string, error) {
	items, err := d.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.ServiceKey("")})
	if err != nil {
		return nil, apiError("list services", err)
	}
	out := map[string][]string{}
	for _, it := range items {
		svc, err := decodeService(it)
		if err != nil {
			continue
		}
		if name, ok := svc.DecoratorRef(); ok {
			out[name] = append(out[name], svc.Name)
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out, nil
}

// checkDecoratorRef refuses (400 on "decorator") a service naming a
// shared decorator the cluster does not have.
func checkDecoratorRef(ctx context.Context, kv kvStore, cluster string, svc dispatch.Service) error {
	name, ok := svc.DecoratorRef()
	if !ok {
		return nil
	}
	_, found, err := kv.Get(ctx, cluster, dispatch.DecoratorKey(name))
	if err != nil {
		return apiError("put service", err)
	}
	if !found {
		e := httpapi.Errorf(http.StatusBadRequest, "invalid_service",
			"invalid service: decorator: the shared decorator %q does not exist in cluster %s: put it first (meshgw decorators put %s -f FILE)",
			name, cluster, name)
		e.Path = "decorator"
		return e
	}
	return nil
}
