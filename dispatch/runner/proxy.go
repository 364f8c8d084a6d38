package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// ErrHeaderTooLarge: the request headers exceed Config.MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("runner: request headers too large")

// ServeProxy proxies r to upstream (an http(s) base URL) with path (and r's
// raw query) appended: method, headers, body and status are preserved,
// hop-by-hop headers are dropped, X-Forwarded-For gets r.RemoteAddr's IP
// appended, and bodies stream both ways (the response is flushed as it
// arrives). Upstream connections come from a keep-alive pool.
//
// It returns an error, having written nothing, when it does not proxy at
// all: ErrBusy (at Config.MaxConcurrentHTTP), ErrHeaderTooLarge, ErrInvalid
// (bad upstream or path), ErrClosed. Upstream failures are answered with
// 502 (504 on a header timeout) and a JSON error body.
func (e *Executor) ServeProxy(w http.ResponseWriter, r *http.Request, upstream, path string) error {
	if e.closed.Load() {
		return ErrClosed
	}
	target, err := url.Parse(upstream)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return fmt.Errorf("%w: upstream %q is not an http(s) URL", ErrInvalid, upstream)
	}
	if path == "" {
		path = "/"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if headerSize(r.Header) > e.cfg.MaxHeaderBytes {
		return ErrHeaderTooLarge
	}
	select {
	case e.httpSem <- struct{}{}:
	default:
		return ErrBusy
	}
	defer func() { <-e.httpSem }()

	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Path = path
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.SetURL(target)
			// Keep the incoming chain and append this hop's client.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			// SetURL rewrites Host to the upstream's; that is what a
			// backend behind a gateway expects.
		},
		Transport:     e.client,
		// 0: a response of known length goes out in one write at its end;
		// ReverseProxy flushes every write of a streamed one (unknown
		// length, or text/event-stream) by itself.
		FlushInterval: 0,
		ErrorLog:      e.errorLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, code := http.StatusBadGateway, "upstream_unreachable"
			if isTimeout(err) {
				status, code = http.StatusGatewayTimeout, "upstream_timeout"
			}
			if r.Context().Err() != nil {
				// The caller is gone; nobody reads this answer.
				e.log.Debug().Err(err).Str("upstream", upstream).Msg("proxy canceled")
			} else {
				e.log.Debug().Err(err).Str("upstream", upstream).Msg("upstream error")
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(map[string]string{
				"error": fmt.Sprintf("upstream %s: %v", target.Host, err),
				"code":  code,
			})
		},
	}
	rp.ServeHTTP(w, r)
	return nil
}

func headerSize(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
