package dispatch

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// docs/SERVICES.md documents every JSON field of a service definition (a
// "### `field`" section and a row of the table), and every JSON example
// in it is a definition that validation accepts.
func TestServicesDocCoversEveryFieldAndItsExamplesAreValid(t *testing.T) {
	data, err := os.ReadFile("../docs/SERVICES.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	typ := reflect.TypeOf(Service{})
	for i := 0; i < typ.NumField(); i++ {
		tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if !strings.Contains(doc, "\n### `"+tag+"`\n") {
			t.Errorf("docs/SERVICES.md has no section for field %q", tag)
		}
		if !strings.Contains(doc, "| [`"+tag+"`](#"+tag+") |") {
			t.Errorf("docs/SERVICES.md's table has no row for field %q", tag)
		}
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) < typ.NumField() {
		t.Fatalf("only %d JSON examples for %d fields", len(blocks), typ.NumField())
	}
	for _, b := range blocks {
		svc, err := ParseService([]byte(b[1]))
		if err != nil {
			t.Errorf("example refused: %v\n%s", err, b[1])
			continue
		}
		// What the doc says of the defaults holds.
		svc.Normalize()
		if b := b[1]; !strings.Contains(b, `"timeout"`) && svc.EffectiveTimeout().String() != "30s" ||
			!strings.Contains(b, `"strategy"`) && svc.Strategy != StrategyRoundRobin {
			t.Errorf("defaults differ from the doc: timeout %s, strategy %s", svc.EffectiveTimeout(), svc.Strategy)
		}
	}
	// Limits the doc states.
	for _, want := range []string{"1–63", "1–256 arguments", "4096 bytes", "≤ 256 variables",
		"≤ `24h`", "0–10", "≤ 32 KiB", "≤ 32 tags", "≤ 2048 bytes", "64 KiB"} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/SERVICES.md does not state the limit %q", want)
		}
	}
	if MaxNameLen != 63 || MaxArgs != 256 || MaxArgLen != 4096 || MaxEnv != 256 ||
		MaxTimeout.String() != "24h0m0s" || MaxRetries != 10 || MaxDecoratorSize != 32<<10 ||
		MaxRunnerTags != 32 || maxUpstreamLen != 2048 || MaxServiceSize != 64<<10 ||
		DefaultTimeout.String() != "30s" {
		t.Error("a limit changed: update docs/SERVICES.md and this test")
	}
}
