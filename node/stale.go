package node

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Serving without quorum. On the minority side of a partition no read of a
// cluster's group is linearizable, yet a gateway must keep serving its data
// plane: /svc/ calls (API port and -proxy) need only the service's
// definition, the cluster's ACL flag and the caller's token, and those come
// from this node's last known state (its replica, else a replica on this
// side of the cut: consensus StaleGet) while that state was known current
// less than -stale-serve-for ago. Writes and runs are never served so:
// a write needs the quorum to be acknowledged, and a run its durable record.
//
// The trade-off is Consul's acl.down_policy = "extend-cache": a token
// revoked, or a service changed, on the majority side during the cut is
// still what the minority serves, for at most the bound. With
// -acl-down-policy deny, tokens are never served stale (every request that
// needs one is refused), while public services and the ACL flag still are.

// wireStale lets the token, ACL flag and service caches answer from the
// last known state within the configured bound.
func (a *Agent) wireStale() {
	down := a.tokens.secrets.down
	down.log = a.log.With().Str("component", "stale").Logger()
	bound := a.cfg.StaleServeFor
	a.tokens.stale, a.execB.stale = a.cons, a.cons
	a.tokens.flags.maxStale, a.execB.services.maxStale = bound, bound
	a.tokens.staleTokens = a.cfg.ACLDownPolicy != config.ACLDownDeny
	a.tokens.secrets.maxStale = bound
	if !a.tokens.staleTokens {
		a.tokens.secrets.maxStale = 0 // deny: no token without a linearizable read
	}
	// With a stale answer to fall back on, a data-plane read waits out
	// two tries of a read index, not the whole operation timeout: a cut
	// costs the first calls after it about 2 s, not 5.
	wait := 2 * a.cons.ProposalTimeout()
	a.tokens.flags.linearWait, a.tokens.secrets.linearWait, a.execB.services.linearWait = wait, wait, wait
	a.reg.MustRegister(newStaleCollector(down))
}

// staleDefinitions lets a runner check a proxied request's upstream
// against the same last known state, within the same bound
// (dispatch/verifyhttp.go).
func staleDefinitions(s staleStore) dispatch.StaleDefinitions {
	return func(ctx context.Context, cluster, name string) (dispatch.Service, bool, time.Time, error) {
		it, ok, asOf, err := s.StaleGet(ctx, cluster, dispatch.ServiceKey(name))
		if err != nil || !ok {
			return dispatch.Service{}, false, asOf, err
		}
		svc, err := decodeService(it)
		return svc, err == nil, asOf, err
	}
}

// staleStore is what serving without quorum needs of consensus.
type staleStore interface {
	StaleGet(ctx context.Context, cluster, key string) (it fsm.Item, found bool, asOf time.Time, err error)
}

var _ staleStore = (*consensus.Manager)(nil)

// staleServing is one cluster this node answers from its last known state.
type staleServing struct {
	since   time.Time // the first answer served so
	asOf    time.Time // when the state of the latest answer was known current
	expired bool      // the latest answer was too old to serve
}

// staleAnswer registers an answer read from cluster's last known state at
// now, of a state known current at asOf (zero: never); it is an error (no
// quorum, too old) when bound has passed since asOf. The first one of a
// cut, and the first refused as too old, are logged.
func (d *groupsDown) staleAnswer(cluster string, now, asOf time.Time, bound time.Duration) error {
	if asOf.IsZero() {
		// Not known current since this node started (a restart during
		// the cut, a group still electing its first leader): nothing
		// to serve, and nothing new to log (the quorum watch does).
		return &staleTooOld{cluster: cluster, bound: bound, never: true}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.serving[cluster]
	if st == nil {
		if len(d.serving) >= maxClusters {
			clear(d.serving)
		}
		st = &staleServing{since: now}
		d.serving[cluster] = st
		d.log.Warn().Str("cluster", cluster).Dur("stale_serve_for", bound).Time("as_of", asOf).
			Msgf("no quorum for cluster %s reachable from here: serving /svc/ from this node's last known "+
				"state (current %s ago) for at most %s after that; writes and runs are refused until the "+
				"quorum is back", cluster, now.Sub(asOf).Round(time.Millisecond), bound)
	}
	if asOf.After(st.asOf) {
		st.asOf = asOf
	}
	if now.Sub(asOf) >= bound {
		if !st.expired {
			d.log.Warn().Str("cluster", cluster).Time("as_of", asOf).Dur("stale_serve_for", bound).
				Msgf("cluster %s: this node's last known state is now older than -stale-serve-for (%s): "+
					"/svc/ calls are refused (503) until the quorum is back", cluster, bound)
		}
		st.expired = true
		return &staleTooOld{cluster: cluster, age: now.Sub(asOf), bound: bound}
	}
	st.expired = false
	return nil
}

// freshLocked ends cluster's stale serving: a linearizable read went
// through again.
func (d *groupsDown) freshLocked(cluster string) {
	st, ok := d.serving[cluster]
	if !ok {
		return
	}
	delete(d.serving, cluster)
	d.log.Info().Str("cluster", cluster).Time("since", st.since).
		Msgf("quorum reads of cluster %s work again: /svc/ is served from fresh state, after %s from "+
			"this node's last known state", cluster, time.Since(st.since).Round(time.Millisecond))
}

// status lists the clusters served from their last known state, for
// /v1/status.
func (d *groupsDown) status() []httpapi.StaleStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]httpapi.StaleStatus, 0, len(d.serving))
	for c, st := range d.serving {
		out = append(out, httpapi.StaleStatus{Cluster: c, Since: st.since.UTC(), AsOf: st.asOf.UTC(), Serving: !st.expired})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// staleTooOld is the answer when the last known state may not serve: no
// quorum, and that state older than the bound (or never known current).
type staleTooOld struct {
	cluster    string
	age, bound time.Duration
	never      bool
}

func (e *staleTooOld) Error() string {
	if e.never {
		return fmt.Sprintf("no quorum for cluster %s reachable from here, and this node has not known its "+
			"state current since it started; retry later, or check that a majority of its voters is up and "+
			"they can reach each other", e.cluster)
	}
	return fmt.Sprintf("no quorum for cluster %s reachable from here, and this node's last known state of it "+
		"is %s old, older than -stale-serve-for (%s) allows to serve; retry later, or check that a majority "+
		"of its voters is up and they can reach each other", e.cluster, e.age.Round(time.Second), e.bound)
}

func (e *staleTooOld) Unwrap() error { return consensus.ErrNoQuorum }

// closedDown is the answer, at once, of a cache that may not serve from
// the last known state while the group is known to be down.
type closedDown struct{ cluster string }

func (e *closedDown) Error() string {
	return fmt.Sprintf("no quorum for cluster %s reachable from here, and this node does not serve it from its "+
		"last known state (-stale-serve-for 0, or -acl-down-policy deny for tokens); retry later, or check "+
		"that a majority of its voters is up and they can reach each other", e.cluster)
}

func (e *closedDown) Unwrap() error { return consensus.ErrNoQuorum }

// staleCollector exports which clusters this node serves from their last
// known state, and how old that state is.
type staleCollector struct {
	down         *groupsDown
	serving, age *prometheus.Desc
}

func newStaleCollector(d *groupsDown) *staleCollector {
	return &staleCollector{down: d,
		serving: prometheus.NewDesc("meshgw_stale_serving",
			"1 while this node serves the cluster's data plane from its last known state (no quorum reachable), "+
				"0 when that state is too old to serve (-stale-serve-for).", []string{"cluster"}, nil),
		age: prometheus.NewDesc("meshgw_stale_state_age_seconds",
			"Age of the last known state this node serves the cluster from, without quorum.", []string{"cluster"}, nil)}
}

func (c *staleCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.serving; ch <- c.age }

func (c *staleCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range c.down.status() {
		v := 0.0
		if s.Serving {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.serving, prometheus.GaugeValue, v, s.Cluster)
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(s.AsOf).Seconds(), s.Cluster)
	}
}

// staleNoQuorum adds to a run's no-quorum answer why runs, unlike /svc/
// calls, are not served from the last known state.
func staleNoQuorum(err error) error {
	var he *httpapi.Error
	if !errors.As(err, &he) || he.Code != "no_quorum" {
		return err
	}
	e := *he
	e.Message += "; runs need the quorum, since each is recorded durably in the cluster's group " +
		"(/svc/ calls of http services go on from this node's last known state)"
	return &e
}
