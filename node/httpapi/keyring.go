package httpapi

import "net/http"

// KeyringBackend rotates the gossip encryption keys across the live mesh.
// op is list, install, use or remove; the answer reports per-node results.
type KeyringBackend interface {
	KeyOp(op, key string) (any, error)
}

// WithKeyring serves /v1/keyring.
func WithKeyring(k KeyringBackend) Option { return func(a *API) { a.keyring = k } }

func (a *API) keyringRoutes() {
	a.handle("GET /v1/keyring", func(w http.ResponseWriter, r *http.Request) error {
		out, err := a.keyring.KeyOp("list", "")
		if err != nil {
			return err
		}
		return WriteJSON(w, http.StatusOK, out)
	})
	a.handle("POST /v1/keyring/{op}", func(w http.ResponseWriter, r *http.Request) error {
		op := r.PathValue("op")
		if op != "install" && op != "use" && op != "remove" {
			return Errorf(http.StatusNotFound, "not_found", "keyring operation %q: want install, use or remove", op)
		}
		var req struct {
			Key string `json:"key"`
		}
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
		if req.Key == "" || len(req.Key) > 64 {
			return Errorf(http.StatusBadRequest, "bad_request", "key: a base64 gossip key is required")
		}
		out, err := a.keyring.KeyOp(op, req.Key)
		if err != nil {
			return err
		}
		return WriteJSON(w, http.StatusOK, out)
	})
}
