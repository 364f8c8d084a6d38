// Package upstreams owns what a gateway decides about an http service's
// upstreams and routes: which upstream a request goes to, whether an
// upstream is in rotation, and which service a Host and path belong to.
// dispatch uses it on the proxy hot path; node feeds it (the service
// definitions, the health observations peers share) and runs its checker.
// It imports no meshgw package.
//
// # Balancing (Registry)
//
// Each node keeps, per service, smooth weighted round-robin over the
// upstreams in rotation (nginx's: every pick adds each weight to its
// upstream's current value, takes the largest and subtracts the total, so
// 9:1 weights give exactly 9 of every 10 picks, interleaved). A sticky
// service (a header or cookie value) picks by weighted rendezvous
// hashing instead: the same value keeps its upstream while that upstream
// stays in rotation, and only the values of an upstream that leaves move.
//
// An upstream is in rotation when the shared health verdict says healthy
// (Health), it is not passively ejected, and its circuit breaker lets the
// request through. Passive ejection: EjectAfter consecutive connect
// errors or 5xx take it out of this node's rotation for EjectBase,
// doubling with each ejection in a row up to EjectMax. Breaker: over the
// last BreakerWindow, at least BreakerMinRequests with an error rate of
// BreakerErrorRate or more open it for BreakerOpen; then one request at
// a time probes (half-open): a success closes it, a failure opens it
// again. Ejection and breaker are this node's own: they act on what its
// own traffic saw, never on others'. With no upstream in rotation Pick
// fails with a *NoHealthyError (503), unless the service fails open, when
// every upstream is tried.
//
// Retries (the caller's, on another upstream) are bounded by a budget per
// service: at most RetryRatio of the requests of the last window, plus
// RetryMin, so a failing upstream cannot multiply the load on the others.
//
// # Shared health (Health, Checker)
//
// Every runner checks every upstream of the services that have a health
// check (Checker: an HTTP GET every interval, hysteresis: unhealthy after
// unhealthy_after failures in a row, healthy again after healthy_after
// passes in a row) and shares its verdicts with the other nodes of its
// cluster (node sends them; Health.Observe takes them in). A verdict
// says whether the observer is certain: its failures were refusals
// (connection refused) or answers (a bad status), not timeouts, which an
// overloaded observer produces by itself. Every node applies the same
// rule to the verdicts reported within their TTL:
//
//   - no recent observer: in rotation (passive ejection still acts);
//   - one observer: out only if it says unhealthy and is certain;
//   - two or more: out only if a strict majority says unhealthy.
//
// So one CPU-saturated runner whose checks time out cannot take a healthy
// upstream out for anyone while another observer sees it pass.
//
// # Routes (Table)
//
// A Table maps (Host, path) to a service: routes of the request's host
// first, then routes for any host, the longest matching prefix winning; a
// prefix matches at a segment boundary ("/v2/" and "/v2" both match
// "/v2" and "/v2/x", never "/v2x"). Strip removes the prefix. The table
// is built from the replicated service definitions, so every node that
// read the same state has the same table (Revision says which).
package upstreams
