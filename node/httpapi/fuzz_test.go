package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/dispatch"
)

// FuzzAPIBodies sends arbitrary bodies and query strings to the routes that
// decode JSON: the answer is a 2xx or a 4xx JSON error, never a 5xx or a
// panic, and a refused write leaves the state as it was.
func FuzzAPIBodies(f *testing.F) {
	for _, s := range []struct{ path, body string }{
		{"/v1/services/echo", `{"name":"echo","type":"exec","command":["cat"]}`},
		{"/v1/services/echo?cas=0", `{"name":"echo","type":"http","upstream":"http://x"}`},
		{"/v1/services/e", `{"name":"e","type":"exec","command":["a"],"decorator":{"type":"nope"}}`},
		{"/v1/acl/tokens", `{"policies":["run:*"]}`},
		{"/v1/services/echo?cas=-1", `{}`},
		{"/v1/keyring/install", `{"key":"abc"}`},
		{"/v1/services/%zz", `null`},
	} {
		f.Add(s.path, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		st := &memState{svcs: map[string]dispatch.Service{}}
		tok := &memTokens{byHash: map[string]Token{}}
		a := New(Config{MaxBodyBytes: 64 << 10}, &fakeBackend{}, zerolog.Nop(), WithState(st), WithACL(tok))
		_, secret, _ := tok.Bootstrap(nil, "default")
		for _, method := range []string{"PUT", "POST", "DELETE"} {
			req, err := http.NewRequest(method, "http://x"+path, strings.NewReader(string(body)))
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "Bearer "+secret)
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
			}
			if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("%s %s: %d without a JSON error: %q", method, path, rec.Code, rec.Body)
			}
		}
	})
}
