package httpapi

import (
	"context"
	"net/http"
	"strings"
)

// CacheServiceStats are a service's response-cache figures, summed over
// the nodes that answered. Entries and Bytes count every copy (each entry
// is held by two nodes).
type CacheServiceStats struct {
	Service  string  `json:"service"`
	Entries  int64   `json:"entries"`
	Bytes    int64   `json:"bytes"`
	Hits     int64   `json:"hits"`
	Misses   int64   `json:"misses"`
	HitRatio float64 `json:"hit_ratio"`
}

// CacheNodeStatus says whether a node's figures are in the report.
type CacheNodeStatus struct {
	Node  string `json:"node"`
	Error string `json:"error,omitempty"`
	// Serving: the node answers hits (it read the purge records less
	// than the bound ago); false, it sends every request upstream.
	Serving bool `json:"serving"`
}

// CacheReport is GET /v1/cache.
type CacheReport struct {
	Services []CacheServiceStats `json:"services"`
	Nodes    []CacheNodeStatus   `json:"nodes"`
}

// CachePurge is DELETE /v1/cache/{service}'s answer: returned once no
// node serves a purged entry.
type CachePurge struct {
	Service      string   `json:"service"`
	Prefix       string   `json:"prefix,omitempty"`
	Epoch        uint64   `json:"epoch"`
	Acknowledged []string `json:"acknowledged"`
	// Waited: some node could not acknowledge, so the purge waited out
	// the bound after which such a node serves no hit.
	Waited bool `json:"waited"`
}

// CacheBackend is the response cache of the local cluster.
type CacheBackend interface {
	CacheReport(ctx context.Context) (CacheReport, error)
	PurgeCache(ctx context.Context, service, prefix string) (CachePurge, error)
}

// WithCache serves GET /v1/cache (policy read) and DELETE
// /v1/cache/{service} (policy write) from c.
func WithCache(c CacheBackend) Option { return func(a *API) { a.cache = c } }

// maxPurgePrefix bounds ?prefix= of a purge.
const maxPurgePrefix = 1024

func (a *API) cacheRoutes() {
	a.handle("GET /v1/cache", func(w http.ResponseWriter, r *http.Request) error {
		if _, err := query(r); err != nil {
			return err
		}
		rep, err := a.cache.CacheReport(r.Context())
		if err != nil {
			return err
		}
		return WriteJSON(w, http.StatusOK, rep)
	})
	a.handle("DELETE /v1/cache/{service}", func(w http.ResponseWriter, r *http.Request) error {
		q, err := query(r, "prefix")
		if err != nil {
			return err
		}
		svc := r.PathValue("service")
		if err := checkName("service", svc, false); err != nil {
			return err
		}
		prefix := q.Get("prefix")
		if prefix != "" && (!strings.HasPrefix(prefix, "/") || len(prefix) > maxPurgePrefix) {
			return Errorf(http.StatusBadRequest, "bad_query", "prefix %q: a path below the service, starting with '/', at most %d bytes", prefix, maxPurgePrefix)
		}
		res, err := a.cache.PurgeCache(r.Context(), svc, prefix)
		if err != nil {
			return err
		}
		return WriteJSON(w, http.StatusOK, res)
	})
}
