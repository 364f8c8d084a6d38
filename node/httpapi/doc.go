// Package httpapi serves meshgw's client HTTP API (JSON) over a Backend the
// package declares, so it can be tested without a mesh; and, for a listener
// of its own, the same handler's /svc/ routes on fasthttp (DataPlane).
//
// Both listeners decide with one implementation of every rule: routing,
// the cluster and token checks, the credential strip, the path check,
// limits and the central log entry read a request through Request, which
// net/http's request (netRequest) and fasthttp's (fastRequest) both are.
// The data plane so serves a plain /svc/ call without building an
// *http.Request, and an ExecBackend that is a FastProxy answers it in
// place or from the cache on fasthttp's request; what only net/http's
// types can carry (an upgrade, a chunked upload, an escaped or uncleaned
// path, a gateway hop) is converted and served by the same handler.
//
// It owns request parsing and bounds (body size, query validation), the
// error shape {"error","code"} with fitting status codes, and the mapping of
// routes to Backend calls. It knows nothing of gossip, Raft or QUIC. Only
// node imports httpapi.
//
// # Who may call what
//
// A request is for one cluster: on the routes that act on a cluster's
// state (/v1/services..., /v1/executions..., /svc/..., /v1/snapshot,
// /v1/acl/..., /v1/secrets..., /v1/decorators...) the one its ?cluster= names, else the receiving node's own;
// the other routes (members, runners, status, clusters, keyring, leave,
// metrics) are about the node or the mesh and are for the node's own
// cluster. A cluster's ACLs are on when its replicated state says so (a
// node of it started with -acl records that) or, on that node, from its
// flag; once on they stay on.
//
//	request for cluster T, served by a node N   checked?  token looked up in
//	T's ACLs on (any N, -acl or not)            yes       T's group only
//	T's ACLs off, N started with -acl           yes       T's group only
//	T's ACLs off, N started without -acl        no        -
//
// A checked request needs a token of T (401 without one or with another
// cluster's) whose policies grant the route's permission (403):
//
//	GET /v1/health                              open, never checked
//	GET /metrics on a node with -metrics-public open, never checked (counts only)
//	GET /, /ui/... (the web console's assets)  open, never checked (no data: the
//	                                            page calls the API with a token)
//	POST /v1/acl/bootstrap                      open, once per cluster, only
//	                                            through a node of T with T's
//	                                            ACLs on (403/400 otherwise)
//	GET /v1/acl/whoami                          any token of T
//	/v1/acl/tokens, /v1/keyring, /v1/snapshot,
//	/v1/agent/leave                             manage
//	/svc/{name}/ of a "public" http service     open (token neither read
//	                                            nor needed; still stripped)
//	POST /v1/services/{name}/run, /svc/{name}/  run, or run:GLOB matching name
//	POST /v1/executions/{id}/cancel             run, or run:GLOB matching the
//	                                            execution's service, or write
//	POST /v1/import                             manage (it may create schedules)
//	PUT /v1/schedules/{name}                    write, and run (or run:GLOB) on
//	                                            the schedule's service
//	/v1/secrets, /v1/secrets/{name} (any       secrets (or manage); read, write
//	method)                                     and run do not grant it, and no
//	                                            route ever returns a value
//	a -proxy request routed by Host or path     as /svc/{name}/ of the service
//	prefix (a service's hosts and paths)        the route names (routes.go)
//	GET /v1/routes                              read
//	other GET and HEAD                          read (write and manage imply it)
//	other methods (service writes, restore)     write
//	GET /v1/logs (also follow=true)             manage: the central log holds
//	                                            every caller's IP and token
//	                                            accessor (GET /v1/kpis, which
//	                                            holds neither, is read)
//
// The token is read from Authorization: Bearer, else X-Meshgw-Token; for a
// /svc/ call to a "pass_authorization" service from X-Meshgw-Token only,
// and Authorization then goes to the upstream untouched. Whatever meshgw
// read its token from never reaches an upstream.
//
// Answers about tokens, and the service definitions public and
// pass_authorization come from (ProxyPolicies), may be reused for up to a
// second, counted from the start of the read: a revocation is refused on
// every node within a second. While T's group has no quorum a token or
// service read in the last 5 minutes still serves; an unknown token is 503
// (it cannot be checked). A definition that cannot be read at all counts as
// neither public nor passing Authorization: the call needs a token.
//
// While T's state cannot be read (no group yet, no quorum) a node without
// -acl cannot tell: it keeps serving its own read-only views (GET members,
// runners, status, clusters, metrics), so an operator can see why, and
// answers everything else 503. ("On" once seen is remembered, and a node
// with -acl always checks.)
//
// Writes of T's tokens (create, revoke) and a restore of T's state are
// served only by a node of T: a replica of T refuses them from a node of
// another cluster (403 forbidden; node's package comment has the RPC
// table), so T's authority never depends on another cluster's nodes.
//
// Token management (create, list, revoke) is refused (400) for a cluster
// whose request is not checked, so no token can be minted in an open
// cluster to become valid the day it turns ACLs on. The keyring is the
// mesh's, not one cluster's: a manage token of any cluster that reaches it
// can rotate it.
package httpapi
