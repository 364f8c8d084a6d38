package transport

import (
	"context"
	"errors"
	"fmt"
)

var (
	// ErrClosed: this Transport is closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnreachable: the peer is gone or the connection (or stream) broke:
	// dial or handshake failure, idle timeout, stateless reset, the peer
	// closing its transport. The request may or may not have been handled:
	// the caller may retry an idempotent request on another peer, and any
	// request when the error is also ErrNotSent. Always wrapped with the
	// cause.
	ErrUnreachable = errors.New("transport: peer unreachable")
	// ErrNotSent: the call failed before any byte of the request left this
	// node (no connection to the peer, or no stream on it), so the peer
	// cannot have handled it: a caller may retry it anywhere, even a write
	// that must not apply twice. Wraps alongside the cause (and
	// ErrUnreachable when the peer is gone). A failure after the request
	// was written does not carry it: its outcome is unknown.
	ErrNotSent = errors.New("transport: request not sent")
	// ErrRefused: the TLS handshake with the peer failed on a certificate,
	// theirs refused here or ours refused there (a foreign CA, an expired
	// or misnamed certificate). Retrying will not help until one side's
	// TLS material changes. Wraps alongside ErrUnreachable and the cause.
	ErrRefused = errors.New("transport: TLS refused")
	// ErrFrameTooLarge: a frame is bigger than MaxFrameSize (ours or the
	// peer's); it was not sent, or not allocated when received.
	ErrFrameTooLarge = errors.New("transport: frame too large")
)

// Codes of RemoteErrors produced by the transport itself.
const (
	CodeInternal   = "internal"        // handler returned a plain error or panicked
	CodeNoHandler  = "no_handler"      // no handler for the method (or wrong kind)
	CodeBadRequest = "bad_request"     // malformed request frame
	CodeTooLarge   = "frame_too_large" // a frame exceeded the receiver's bound
	CodeDeadline   = "deadline"        // the handler ran out of the caller's time
	CodeForbidden  = "forbidden"       // Config.Authorize refused the caller
)

// RemoteError is the error a peer's handler returned. Handlers choose the
// code with Errorf; any other error arrives with Code "internal".
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message == "" {
		return "remote error: " + e.Code
	}
	return "remote error: " + e.Code + ": " + e.Message
}

// Is matches another *RemoteError with the same Code, so
// errors.Is(err, &RemoteError{Code: "not_found"}) works. A peer's
// "frame_too_large" also matches ErrFrameTooLarge.
func (e *RemoteError) Is(target error) bool {
	if target == ErrFrameTooLarge {
		return e.Code == CodeTooLarge
	}
	t, ok := target.(*RemoteError)
	return ok && t.Code == e.Code
}

// Errorf returns an error a handler can return to send code and a message
// to the caller, who receives it as *RemoteError.
func Errorf(code, format string, args ...any) error {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// toRemote converts a handler error to what goes on the wire.
func toRemote(err error) *RemoteError {
	var re *RemoteError
	if errors.As(err, &re) {
		return re
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &RemoteError{Code: CodeDeadline, Message: err.Error()}
	}
	return &RemoteError{Code: CodeInternal, Message: err.Error()}
}
