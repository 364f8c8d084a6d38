package dispatch

import (
	"errors"
	"strings"
	"testing"
)

// Every routing field's error names it (400 naming the field).
func TestRoutingValidationNamesTheField(t *testing.T) {
	for _, c := range []struct{ def, field string }{
		{`{"name":"a","type":"http"}`, "upstream"},
		{`{"name":"a","type":"http","upstream":"http://x:1","upstreams":[{"url":"http://y:1"}]}`, "upstreams"},
		{`{"name":"a","type":"http","upstreams":[{"url":""}]}`, "upstreams[0].url"},
		{`{"name":"a","type":"http","upstreams":[{"url":"http://x:1"},{"url":"ftp://y"}]}`, "upstreams[1].url"},
		{`{"name":"a","type":"http","upstreams":[{"url":"http://x:1"},{"url":"http://x:1"}]}`, "upstreams[1].url"},
		{`{"name":"a","type":"http","upstreams":[{"url":"http://x:1","weight":-1}]}`, "upstreams[0].weight"},
		{`{"name":"a","type":"http","upstreams":[{"url":"http://x:1","weight":1001}]}`, "upstreams[0].weight"},
		{`{"name":"a","type":"http","upstream":"http://x:1","health":{"path":"healthz"}}`, "health.path"},
		{`{"name":"a","type":"http","upstream":"http://x:1","health":{"path":"/h","interval":"1ms"}}`, "health.interval"},
		{`{"name":"a","type":"http","upstream":"http://x:1","health":{"path":"/h","interval":"1s","timeout":"2s"}}`, "health.timeout"},
		{`{"name":"a","type":"http","upstream":"http://x:1","health":{"path":"/h","unhealthy_after":-1}}`, "health.unhealthy_after"},
		{`{"name":"a","type":"http","upstream":"http://x:1","health":{"path":"/h","healthy_after":101}}`, "health.healthy_after"},
		{`{"name":"a","type":"http","upstream":"http://x:1","hosts":["bad host"]}`, "hosts[0]"},
		{`{"name":"a","type":"http","upstream":"http://x:1","hosts":["a.test","A.test"]}`, "hosts[1]"},
		{`{"name":"a","type":"http","upstream":"http://x:1","hosts":["a.test:80"]}`, "hosts[0]"},
		{`{"name":"a","type":"http","upstream":"http://x:1","paths":[{"prefix":"v2"}]}`, "paths[0].prefix"},
		{`{"name":"a","type":"http","upstream":"http://x:1","paths":[{"prefix":"/a/../b"}]}`, "paths[0].prefix"},
		{`{"name":"a","type":"http","upstream":"http://x:1","paths":[{"prefix":"/svc/x"}]}`, "paths[0].prefix"},
		{`{"name":"a","type":"http","upstream":"http://x:1","paths":[{"prefix":"/%2e"}]}`, "paths[0].prefix"},
		{`{"name":"a","type":"http","upstream":"http://x:1","sticky":{}}`, "sticky"},
		{`{"name":"a","type":"http","upstream":"http://x:1","sticky":{"header":"a b"}}`, "sticky.header"},
		{`{"name":"a","type":"exec","command":["true"],"hosts":["a.test"]}`, "hosts"},
		{`{"name":"a","type":"exec","command":["true"],"fail_open":true}`, "fail_open"},
	} {
		_, err := ParseService([]byte(c.def))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("%s: got %v, want an error naming %s", c.def, err, c.field)
		}
	}
	s, err := ParseService([]byte(`{"name":"a","type":"http","upstreams":[{"url":"http://x:1"},{"url":"http://y:1","weight":3}],
		"health":{"path":"/h"},"hosts":["A.test"],"paths":[{"prefix":"/v2/","strip":true}],"sticky":{"cookie":"sid"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ts := s.Targets(); ts[0].Weight != 1 || ts[1].Weight != 3 {
		t.Fatalf("targets %+v", ts)
	}
	if h, _ := s.HealthConfig(); h.Interval.Std() != DefaultHealthInterval || h.UnhealthyAfter != 3 || h.HealthyAfter != 2 {
		t.Fatalf("health defaults %+v", h)
	}
	rs := s.Routes()
	if len(rs) != 1 || rs[0].Key() != "route/a.test/v2/" || !rs[0].Strip {
		t.Fatalf("routes %+v", rs)
	}
	only := Service{Name: "b", Type: TypeHTTP, Upstream: "http://x:1", Paths: []PathRoute{{Prefix: "/p"}}}
	if rs := only.Routes(); len(rs) != 1 || rs[0].Host != AnyHost || !strings.HasSuffix(rs[0].Key(), "*/p") {
		t.Fatalf("path-only routes %+v", rs)
	}
}
