package dispatch

import (
	"encoding/json"
	"testing"
)

// FuzzParseService: any bytes give a Service or an error naming a field,
// never a panic; what parses also re-encodes and parses again.
func FuzzParseService(f *testing.F) {
	for _, s := range []string{
		`{"name":"echo","type":"exec","command":["cat"],"timeout":"5s","retries":2}`,
		`{"name":"web","type":"http","upstream":"http://127.0.0.1:8080"}`,
		`{"name":"d","type":"exec","command":["x"],"decorator":{"type":"object","required":["a"]}}`,
		`{"name":"bad name","type":"exec"}`,
		`{"name":"x","type":"exec","command":[],"env":{"A":"1"},"runner_tags":{"zone":"a"}}`,
		`{"decorator":{"$ref":"http://example.invalid/schema"}}`,
		`[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		svc, err := ParseService(data)
		if err != nil {
			return
		}
		again, err := json.Marshal(svc)
		if err != nil {
			t.Fatalf("a parsed service does not encode: %v", err)
		}
		if _, err := ParseService(again); err != nil {
			t.Fatalf("a valid service does not parse again: %v\n%s", err, again)
		}
		_ = ValidateInput(&svc, data)
	})
}
