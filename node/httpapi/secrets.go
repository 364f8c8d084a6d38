package httpapi

import (
	"context"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/meshgw/meshgw/dispatch"
)

// SecretMeta is what the API shows of a secret: never its value.
type SecretMeta struct {
	Name      string    `json:"name"`
	Cluster   string    `json:"cluster"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"created"`
	UpdatedAt time.Time `json:"updated"`
	// KeyID names the key the value is sealed with (a hash, not the key).
	KeyID string `json:"key_id,omitempty"`
	// UsedBy lists the services that reference the secret.
	UsedBy []string `json:"used_by"`
}

// SecretsBackend keeps a cluster's secrets, encrypted at rest. No method
// returns a value; errors never carry one.
type SecretsBackend interface {
	PutSecret(ctx context.Context, cluster, name string, value []byte, cas *uint64) (SecretMeta, error)
	GetSecret(ctx context.Context, cluster, name string) (SecretMeta, error)
	ListSecrets(ctx context.Context, cluster string) ([]SecretMeta, error)
	DeleteSecret(ctx context.Context, cluster, name string, cas *uint64) error
	// RewrapSecrets seals again, with the current key, every secret sealed
	// with another one (after a key rotation, before the old key goes).
	RewrapSecrets(ctx context.Context, cluster string) (RewrapReport, error)
}

// RewrapReport says what RewrapSecrets did.
type RewrapReport struct {
	Cluster   string   `json:"cluster"`
	KeyID     string   `json:"key_id"`    // the current (sealing) key
	Rewrapped []string `json:"rewrapped"` // sealed again with it
	Current   int      `json:"current"`   // already sealed with it
	// Failed: secrets this node cannot open (their key is gone): put them again.
	Failed []string `json:"failed"`
}

// WithSecrets serves /v1/secrets (policy "secrets", apart from "write").
func WithSecrets(s SecretsBackend) Option { return func(a *API) { a.secrets = s } }

func (a *API) secretRoutes() {
	a.handle("GET /v1/secrets", a.listSecrets)
	a.handle("GET /v1/secrets/{name}", a.getSecret)
	a.handle("PUT /v1/secrets/{name}", a.putSecret)
	a.handle("DELETE /v1/secrets/{name}", a.deleteSecret)
	a.handle("POST /v1/secrets/rewrap", a.rewrapSecrets)
}

func (a *API) rewrapSecrets(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	rep, err := a.secrets.RewrapSecrets(r.Context(), c)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, rep)
}

func secretName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := dispatch.ValidateName(name); err != nil {
		return "", Errorf(http.StatusBadRequest, "bad_request", "secret name: %s", nameProblem(err))
	}
	return name, nil
}

// nameProblem is a name error without the service wording.
func nameProblem(err error) string {
	if ve, ok := err.(*dispatch.ValidationError); ok {
		return ve.Message
	}
	return err.Error()
}

func (a *API) listSecrets(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	ms, err := a.secrets.ListSecrets(r.Context(), c)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []SecretMeta{}
	}
	return WriteJSON(w, http.StatusOK, ms)
}

func (a *API) getSecret(w http.ResponseWriter, r *http.Request) error {
	_, c, err := a.clusterQuery(r)
	if err != nil {
		return err
	}
	name, err := secretName(r)
	if err != nil {
		return err
	}
	m, err := a.secrets.GetSecret(r.Context(), c, name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, m)
}

func (a *API) putSecret(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := secretName(r)
	if err != nil {
		return err
	}
	var body struct {
		Value *string `json:"value"`
	}
	if err := decodeJSON(r, &body); err != nil {
		var e *Error
		if ae, ok := err.(*Error); ok {
			e = ae
			// The decoder's message may quote the body: say less.
			e.Message = `malformed JSON body: want {"value": "..."}`
			return e
		}
		return err
	}
	if body.Value == nil {
		return Errorf(http.StatusBadRequest, "invalid_secret", "value: missing; send {\"value\": \"...\"}")
	}
	v := []byte(*body.Value)
	switch {
	case len(v) < dispatch.MinSecretValue:
		return Errorf(http.StatusBadRequest, "invalid_secret", "value: shorter than %d bytes (a shorter value could not be redacted from output)", dispatch.MinSecretValue)
	case len(v) > dispatch.MaxSecretValue:
		return Errorf(http.StatusBadRequest, "invalid_secret", "value: longer than %d bytes", dispatch.MaxSecretValue)
	case !utf8.Valid(v) || containsNUL(v):
		return Errorf(http.StatusBadRequest, "invalid_secret", "value: must be UTF-8 text without NUL bytes")
	}
	m, err := a.secrets.PutSecret(r.Context(), c, name, v, cas)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, m)
}

func containsNUL(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

func (a *API) deleteSecret(w http.ResponseWriter, r *http.Request) error {
	q, c, err := a.clusterQuery(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := secretName(r)
	if err != nil {
		return err
	}
	if err := a.secrets.DeleteSecret(r.Context(), c, name, cas); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "deleted": true})
}
