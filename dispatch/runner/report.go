package runner

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"

	"github.com/valyala/fasthttp"
)

// UpstreamError is an upstream failure before any response, reported to
// the caller (ServeProxyReport) instead of answered: the caller may try
// another upstream, or answer Status and Body itself.
type UpstreamError struct {
	Upstream string `json:"upstream"` // host:port
	Status   int    `json:"status"`   // the answer: 502, or 504 on a timeout
	Body     []byte `json:"body"`     // the answer's JSON body
	// Sent: the request may have reached the upstream (the connection was
	// made); false when it certainly did not (the dial failed).
	Sent bool `json:"sent"`
	// Refused: the upstream refused the connection.
	Refused bool `json:"refused,omitempty"`
	// BodyTaken: some of the request body may have been consumed where
	// the caller cannot replay it from.
	BodyTaken bool   `json:"body_taken,omitempty"`
	Msg       string `json:"msg"`
}

func (e *UpstreamError) Error() string { return e.Msg }

// ServeProxyReport is ServeProxy, except that an upstream failure before
// the response is returned as an *UpstreamError, nothing written to w.
// It also returns the upstream's status (0 when it sent none).
func (e *Executor) ServeProxyReport(w http.ResponseWriter, r *http.Request, upstream, path string) (int, error) {
	return e.serveProxy(w, r, upstream, path, true)
}

// Untaker is a FastRequest that can give its request back after a
// reported failure (nothing was written to its response).
type Untaker interface {
	UntakeRequestCtx()
}

func (e *Executor) reportFailure(r *http.Request, target *url.URL, err error) error {
	status, body := e.upstreamFailure(r.Context(), target, err)
	return &UpstreamError{Upstream: target.Host, Status: status, Body: body, Sent: !dialFailed(err),
		Refused: errors.Is(err, syscall.ECONNREFUSED), Msg: fmt.Sprintf("upstream %s: %v", target.Host, err)}
}

// dialFailed: err says the connection was never made, so the request
// cannot have reached the upstream.
func dialFailed(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fasthttp.ErrDialTimeout)
}
