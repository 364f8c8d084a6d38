package dispatch

import (
	"strings"
	"testing"
)

// A definition that does not decode names the field at fault, and no
// message has an empty field (": :").
func TestParseServiceErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ def, field, want string }{
		{`{"name":"a","type":"exec","command":["x"],"timeout":"zz"}`, "timeout", `invalid duration "zz"`},
		{`{"name":"a","type":"exec","command":["x"],"retries":"2"}`, "retries", "string"},
		{`{"name":"a","type":"exec","command":["x"],"bogus":1}`, "bogus", "unknown field"},
		{`{"name":"a","type":"exec","command":"x"}`, "command", "string"},
		{`{"name":"a",`, "", "malformed JSON"},
		{`{"name":5,"type":"exec","command":["x"]}`, "", "name: cannot unmarshal number"},
	} {
		_, err := ParseService([]byte(c.def))
		ve, ok := err.(*ValidationError)
		if !ok || ve.Field != c.field || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), ": :") {
			t.Errorf("%s: %v (field %q), want field %q and %q", c.def, err, fieldOf(err), c.field, c.want)
		}
	}
}

func fieldOf(err error) string {
	if ve, ok := err.(*ValidationError); ok {
		return ve.Field
	}
	return "-"
}
