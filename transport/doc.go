// Package transport is meshgw's node-to-node RPC: QUIC (quic-go) with mutual
// TLS, one connection per peer reused across calls, one stream per call, and
// a small length-prefixed framing with a hard size bound (frame.go documents
// the wire format, ALPN "meshgw/1").
//
// Exchange is a streaming call on a lane instead: a stream kept open and
// reused for one exchange after another to the same peer, one at a time,
// so a hot path of short exchanges sets up no stream per request (lane.go
// says how lanes end, break, time out and are bounded — Config.LanesPerPeer,
// Config.LaneIdleTimeout — and how a peer of an earlier build, which has
// none, is still served).
//
// Payloads are opaque bytes: callers (consensus, dispatch) own their
// encodings. Buffer ownership: a response returned by Call, a message
// returned by Stream.Recv and Request.Body belong to the receiver (they are
// never reused by the transport); bodies passed to Call, Stream.Send,
// StreamFirst, Stream.SendLast or returned by a Handler are copied before
// the call returns, so the caller
// may reuse them afterwards.
//
// Errors: ErrUnreachable (wrapped) means the peer or the connection is gone —
// retry elsewhere; *RemoteError is what the peer's handler returned (Errorf
// chooses its code; plain errors and panics arrive as "internal", unknown
// methods as "no_handler"); ErrFrameTooLarge and ErrClosed are permanent for
// that call; a ctx deadline arrives as context.DeadlineExceeded.
//
// consensus and dispatch import it (and node wires it); transport imports no
// other meshgw package except transport/tlsutil in tests.
package transport
