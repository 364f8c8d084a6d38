package dispatch

import (
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestServiceValidate(t *testing.T) {
	ok := func() Service {
		return Service{Name: "echo", Type: TypeExec, Command: []string{"cat"}, Timeout: Duration(time.Second)}
	}
	if s := ok(); s.Validate() != nil {
		t.Fatal(s.Validate())
	}
	h := Service{Name: "web", Type: TypeHTTP, Upstream: "http://127.0.0.1:8080", Public: true, PassAuthorization: true}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		field string
		mod   func(*Service)
	}{
		{"name", func(s *Service) { s.Name = "" }},
		{"name", func(s *Service) { s.Name = "a/b" }},
		{"name", func(s *Service) { s.Name = "-x" }},
		{"name", func(s *Service) { s.Name = strings.Repeat("a", 64) }},
		{"type", func(s *Service) { s.Type = "shell" }},
		{"type", func(s *Service) { s.Type = "" }},
		{"command", func(s *Service) { s.Command = nil }},
		{"command[0]", func(s *Service) { s.Command = []string{""} }},
		{"command[1]", func(s *Service) { s.Command = []string{"a", "b\x00"} }},
		{"upstream", func(s *Service) { s.Type = TypeHTTP; s.Command = nil }},
		{"upstream", func(s *Service) { s.Type = TypeHTTP; s.Command = nil; s.Upstream = "ftp://x" }},
		{"upstream", func(s *Service) { s.Type = TypeHTTP; s.Command = nil; s.Upstream = "http://" }},
		{"timeout", func(s *Service) { s.Timeout = Duration(-time.Second) }},
		{"timeout", func(s *Service) { s.Timeout = Duration(25 * time.Hour) }},
		{"retries", func(s *Service) { s.Retries = 11 }},
		{"retries", func(s *Service) { s.Retries = -1 }},
		{"env", func(s *Service) { s.Env = map[string]string{"1X": "a"} }},
		{"env", func(s *Service) { s.Env = map[string]string{"A=B": "a"} }},
		{"dir", func(s *Service) { s.Dir = "relative" }},
		{"strategy", func(s *Service) { s.Strategy = "random" }},
		{"public", func(s *Service) { s.Public = true }},
		{"pass_authorization", func(s *Service) { s.PassAuthorization = true }},
		{"decorator", func(s *Service) { s.Decorator = json.RawMessage(`{"type": 12}`) }},
		// A string names a shared decorator (decorators.go): it must be a valid name.
		{"decorator", func(s *Service) { s.Decorator = json.RawMessage(`"not a name"`) }},
		{"decorator", func(s *Service) { s.Decorator = json.RawMessage(`{"$ref": "file:///etc/passwd"}`) }},
		{"", func(s *Service) {
			s.Env = map[string]string{"A": strings.Repeat("x", 8000), "B": strings.Repeat("x", 8000), "C": strings.Repeat("x", 8000), "D": strings.Repeat("x", 8000), "E": strings.Repeat("x", 8000), "F": strings.Repeat("x", 8000), "G": strings.Repeat("x", 8000), "H": strings.Repeat("x", 8000), "I": strings.Repeat("x", 8000)}
		}},
	}
	for _, c := range cases {
		s := ok()
		c.mod(&s)
		err := s.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: got %v, want a ValidationError", c.field, err)
			continue
		}
		if ve.Field != c.field {
			t.Errorf("field %q, want %q (%v)", ve.Field, c.field, err)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%v does not match ErrInvalid", err)
		}
	}
}

func TestParseServiceJSON(t *testing.T) {
	s, err := ParseService([]byte(`{"name":"a","type":"exec","command":["echo","hi"],"timeout":"1m30s","retries":2,
		"decorator":{"type":"object","required":["x"]},"runner_tags":{"zone":"a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Timeout.Std() != 90*time.Second || s.Retries != 2 || s.RunnerTags["zone"] != "a" {
		t.Fatalf("%+v", s)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"timeout":"1m30s"`) {
		t.Fatalf("encoded %s", b)
	}
	if _, err := ParseService([]byte(`{"name":"a","type":"exec","command":["x"],"bogus":1}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := ParseService([]byte(`{"name":"a","type":"exec","command":["x"],"timeout":5}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("numeric timeout: %v", err)
	}
	s.Timeout = 0
	s.Normalize()
	if s.Timeout.Std() != DefaultTimeout || s.Strategy != StrategyRoundRobin {
		t.Fatalf("normalize: %+v", s)
	}
}

func TestValidateInput(t *testing.T) {
	svc := &Service{Name: "s", Decorator: json.RawMessage(`{
		"type":"object","required":["name"],
		"properties":{"name":{"type":"string"},"n":{"type":"integer","maximum":10},
		"items":{"type":"array","items":{"type":"string"}}}}`)}
	if err := ValidateInput(svc, []byte(`{"name":"x","n":3}`)); err != nil {
		t.Fatal(err)
	}
	err := ValidateInput(svc, []byte(`{"n":30,"items":["a",1]}`))
	var se *SchemaError
	if !errors.As(err, &se) || !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("got %v", err)
	}
	paths := se.Paths()
	sort.Strings(paths)
	want := []string{"", "/items/1", "/n"}
	if strings.Join(paths, ",") != strings.Join(want, ",") {
		t.Fatalf("paths %q, want %q (%v)", paths, want, err)
	}
	if err := ValidateInput(svc, []byte(`{not json`)); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("malformed: %v", err)
	}
	if err := ValidateInput(svc, nil); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("empty input against an object schema: %v", err)
	}
	plain := &Service{Name: "p"}
	if err := ValidateInput(plain, nil); err != nil {
		t.Fatal(err)
	}
	if err := ValidateInput(plain, []byte(`[1,`)); !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("malformed without decorator: %v", err)
	}
}

func TestIDsSortByTime(t *testing.T) {
	t0 := time.Unix(1700000000, 5)
	a, b := NewID(t0), NewID(t0.Add(time.Nanosecond))
	if !(a < b) || !ValidID(a) || len(a) != 24 {
		t.Fatalf("%s %s", a, b)
	}
	if !IDTime(a).Equal(t0) {
		t.Fatalf("IDTime %v", IDTime(a))
	}
	if ValidID("../../etc") || ValidID(strings.Repeat("g", 24)) {
		t.Fatal("bad id accepted")
	}
}

func TestExecutionJSONShape(t *testing.T) {
	e := Execution{ID: "x", Service: "s", Runner: "r", Status: StatusSucceeded, Stdout: "o", Attempts: 1, DurationMs: 5}
	b, _ := json.Marshal(e.Response())
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"execution_id", "service", "runner", "status", "exit_code", "stdout", "stderr", "attempts", "duration_ms"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("missing %s in %s", k, b)
		}
	}
}
