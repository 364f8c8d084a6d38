package httpapi

import "time"

// StaleStatus is one cluster this node serves from its last known state
// because no quorum of its group is reachable (the node's -stale-serve-for):
// in /v1/status under "stale".
type StaleStatus struct {
	Cluster string `json:"cluster"`
	// Since: the first answer served from the last known state in this cut.
	Since time.Time `json:"since"`
	// AsOf: when that state was last known current.
	AsOf time.Time `json:"as_of"`
	// Serving: false once AsOf is older than the bound (/svc/ then
	// answers 503 no_quorum).
	Serving bool `json:"serving"`
}
