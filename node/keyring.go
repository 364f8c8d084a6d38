package node

import (
	"net/http"

	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/httpapi"
)

// keyringBackend serves gossip key rotation over the API. changed (may be
// nil) is called after an operation so this node's derived TLS follows at
// once; the others follow within keyPollInterval.
type keyringBackend struct {
	g       *gossip.Gossip
	changed func()
}

var _ httpapi.KeyringBackend = keyringBackend{}

func (k keyringBackend) KeyOp(op, key string) (any, error) {
	var (
		r   gossip.KeyResponse
		err error
	)
	switch op {
	case "list":
		r, err = k.g.ListKeys()
	case "install":
		r, err = k.g.InstallKey(key)
	case "use":
		r, err = k.g.UseKey(key)
	case "remove":
		r, err = k.g.RemoveKey(key)
	default:
		return nil, httpapi.Errorf(http.StatusBadRequest, "bad_request", "unknown keyring operation %q", op)
	}
	if op != "list" && k.changed != nil {
		k.changed()
	}
	if err != nil && r.NumNodes == 0 {
		return nil, httpapi.Errorf(http.StatusBadRequest, "keyring", "%v", err)
	}
	out := map[string]any{"num_nodes": r.NumNodes, "num_resp": r.NumResp, "num_err": r.NumErr,
		"messages": r.Messages, "keys": r.Keys, "primary": r.Primary}
	if err != nil {
		out["error"] = err.Error()
	}
	return out, nil
}
