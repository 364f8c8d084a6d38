package httpapi

import (
	"net/http/httptest"
	"testing"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
)

// An attempt marker reaches the client as its own event, not as output.
func TestEventWriterAttemptMarker(t *testing.T) {
	rr := httptest.NewRecorder()
	ew := newEventWriter(rr)
	ew.output(runner.Stdout, []byte("lost\n"))
	ew.output(dispatch.StreamAttempt, []byte("2"))
	ew.output(runner.Stdout, []byte("final\n"))
	want := `{"data":"lost\n","stream":"stdout"}` + "\n" + `{"attempt":2}` + "\n" +
		`{"data":"final\n","stream":"stdout"}` + "\n"
	if got := rr.Body.String(); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
