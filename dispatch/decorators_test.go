package dispatch

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestDecoratorReferenceValidation(t *testing.T) {
	s := execSvc("cat")
	s.Decorator = []byte(`"order-input"`)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if name, ok := s.DecoratorRef(); !ok || name != "order-input" {
		t.Fatal(name, ok)
	}
	inline := execSvc("cat")
	inline.Decorator = []byte(`{"type":"object"}`)
	if _, ok := inline.DecoratorRef(); ok || inline.Validate() != nil {
		t.Fatal("inline schema taken for a reference, or refused")
	}
	for _, bad := range []string{`"bad/name"`, `""`, `"-x"`, `"unterminated`} {
		s.Decorator = []byte(bad)
		var ve *ValidationError
		if err := s.Validate(); !errors.As(err, &ve) || ve.Field != "decorator" {
			t.Errorf("%s: %v, want a 400 on decorator", bad, err)
		}
	}
	h := Service{Name: "h", Type: TypeHTTP, Upstream: "http://127.0.0.1:1", Decorator: []byte(`"x"`)}
	if err := h.Validate(); err == nil {
		t.Error("http service with a decorator reference accepted")
	}
	for _, bad := range []string{``, `"a string"`, `[1]`, `{"type": 5}`, `{"$ref": "http://example.com/s.json"}`} {
		if err := ValidateDecorator([]byte(bad)); err == nil {
			t.Errorf("decorator %q accepted", bad)
		}
	}
	if err := ValidateDecorator([]byte(`{"type":"object","required":["n"]}`)); err != nil {
		t.Fatal(err)
	}
}

// A run validates against the shared decorator's current version: a change
// applies to the next run; a decorator that is gone is a clear 400.
func TestRunSharedDecoratorCurrentVersion(t *testing.T) {
	e := newLocal(t, nil)
	ctx := context.Background()
	put := func(schema string) {
		if _, err := e.store.Put(ctx, testCluster, DecoratorKey("order"), []byte(schema), nil); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"type":"object","required":["n"]}`)
	a, b := execSvc("cat"), execSvc("cat")
	a.Name, b.Name = "a", "b"
	a.Decorator, b.Decorator = []byte(`"order"`), []byte(`"order"`)
	for _, s := range []Service{a, b} {
		if ex, err := e.d.Run(ctx, testCluster, s, []byte(`{"n":1,"m":"x"}`), RunOptions{}); err != nil || ex.Status != StatusSucceeded {
			t.Fatalf("%s: %+v %v", s.Name, ex, err)
		}
		var se *SchemaError
		if _, err := e.d.Run(ctx, testCluster, s, []byte(`{"m":"x"}`), RunOptions{}); !errors.As(err, &se) {
			t.Fatalf("%s: missing n accepted: %v", s.Name, err)
		}
	}
	put(`{"type":"object","required":["n"],"properties":{"m":{"type":"integer"}}}`)
	for _, s := range []Service{a, b} {
		var se *SchemaError
		if _, err := e.d.Run(ctx, testCluster, s, []byte(`{"n":1,"m":"x"}`), RunOptions{}); !errors.As(err, &se) || se.Paths()[0] != "/m" {
			t.Fatalf("%s: the changed decorator did not apply: %v", s.Name, err)
		}
	}
	if err := e.store.Delete(ctx, testCluster, DecoratorKey("order"), nil); err != nil {
		t.Fatal(err)
	}
	_, err := e.d.Run(ctx, testCluster, a, []byte(`{"n":1}`), RunOptions{})
	if !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), `"order", which does not exist`) {
		t.Fatalf("gone decorator: %v", err)
	}
}
