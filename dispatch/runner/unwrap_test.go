package runner

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

type streamer struct{ *httptest.ResponseRecorder }

func (streamer) SetBodyStream(io.ReadCloser, int64) {}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
func (r *recorder) RecordStatus(code int)       { r.code = code }

// A wrapping writer with Unwrap hides none of what is beneath it, and
// hears of a status set there.
func TestFindThroughWrappers(t *testing.T) {
	inner := streamer{httptest.NewRecorder()}
	w := &recorder{ResponseWriter: &recorder{ResponseWriter: inner}}
	if _, ok := Find[BodyStreamer](w); !ok {
		t.Fatal("BodyStreamer hidden by wrappers")
	}
	if _, ok := Find[FastRequest](w); ok {
		t.Fatal("found a FastRequest that is not there")
	}
	recordStatus(w, 503)
	if w.code != 503 || w.ResponseWriter.(*recorder).code != 503 {
		t.Fatal("status not recorded through the chain")
	}
}
