// Package runner executes work on a runner node: exec services (a process
// with the input on stdin, a scrubbed environment, a timeout that kills the
// whole process group, capped output streamed while it runs) and http
// services (a streaming reverse proxy to the upstream over a keep-alive
// pool). Concurrency is bounded: excess calls fail fast with ErrBusy, there
// is no unbounded queue.
//
// runner knows nothing of the mesh: dispatch feeds it requests received over
// the transport. Only dispatch imports runner.
package runner
