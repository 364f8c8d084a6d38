package dispatch

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaError says why an input does not satisfy a service's decorator.
// Paths are JSON pointers into the input ("" is the whole input).
type SchemaError struct {
	Violations []Violation
}

// Violation is one failing instance location.
type Violation struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (e *SchemaError) Error() string {
	var sb strings.Builder
	sb.WriteString("input does not match the service's decorator")
	for i, v := range e.Violations {
		if i == 0 {
			sb.WriteString(": ")
		} else {
			sb.WriteString("; ")
		}
		p := v.Path
		if p == "" {
			p = "/"
		}
		sb.WriteString(p)
		sb.WriteString(": ")
		sb.WriteString(v.Message)
	}
	return sb.String()
}

// Paths returns the failing instance paths.
func (e *SchemaError) Paths() []string {
	out := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		out[i] = v.Path
	}
	return out
}

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *SchemaError) Is(target error) bool { return target == ErrInvalidInput }

// noLoader refuses every external reference: a decorator is self-contained,
// and a schema must never make a runner read files or fetch URLs.
type noLoader struct{}

func (noLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("external schema references are not allowed (%s)", u)
}

// schemaCache holds compiled decorators by content hash. It is bounded: when
// full it is emptied (definitions change rarely; a recompile is cheap enough).
var schemaCache = struct {
	sync.Mutex
	m map[[32]byte]*jsonschema.Schema
}{m: make(map[[32]byte]*jsonschema.Schema)}

const schemaCacheMax = 512

func compileSchema(doc []byte) (*jsonschema.Schema, error) {
	key := sha256.Sum256(doc)
	schemaCache.Lock()
	sch, ok := schemaCache.m[key]
	schemaCache.Unlock()
	if ok {
		return sch, nil
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("schema is not valid JSON: %v", err)
	}
	switch v.(type) {
	case map[string]any, bool:
	default:
		return nil, errors.New("schema must be a JSON object or boolean")
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	const loc = "meshgw:///decorator.json"
	if err := c.AddResource(loc, v); err != nil {
		return nil, fmt.Errorf("schema: %v", err)
	}
	sch, err = c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schema does not compile: %v", err)
	}
	schemaCache.Lock()
	if len(schemaCache.m) >= schemaCacheMax {
		clear(schemaCache.m)
	}
	schemaCache.m[key] = sch
	schemaCache.Unlock()
	return sch, nil
}

// ValidateInput checks an execution input against the service: a non-empty
// input must be JSON, and when the service has a decorator the input (empty
// means null) must satisfy it. Failures are *SchemaError (errors.Is
// ErrInvalidInput).
func ValidateInput(svc *Service, input []byte) error {
	trimmed := bytes.TrimSpace(input)
	var inst any = nil
	if len(trimmed) > 0 {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(trimmed))
		if err != nil {
			return &SchemaError{Violations: []Violation{{Path: "", Message: errNotJSON.Error()}}}
		}
		inst = v
	}
	d := bytes.TrimSpace(svc.Decorator)
	if len(d) == 0 || string(d) == "null" {
		return nil
	}
	sch, err := compileSchema(d)
	if err != nil {
		return fmt.Errorf("service %s: decorator: %w", svc.Name, err)
	}
	err = sch.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &SchemaError{Violations: []Violation{{Message: err.Error()}}}
	}
	return &SchemaError{Violations: violations(ve)}
}

func violations(ve *jsonschema.ValidationError) []Violation {
	out := []Violation{}
	seen := map[Violation]bool{}
	basic := ve.BasicOutput()
	for _, u := range basic.Errors {
		if u.Error == nil {
			continue
		}
		msg := u.Error.String()
		// Skip the "doesn't validate with ..." wrappers; keep the leaves.
		if strings.HasPrefix(msg, "doesn't validate with") || strings.HasPrefix(msg, "validation failed") {
			continue
		}
		v := Violation{Path: u.InstanceLocation, Message: msg}
		if seen[v] {
			continue
		}
		seen[v] = true
		out = append(out, v)
		if len(out) == maxSchemaErrorsOut {
			break
		}
	}
	if len(out) == 0 {
		out = append(out, Violation{Path: jsonPointer(ve.InstanceLocation), Message: "does not match the schema"})
	}
	return out
}

func jsonPointer(toks []string) string {
	var sb strings.Builder
	for _, t := range toks {
		sb.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		sb.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return sb.String()
}
