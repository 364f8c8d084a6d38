package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Shared decorators. A decorator (a JSON Schema) stored once under
// DecoratorKey(name) in the cluster's state serves every service whose
// "decorator" is that name as a JSON string instead of an inline schema.
// A run reads the decorator's current version before it validates the
// input, so a change applies to the next run of every service using it.

// DecoratorKey is the store key of a shared decorator: its schema, as is.
func DecoratorKey(name string) string { return "decorator/" + name }

// DecoratorRef returns the shared decorator s names, if its decorator is
// a reference (a JSON string) rather than an inline schema.
func (s *Service) DecoratorRef() (string, bool) {
	d := bytes.TrimSpace(s.Decorator)
	if len(d) == 0 || d[0] != '"' {
		return "", false
	}
	var name string
	if json.Unmarshal(d, &name) != nil {
		return "", false
	}
	return name, true
}

// isDecoratorRef reports whether a trimmed decorator is a JSON string.
func isDecoratorRef(d []byte) bool { return len(d) > 0 && d[0] == '"' }

// validateDecoratorRef checks a reference's name (its existence is the
// store's to say: node checks it when the service is written).
func (s *Service) validateDecoratorRef() error {
	d := bytes.TrimSpace(s.Decorator)
	if !isDecoratorRef(d) {
		return nil
	}
	name, ok := s.DecoratorRef()
	if !ok {
		return invalid("decorator", "not a valid JSON string")
	}
	if s.Type != TypeExec {
		return invalid("decorator", "only exec services have a decorator")
	}
	if err := ValidateName(name); err != nil {
		return invalid("decorator", "shared decorator name %q: %s", name, strings.TrimPrefix(err.Error(), "invalid service: name: "))
	}
	return nil
}

// ValidateDecorator checks a shared decorator's schema: at most
// MaxDecoratorSize, a JSON object or boolean that compiles, with no
// external references.
func ValidateDecorator(schema []byte) error {
	d := bytes.TrimSpace(schema)
	if len(d) == 0 {
		return fmt.Errorf("schema: empty; send a JSON Schema object")
	}
	if len(d) > MaxDecoratorSize {
		return fmt.Errorf("schema is %d bytes, more than %d", len(d), MaxDecoratorSize)
	}
	_, err := compileSchema(d)
	return err
}

// validateInput checks input against svc's decorator, reading a shared
// decorator's current version from the store first.
func (d *Dispatcher) validateInput(ctx context.Context, cluster string, svc *Service, input []byte) error {
	name, ok := svc.DecoratorRef()
	if !ok {
		return ValidateInput(svc, input)
	}
	schema, _, found, err := d.store.Get(ctx, cluster, DecoratorKey(name))
	if err != nil {
		return fmt.Errorf("read decorator %q of service %s: %w", name, svc.Name, err)
	}
	if !found {
		return fmt.Errorf("%w: service %s names the shared decorator %q, which does not exist: put it with `meshgw decorators put %s -f FILE`",
			ErrInvalidInput, svc.Name, name, name)
	}
	resolved := *svc
	resolved.Decorator = schema
	return ValidateInput(&resolved, input)
}
