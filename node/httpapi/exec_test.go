package httpapi

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
)

// An attempt marker reaches the client as its own event, not as output.
func TestEventWriterAttemptMarker(t *testing.T) {
	rr := httptest.NewRecorder()
	ew := (&API{cfg: DefaultConfig()}).newEventWriter(rr)
	ew.output(runner.Stdout, []byte("lost\n"))
	ew.output(dispatch.StreamAttempt, []byte("2"))
	ew.output(runner.Stdout, []byte("final\n"))
	if err := ew.finish(dispatch.Execution{}, errors.New("end")); err != nil {
		t.Fatal(err)
	}
	want := `{"stream":"stdout","data":"lost\n"}` + "\n" + `{"attempt":2}` + "\n" +
		`{"stream":"stdout","data":"final\n"}` + "\n" + `{"error":"end"}` + "\n"
	if got := rr.Body.String(); got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
