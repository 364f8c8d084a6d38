// Package dispatch owns service execution: the service and execution data
// model, runner choice among live members, forwarding an execution to the
// chosen runner over the transport package, retries on another runner, and
// the durable execution record kept in the cluster's replicated state.
//
// dispatch imports transport (and its own dispatch/runner) only. Membership
// and the replicated store reach it through the Runners and Store
// interfaces it declares; node adapts gossip and consensus to them. Only
// node imports dispatch.
//
// # Executions
//
// Run validates the input against the service's decorator (JSON Schema)
// before anything is written or run, picks a live runner (role runner,
// gossip status alive, matching runner_tags; round-robin per service or
// least-loaded by this node's in-flight count; runners whose last call
// failed as unreachable sit in a short penalty box), and records the
// execution under exec/<id> (IDs sort by creation time):
//
//	sync:  running(attempt 1) → terminal           (2 writes)
//	async: queued → running(attempt n) → terminal  (answer after "queued")
//
// Each attempt is written before it is forwarded; the version of that write
// fences the attempt: the result is written by CAS on it, so a node that
// lost the execution (a recovery took it over) cannot overwrite a newer
// attempt. An attempt that ends with transport.ErrUnreachable, whose runner
// does not acknowledge it within Config.AckTimeout (a hung runner: the
// acknowledgement comes before the process starts), or that does not
// finish within the service timeout plus Config.AttemptGrace, is retried on
// another runner while the service's retries last;
// then the execution ends "lost". A non-zero exit is "failed", not retried.
//
// # Scheduled runs
//
// RunOptions.With adds writes to the command that creates the first
// record (the queued one of an async run), and Schedule and ScheduledAt
// are kept in it: the scheduler (package schedule, through node) moves a
// schedule's state to a tick in the same command that records the tick's
// execution, so the two happen together or not at all; a failed compare
// on one of those writes is ErrConflict and nothing is written.
//
// # Cancel
//
// Cancel, on any node, ends an execution "cancelled" (terminal, like
// succeeded, failed, timed_out and lost). A queued one is ended at once by
// CAS, so its driver's claim fails and it never starts. For a running one
// the request is first written into the record (CancelRequestedAt, by CAS
// on the version read, kept in CancelBase), then the driving node (the
// record's Owner) is signalled, directly or by MethodCancel, which only a
// member of the mesh may call: it cancels the attempt (the runner kills
// the process group: SIGTERM, SIGKILL after its grace) and writes the
// cancelled record. A driver's write that conflicts with exactly that
// request adopts it and writes again; recovery ends an abandoned execution
// whose cancel was requested "cancelled" and never re-runs it. Cancel is
// idempotent: a cancelled execution is returned as it is, one that ended
// otherwise with ErrAlreadyFinished (also when the process ended by itself
// before the cancel took effect).
//
// # Record size
//
// A record always fits the store's value limit, MaxRecordSize, as
// encoded: JSON without HTML escaping, its input kept first (whole, as
// base64 when it is not valid UTF-8, since a re-run feeds it to the
// process), stdout and stderr sharing the rest, cut at rune boundaries
// with runner.TruncationMarker and Truncated (InputTruncated) set; a
// record that cannot fit even so is written without input and output, the
// reason in Error. The store's refusal of a value as too large is
// ErrTooLarge, permanent: never retried as an unknown outcome.
//
// # Recovery and retention
//
// Maintain runs both passes for a cluster until its context ends: the
// agent calls it as the work of the cluster's singleton retention role
// (package roles), on the Raft leader after its lease, with a context that
// ends when the leadership does and carries the role's fence, which the
// store adapter adds to the retention deletions. Without roles, the
// dispatcher runs the same passes for Config.Clusters itself while
// Store.IsLeader.
//
// The active instance scans the non-terminal executions every
// Config.RecoveryInterval. One whose owner is failed, left or unknown in
// gossip, or whose lease (attempt deadline or queue lease) has lapsed, is
// taken over: a synchronous one is marked lost
// (its client went with its node), an async one is re-dispatched as a new
// attempt. The leader also deletes the oldest terminal records beyond
// Config.RetentionCount or Config.RetentionBytes (their total encoded size:
// every voter holds them in memory) or older than Config.RetentionAge, in
// bounded batches; a record and its idempotency key are deleted in one
// command, and a key found without its record is treated as absent (a new
// run replaces it). Both passes read only the recent part of the key space
// in steady state (a cursor below which everything is terminal; a sliding
// retention window whose in-flight records are re-measured as they grow),
// with a full scan every minute (recovery) or hour (retention).
//
// Delivery is at least once: an async execution whose owner died while its
// process ran on a surviving runner is run again. A sync execution is never
// re-run behind its client's back.
//
// # RPC
//
// A runner serves MethodExec (request frame, acknowledgement, output frames
// while the process runs, result frame) and MethodHTTP (request header frame
// and body frames one way; response header frame and body frames the
// other; the header frames binary, httpwire.go, and a small exchange one
// write each way; a request without a body reaches a plain-http upstream
// through fasthttp's client, httpfast.go). A gateway calls MethodHTTP on a
// transport lane (transport.Exchange: successive requests to a runner
// reuse a stream; an upgrade takes a stream of its own), and a data-plane
// request that needs no balancing is framed straight from fasthttp's
// request and answered into its response (ProxyHop, hopfast.go). Any
// member of the mesh may call MethodExec, so a runner runs
// only services of its own cluster (Config.Cluster) as that cluster's
// replicated state defines them: it resolves the service by name (a copy
// read linearizably, reused while the request's ServiceVersion is not
// newer, for at most a second) and refuses a request whose command, env,
// dir, user, timeout, source (repository URL and ref included) or secrets
// list differs, or whose input the decorator rejects (verify.go). A
// refusal ("refused", or "service_changed" when the definition was
// rewritten after the execution was accepted) fails the execution, never
// retried on another runner: every runner reads the same state. A runner
// that cannot read the state ("unverified") is skipped like a busy one.
// The caller still chooses the input, the secret values and repository
// credentials it read for the attempt.
//
// MethodHTTP's header frame names the service, its cluster and the
// definition version the gateway read, and the runner proxies only to an
// upstream its own cluster's definition of that service names ("upstream"
// or one of "upstreams", compared on scheme, userinfo, host, port and base
// path after normalization), as the definition spells it, with its own
// TLS, timeout and header rules: nothing else the caller sends decides
// where the request goes (verifyhttp.go). The same codes answer a
// mismatch: "refused" (ProxyHTTP: ErrProxyRefused, 502), "service_changed"
// (ErrServiceChanged, 503; a request without a body is first retried once
// with the definition read again), "unverified" (another runner is tried;
// ErrUnverified, 503, when none could check). Without quorum the runner
// checks against its last copy, or the node's last known state
// (Config.StaleDefinitions), for Config.StaleServeFor, as gateways serve
// /svc/. A frame without a service (an earlier build's gateway) must name
// an upstream of some http service of the cluster. Proxying in place (the
// gateway is the runner: ProxyInPlace, ProxyHTTP's local branch) uses this
// node's own read of the definition and is not checked.
// Every node serves MethodCancel (above) and MethodWatch: the live output of the executions
// it drives, so Watch on any node streams output while the process runs
// (from the next driving node when a recovery moves the execution, and
// from the record, at the end, when no driving node can stream).
//
// # HTTP upstreams
//
// For an http service with several upstreams or a health check the
// gateway picks the upstream (dispatch/upstreams: weights, stickiness,
// shared health, this node's ejection and breaker) and sends it in the
// header frame with Report set: an upstream failure before the response
// then comes back as code "upstream" (runner.UpstreamError) instead of a
// 502, and the request is tried on another upstream when it cannot have
// reached the first (the dial failed) or is idempotent, its body can be
// sent again, and the service's retry budget allows (balance.go). A
// request asking to switch protocols (WebSocket) keeps the gateway's send
// side open; after the runner's 101 header frame the stream carries the
// raw bytes both ways (upgrade.go).
//
// # Attempts in the output stream
//
// A retry starts its output from nothing, so a stream says where each
// attempt begins: before the output of every attempt but the first comes
// an attempt marker, "attempt N started" (a tagAttempt frame on
// MethodWatch; StreamAttempt with the decimal number to the callbacks of
// Watch and RunOptions.OnOutput; {"attempt": N} in the HTTP API's NDJSON
// events). Output before it belongs to a lost attempt and should be
// discarded; the output after the last marker equals the terminal
// record's (up to the record's cap). The live buffer holds the current
// attempt only, and Watch counts what it relayed per attempt, so the
// record fills in only the final attempt's missing part — or all of it,
// after a marker, when the stream showed another attempt.
//
// # Services from Git and script kinds
//
// An exec service may name a repository (Repository, stored under
// repository/<name>) and a path in it; types python and ansible build
// their argv on the runner from the path and the input (source.go). The
// driving node reads the repository, and the value of its credentials
// secret through the SecretSource set with SetSecrets, at each attempt,
// and sends them in the request (sourceWire) over the mutual-TLS link:
// never in a record or a log. The runner resolves the ref in its
// dispatch/gitsrc cache (Config.SourceDir; a fetch at most every poll),
// runs the file from the commit's checkout, and returns the commit with
// the result: Execution.Commit. The service timeout covers the fetch,
// the checkout and a venv's installation as well as the run. A source
// that cannot be prepared is a failed run (not retried), its reason in
// Error.
// # Secrets
//
// A service's Secrets name secrets of the cluster (SecretKey). Before each
// attempt the driving node asks its SecretSource (node: the store and the
// secrets key) for their values and sends them in the exec request, to the
// attempt's runner only; they are never in a record, a log line or an
// error. The runner (runner.ExecRequest.Secrets) sets the environment or
// writes the files and redacts the values from the output before it
// leaves, so the answer, the record and MethodWatch see only
// "[redacted:NAME]". A secret that is missing fails the run, naming it.
package dispatch
