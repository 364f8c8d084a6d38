package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/node/httpapi"
)

// groupless is a store in which no cluster has a group yet, as consensus
// answers then.
type groupless struct{ kvStore }

func (groupless) Get(ctx context.Context, cluster, key string) (fsm.Item, bool, error) {
	return fsm.Item{}, false, fmt.Errorf("%w: no live node of cluster %q", consensus.ErrNotBootstrapped, cluster)
}

// A cluster no member belongs to is 404 unknown_cluster; one with members
// but no group yet stays a retryable 503.
func TestUnknownClusterIs404NotRetryable503(t *testing.T) {
	s := &stateBackend{kv: knownClusters{kvStore: groupless{}, known: func(c string) bool { return c == "default" }}}
	for _, c := range []struct {
		cluster, code string
		status        int
	}{
		{"nope", "unknown_cluster", http.StatusNotFound},
		{"default", "no_quorum", http.StatusServiceUnavailable},
	} {
		_, err := s.GetService(context.Background(), c.cluster, "a")
		var he *httpapi.Error
		if !errors.As(err, &he) || he.Status != c.status || he.Code != c.code {
			t.Fatalf("cluster %s: %v (%+v), want %d %s", c.cluster, err, he, c.status, c.code)
		}
		if c.status == http.StatusNotFound && (he.RetryAfter != 0 || errors.Is(err, consensus.ErrNotBootstrapped)) {
			t.Fatalf("cluster %s: the 404 still looks retryable: %+v", c.cluster, he)
		}
	}
}

// An error that already names its operation does not get it twice.
func TestAPIErrorDoesNotDoubleTheOperation(t *testing.T) {
	err := apiError("list executions", fmt.Errorf("list executions: %w", consensus.ErrNoQuorum))
	if got := err.Error(); got != "list executions: "+consensus.ErrNoQuorum.Error() {
		t.Fatalf("got %q", got)
	}
	err = apiError("get service", consensus.ErrNoQuorum)
	if got := err.Error(); got != "get service: "+consensus.ErrNoQuorum.Error() {
		t.Fatalf("got %q", got)
	}
}
