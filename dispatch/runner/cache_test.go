package runner

import (
	"errors"
	"fmt"
	"testing"
)

func TestBoundedCacheBuildsOnceStaysBoundedAndDrops(t *testing.T) {
	var built, dropped []string
	c := boundedCache[string]{max: 3, drop: func(v string) { dropped = append(dropped, v) }}
	build := func(k string) func() (string, error) {
		return func() (string, error) { built = append(built, k); return "v" + k, nil }
	}
	for i := 0; i < 2; i++ {
		if v, err := c.get("a", build("a")); err != nil || v != "va" {
			t.Fatalf("get a: %q %v", v, err)
		}
	}
	if len(built) != 1 {
		t.Errorf("built %v, want a once", built)
	}
	if _, err := c.get("bad", func() (string, error) { return "", errors.New("no") }); err == nil {
		t.Error("a build error was not returned")
	}
	for i := 0; i < 3; i++ {
		_, _ = c.get(fmt.Sprint(i), build(fmt.Sprint(i)))
	}
	// a, 0, 1 filled it; 2 started it over, dropping those three.
	if len(dropped) != 3 {
		t.Errorf("dropped %v, want the 3 entries before the overflow", dropped)
	}
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("%d entries after starting over, want 1", n)
	}
	if _, err := c.get("bad", func() (string, error) { return "", errors.New("no") }); err == nil {
		t.Error("a failed build was cached")
	}
}
