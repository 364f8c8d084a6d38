package throttle

import (
	"context"
	"testing"
	"time"
)

// Asks a peer could send that make no sense are refused or answered,
// never a panic.
func TestHostileAsksNeverPanic(t *testing.T) {
	r := newRig(t)
	r.activate(1)
	for _, body := range []string{
		`{"node":"x","fence":1,"limits":[{"spec":{"service":"s","rate":9223372036854775807,"burst":9223372036854775807,"per":1,"by":"service","share":true},"window":0,"want":{"":9223372036854775807}}]}`,
		`{"node":"x","fence":1,"limits":[{"spec":{"service":"s","rate":1,"per":9223372036854775807,"by":"ip"},"window":9223372036854775807,"want":{"k":1}}]}`,
		`{"node":"x","fence":1,"limits":[{"spec":{"service":"s","rate":1,"per":1000000000,"by":"token"},"window":-9223372036854775808,"fallback":{"a":5}}]}`,
		`{"node":"x","fence":1,"slots":[{"service":"s","max":1,"held":1000000,"in_flight":5,"want":2000000}]}`,
		`{"node":"x","fence":18446744073709551615,"probe":true}`,
		`{"node":"x","n":-5,"probe":true}`,
		`{"node":"x","fence":1,"limits":[{"spec":{"service":"s","rate":1,"per":1000000000,"by":"service"},"window":1,"want":{"":-1}}]}`,
		`[]`, `null`, `{"node":"x","limits":"no"}`,
	} {
		_, _ = r.mgr.Handle(context.Background(), "x", []byte(body))
	}
	rep, err := r.mgr.Usage("")
	if err != nil {
		t.Fatal(err)
	}
	for _, su := range rep.Slots {
		if su.Held > su.Max {
			t.Fatalf("a node's report made the manager count %d slots held of %d", su.Held, su.Max)
		}
	}
	_ = time.Second
}
