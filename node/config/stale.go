package config

import "time"

// What a node serves when its cluster's group has no quorum it can reach
// (the minority side of a partition). docs/PARTITIONS.md has the trade-off.
const (
	// DefaultStaleServeFor is -stale-serve-for's default.
	DefaultStaleServeFor = 5 * time.Minute
	// maxStaleServeFor bounds it: a revocation on the majority side stays
	// unseen on the minority for this long.
	maxStaleServeFor = 24 * time.Hour
	// ACLDownDeny refuses every request that needs a token while the
	// cluster's tokens cannot be read linearizably (Consul's "deny").
	ACLDownDeny = "deny"
	// ACLDownExtendCache checks tokens against this node's last known
	// state, within -stale-serve-for (Consul's "extend-cache").
	ACLDownExtendCache = "extend-cache"
)

// validateStale checks -stale-serve-for and -acl-down-policy.
func (r *Runtime) validateStale() error {
	if r.StaleServeFor < 0 || r.StaleServeFor > maxStaleServeFor {
		return fieldErr("stale-serve-for", "%s is not between 0 (never serve without quorum) and %s",
			r.StaleServeFor, maxStaleServeFor)
	}
	switch r.ACLDownPolicy {
	case ACLDownDeny, ACLDownExtendCache:
	default:
		return fieldErr("acl-down-policy", "%q (want %s or %s)", r.ACLDownPolicy, ACLDownExtendCache, ACLDownDeny)
	}
	return nil
}
