package httpapi

import (
	"net/http"
	"time"
)

// RequestObserver is told about every request the API served, for
// metrics: route is the matched ServeMux pattern ("GET /v1/health"; "/"
// for no route), never the request's path, so its values are bounded;
// code is the status sent (200 when the handler wrote nothing; the status
// already sent, or 0, when the handler aborted the connection).
type RequestObserver func(route string, code int, took time.Duration)

// WithRequestObserver calls o after every request.
func WithRequestObserver(o RequestObserver) Option { return func(a *API) { a.observe = o } }

// observed serves r through serve and reports it to a.observe.
func (a *API) observed(w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *http.Request)) {
	_, route := a.mux.Handler(r)
	sw := &StatusWriter{ResponseWriter: w}
	start := time.Now()
	defer func() {
		v := recover()
		code := sw.Code
		if code == 0 && v == nil {
			code = http.StatusOK
		}
		a.observe(route, code, time.Since(start))
		if v != nil {
			panic(v)
		}
	}()
	serve(sw, r)
}

// StatusWriter records the status a handler sends. It passes Flush on and
// unwraps for http.ResponseController, so streaming and full-duplex
// handlers behave as without it.
type StatusWriter struct {
	http.ResponseWriter
	Code int // 0 until WriteHeader or Write
}

// WriteHeader records the first status.
func (w *StatusWriter) WriteHeader(code int) {
	if w.Code == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.Code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *StatusWriter) Write(p []byte) (int, error) {
	if w.Code == 0 {
		w.Code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Flush flushes the underlying writer when it can.
func (w *StatusWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// RecordStatus implements runner.StatusRecorder: the data plane's fast
// path sets the status beneath this writer.
func (w *StatusWriter) RecordStatus(code int) {
	if w.Code == 0 {
		w.Code = code
	}
}

// Unwrap is for http.ResponseController.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
