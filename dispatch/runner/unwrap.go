package runner

import "net/http"

// Find returns the first writer of w's Unwrap chain (w itself first) that
// is a T: the data plane's capabilities (FastRequest, BodyStreamer,
// Upgrader) must not be hidden by a writer wrapping it to record the
// status (node's metrics do).
func Find[T any](w http.ResponseWriter) (T, bool) {
	for w != nil {
		if t, ok := w.(T); ok {
			return t, true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	var zero T
	return zero, false
}

// StatusRecorder is a wrapping writer that records the status it passes
// on; RecordStatus tells it of a status set beneath it, by a path that
// bypassed its WriteHeader (the fast path fills the server's response
// itself).
type StatusRecorder interface {
	RecordStatus(code int)
}

// recordStatus tells every StatusRecorder of w's chain of code.
func recordStatus(w http.ResponseWriter, code int) {
	for w != nil {
		if r, ok := w.(StatusRecorder); ok {
			r.RecordStatus(code)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}
