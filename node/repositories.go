package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// repositoryBackend serves /v1/repositories over the cluster's group
// (dispatch.RepositoryKey). Runners read the definitions through
// dispatch at each run, so a change applies to the next run.
type repositoryBackend struct{ kv kvStore }

var _ httpapi.RepositoryBackend = repositoryBackend{}

func (b repositoryBackend) PutRepository(ctx context.Context, cluster string, r dispatch.Repository, cas *uint64) (uint64, error) {
	r.Version = 0
	val, err := json.Marshal(r)
	if err != nil {
		return 0, err
	}
	res, err := b.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: dispatch.RepositoryKey(r.Name), Value: val, CAS: cas}}})
	if err != nil {
		return 0, apiError("put repository", err)
	}
	if res.Conflict {
		return 0, repoConflict(r.Name, cas)
	}
	return res.Versions[0], nil
}

func repoConflict(name string, cas *uint64) error {
	if cas != nil && *cas == 0 {
		return httpapi.Errorf(http.StatusConflict, "conflict", "repository %q already exists (cas=0 requires that it does not)", name)
	}
	v := uint64(0)
	if cas != nil {
		v = *cas
	}
	return httpapi.Errorf(http.StatusConflict, "conflict", "repository %q is not at version %d", name, v)
}

func (b repositoryBackend) GetRepository(ctx context.Context, cluster, name string) (dispatch.Repository, error) {
	it, ok, err := b.kv.Get(ctx, cluster, dispatch.RepositoryKey(name))
	if err != nil {
		return dispatch.Repository{}, apiError("get repository", err)
	}
	if !ok {
		return dispatch.Repository{}, notFound("repository", name)
	}
	return decodeRepository(it)
}

func decodeRepository(it fsm.Item) (dispatch.Repository, error) {
	var r dispatch.Repository
	if err := json.Unmarshal(it.Value, &r); err != nil {
		return r, fmt.Errorf("decode %s: %w", it.Key, err)
	}
	r.Version = it.Version
	return r, nil
}

func (b repositoryBackend) ListRepositories(ctx context.Context, cluster string) ([]dispatch.Repository, error) {
	items, err := b.kv.List(ctx, cluster, fsm.ListQuery{Prefix: dispatch.RepositoryKey("")})
	if err != nil {
		return nil, apiError("list repositories", err)
	}
	out := make([]dispatch.Repository, 0, len(items))
	for _, it := range items {
		r, err := decodeRepository(it)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (b repositoryBackend) DeleteRepository(ctx context.Context, cluster, name string, cas *uint64) error {
	key := dispatch.RepositoryKey(name)
	if cas == nil {
		if _, ok, err := b.kv.Get(ctx, cluster, key); err != nil {
			return apiError("delete repository", err)
		} else if !ok {
			return notFound("repository", name)
		}
	}
	res, err := b.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpDelete, Key: key, CAS: cas}}})
	if err != nil {
		return apiError("delete repository", err)
	}
	if res.Conflict {
		return repoConflict(name, cas)
	}
	return nil
}
