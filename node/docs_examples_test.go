package node

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"testing"

	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/schedule"
)

// jsonBlocks returns the ```json blocks of a file of docs/.
func jsonBlocks(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		t.Fatalf("%s has no JSON example", path)
	}
	return out
}

// docs/CONFIG.md's example is an export: imported into an empty cluster
// as written, it exports as written. docs/SCHEDULES.md's definitions are
// accepted as written.
func TestConfigAndScheduleDocExamplesWorkAsWritten(t *testing.T) {
	ctx := context.Background()
	for _, ex := range jsonBlocks(t, "../docs/CONFIG.md") {
		b, _ := newConfigBackend()
		res, err := b.Import(ctx, "c", []byte(ex), httpapi.ImportOptions{})
		if err != nil || !res.Applied {
			t.Fatalf("docs/CONFIG.md's example refused: %v %+v\n%s", err, res, ex)
		}
		exp, err := b.Export(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(exp)
		var want, have any
		if err := json.Unmarshal([]byte(ex), &want); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(got, &have)
		if !reflect.DeepEqual(want, have) {
			t.Errorf("docs/CONFIG.md's export differs from an export of its import:\n%s\nexport:\n%s", ex, got)
		}
	}
	for _, ex := range jsonBlocks(t, "../docs/SCHEDULES.md") {
		if _, err := schedule.Parse([]byte(ex)); err != nil {
			t.Errorf("docs/SCHEDULES.md's example refused: %v\n%s", err, ex)
		}
	}
}
