package node

import (
	"context"
	"errors"
	"net/http"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/node/httpapi"
)

// knownClusters tells apart the two reasons a cluster has no group to
// serve a call. A cluster some member of the mesh belongs to (any gossip
// status) is waiting for its group: ErrNotBootstrapped stays a 503 with
// Retry-After. A cluster no member belongs to will not come into being by
// waiting: that is a 404 unknown_cluster, so clients stop retrying and the
// operator sees the typo (?cluster=nope).
type knownClusters struct {
	kvStore
	known func(cluster string) bool
}

func (k knownClusters) check(cluster string, err error) error {
	if err == nil || !errors.Is(err, consensus.ErrNotBootstrapped) || k.known(cluster) {
		return err
	}
	return httpapi.Errorf(http.StatusNotFound, "unknown_cluster",
		"cluster %q is unknown: no member of the mesh belongs to it (meshgw clusters lists them)", cluster)
}

func (k knownClusters) Apply(ctx context.Context, cluster string, cmd fsm.Command) (fsm.Result, error) {
	res, err := k.kvStore.Apply(ctx, cluster, cmd)
	return res, k.check(cluster, err)
}

func (k knownClusters) Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error) {
	it, ok, err := k.kvStore.Get(ctx, cluster, key)
	return it, ok, k.check(cluster, err)
}

func (k knownClusters) List(ctx context.Context, cluster string, q fsm.ListQuery) ([]fsm.Item, error) {
	items, err := k.kvStore.List(ctx, cluster, q)
	return items, k.check(cluster, err)
}

func (k knownClusters) Snapshot(ctx context.Context, cluster string) ([]byte, error) {
	data, err := k.kvStore.Snapshot(ctx, cluster)
	return data, k.check(cluster, err)
}

func (k knownClusters) Restore(ctx context.Context, cluster string, data []byte) error {
	return k.check(cluster, k.kvStore.Restore(ctx, cluster, data))
}
