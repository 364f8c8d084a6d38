// Package transport is meshgw's node-to-node RPC: QUIC (quic-go) with mutual
// TLS, one connection per peer reused across calls, one stream per call, and
// a small length-prefixed framing with a hard size bound.
//
// Payloads are opaque bytes: callers (consensus, dispatch) own their
// encodings. transport imports no other meshgw package.
package transport
