package config

import (
	"reflect"
	"testing"
)

func TestReloadableSplitsWhatARunningAgentApplies(t *testing.T) {
	build := func(args ...string) Runtime {
		t.Helper()
		b := NewBuilder(append([]string{"-node", "n1", "-data-dir", t.TempDir()}, args...))
		r, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	cur := build("-log-level", "info", "-tag", "zone=a")
	next := cur
	if a, r := Reloadable(cur, next); len(a)+len(r) != 0 {
		t.Fatalf("same config: applied %v, restart %v", a, r)
	}
	next.LogLevel = "debug"
	next.Tags = map[string]string{"zone": "b"}
	next.MaxConcurrentExecs = 3
	next.RPCAddr = "127.0.0.1:1"
	applied, restart := Reloadable(cur, next)
	if want := []string{"log-level", "max-concurrent-execs", "tag"}; !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if want := []string{"rpc"}; !reflect.DeepEqual(restart, want) {
		t.Errorf("restart %v, want %v", restart, want)
	}
	// Every field's option name is a real option: a reload never names a
	// field the user cannot set.
	ct := reflect.TypeOf(Runtime{})
	for i := 0; i < ct.NumField(); i++ {
		f := ct.Field(i)
		if !f.IsExported() {
			continue
		}
		name := fieldOption[f.Name]
		if name == "" {
			name = kebab(f.Name)
		}
		if find(name) == nil {
			t.Errorf("field %s reloads as %q, which is no option", f.Name, name)
		}
	}
}
