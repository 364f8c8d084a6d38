// Package dispatch owns service execution: the service and execution data
// model, runner choice among live members, forwarding an execution to the
// chosen runner over the transport package, retries on another runner, and
// the durable execution record kept in the cluster's replicated state.
//
// dispatch imports transport only. Membership and the replicated store reach
// it through the Runners and Store interfaces it declares; node adapts
// gossip and consensus to them.
package dispatch
