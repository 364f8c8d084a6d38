package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/schedule"
)

func newConfigBackend() (*configBackend, *fsmKV) {
	kv := &fsmKV{st: fsm.NewStore()}
	state := &stateBackend{kv: kv}
	return &configBackend{kv: kv, state: state, now: time.Now}, kv
}

func putSvc(t *testing.T, b *configBackend, name, cmd string) uint64 {
	t.Helper()
	svc := dispatch.Service{Name: name, Type: dispatch.TypeExec, Command: []string{cmd}}
	svc.Normalize()
	v, err := b.state.PutService(context.Background(), "c", svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestServiceHistoryAndRevert: each changing write keeps a revision (the
// last 10), an identical write none; revert writes an old one again.
func TestServiceHistoryAndRevert(t *testing.T) {
	b, _ := newConfigBackend()
	ctx := context.Background()
	for i := 1; i <= 12; i++ {
		putSvc(t, b, "web", fmt.Sprintf("/bin/v%d", i))
	}
	putSvc(t, b, "web", "/bin/v12") // unchanged: no revision
	revs, err := b.ServiceHistory(ctx, "c", "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != historyKeep || revs[0].Revision != 12 || revs[9].Revision != 3 || !revs[0].Current || revs[1].Current {
		t.Fatalf("history: %d revisions, first %+v", len(revs), revs[0])
	}
	if _, err := b.RevertService(ctx, "c", "web", 2); err == nil || !strings.Contains(err.Error(), "no revision 2") {
		t.Errorf("revert to a dropped revision: %v", err)
	}
	if _, err := b.RevertService(ctx, "c", "web", 5); err != nil {
		t.Fatal(err)
	}
	svc, err := b.state.GetService(ctx, "c", "web")
	if err != nil || svc.Command[0] != "/bin/v5" {
		t.Fatalf("after revert: %+v %v", svc, err)
	}
	revs, _ = b.ServiceHistory(ctx, "c", "web")
	if revs[0].Revision != 13 || !revs[0].Current || len(revs) != historyKeep {
		t.Errorf("after revert: %+v", revs[0])
	}
	if _, err := b.ServiceHistory(ctx, "c", "nosuch"); err == nil {
		t.Error("history of an unknown service")
	}
}

const importFile = `{
  "format": 1,
  "services": [
    {"name": "web", "type": "exec", "command": ["/bin/web"], "timeout": "10s"},
    {"name": "backup", "type": "exec", "command": ["/bin/backup"]}
  ],
  "decorators": [
    {"name": "order", "schema": {"type": "object", "required": ["id"]}}
  ],
  "repositories": [
    {"name": "ops", "url": "https://git.example.com/ops.git", "ref": "main", "poll": "30s"}
  ],
  "schedules": [
    {"name": "nightly", "service": "backup", "cron": "0 3 * * *", "timezone": "Europe/Paris"}
  ]
}`

func changes(r httpapi.ImportResult) string {
	var out []string
	for _, c := range r.Changes {
		out = append(out, c.Action+" "+c.Kind+"/"+c.Name)
	}
	return strings.Join(out, ", ")
}

// TestImportDryRunApplyExportRoundTrip: a dry run writes nothing and
// reports the diff; the import applies it; the export is the file again;
// a second import changes nothing; prune deletes what the file leaves out.
func TestImportDryRunApplyExportRoundTrip(t *testing.T) {
	b, kv := newConfigBackend()
	ctx := context.Background()
	putSvc(t, b, "old", "/bin/old")
	before := kv.st.Len()
	res, err := b.Import(ctx, "c", []byte(importFile), httpapi.ImportOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := changes(res); got != "create services/web, create services/backup, create decorators/order, create repositories/ops, create schedules/nightly" || res.Kept != 1 || res.Applied {
		t.Fatalf("dry run: %s kept %d", got, res.Kept)
	}
	if kv.st.Len() != before {
		t.Fatal("the dry run wrote")
	}
	if res, err = b.Import(ctx, "c", []byte(importFile), httpapi.ImportOptions{Plan: res.Plan}); err != nil || !res.Applied {
		t.Fatalf("import: %+v %v", res, err)
	}
	exp, err := b.Export(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(exp)
	if !strings.Contains(string(got), `"repositories":[{"name":"ops","url":"https://git.example.com/ops.git","ref":"main","poll":"30s"}]`) {
		t.Errorf("export has no repository: %s", got)
	}
	if !strings.Contains(string(got), `"decorators":[{"name":"order","schema":{"type":"object","required":["id"]}}]`) {
		t.Errorf("export has no decorator: %s", got)
	}
	if !strings.Contains(string(got), `"name":"nightly","service":"backup","cron":"0 3 * * *","overlap":"allow","timezone":"Europe/Paris"}`) ||
		strings.Contains(string(got), "updated_at") || strings.Contains(string(got), `"version"`) {
		t.Errorf("export: %s", got)
	}
	// The export imported again changes nothing.
	res, err = b.Import(ctx, "c", got, httpapi.ImportOptions{})
	if err != nil || len(res.Changes) != 0 || res.Unchanged != 6 || res.Applied {
		t.Errorf("re-import of the export: %s unchanged %d %v", changes(res), res.Unchanged, err)
	}
	// An import onto a fresh cluster gives the same export.
	fresh, _ := newConfigBackend()
	if _, err := fresh.Import(ctx, "c", got, httpapi.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	exp2, _ := fresh.Export(ctx, "c")
	if got2, _ := json.Marshal(exp2); string(got2) != string(got) {
		t.Errorf("round trip:\n%s\n%s", got, got2)
	}
	// Prune: the file's kinds lose what it does not list.
	small := `{"services": [{"name": "web", "type": "exec", "command": ["/bin/web2"]}]}`
	res, err = b.Import(ctx, "c", []byte(small), httpapi.ImportOptions{Prune: true})
	if err != nil || changes(res) != "update services/web, delete services/backup, delete services/old" {
		t.Fatalf("prune: %s %v", changes(res), err)
	}
	if _, ok, _ := kv.Get(ctx, "c", schedule.Key("nightly")); !ok {
		t.Error("prune deleted a schedule: the file has no schedules, they are left alone")
	}
	revs, _ := b.ServiceHistory(ctx, "c", "web")
	if len(revs) != 2 {
		t.Errorf("web has %d revisions after an import updated it, want 2", len(revs))
	}
}

// TestImportRefusesWholeAndNamesItems: every problem is reported with its
// item and field, and nothing is written; a changed plan or a concurrent
// write fails the whole import.
func TestImportRefusesWholeAndNamesItems(t *testing.T) {
	b, kv := newConfigBackend()
	ctx := context.Background()
	bad := `{"services": [{"name": "ok", "type": "exec", "command": ["/bin/ok"]},
	  {"name": "web", "type": "exec", "command": ["/bin/web"], "timeout": "soon"},
	  {"name": "ok", "type": "exec", "command": ["/bin/ok"]}],
	  "schedules": [{"name": "s", "service": "ok", "cron": "61 * * * *"}],
	  "secrets": []}`
	res, err := b.Import(ctx, "c", []byte(bad), httpapi.ImportOptions{})
	var he *httpapi.Error
	if !errors.As(err, &he) || he.Status != 400 || len(res.Problems) != 4 {
		t.Fatalf("bad file: %v %+v", err, res.Problems)
	}
	want := []string{`secrets`, `services[1] "web": invalid service: timeout`, `services[2] "ok": the same name as services[0]`,
		`schedules[0] "s": invalid schedule: cron`}
	for i, p := range res.Problems {
		if !strings.Contains(p.Error, want[i]) {
			t.Errorf("problem %d: %+v, want %q", i, p, want[i])
		}
	}
	if res.Problems[1].Field != "timeout" || res.Problems[3].Field != "cron" {
		t.Errorf("fields: %+v", res.Problems)
	}
	if kv.st.Len() != 0 {
		t.Fatal("a refused import wrote")
	}

	dry, err := b.Import(ctx, "c", []byte(importFile), httpapi.ImportOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	putSvc(t, b, "web", "/bin/concurrent")
	_, err = b.Import(ctx, "c", []byte(importFile), httpapi.ImportOptions{Plan: dry.Plan})
	if !errors.As(err, &he) || he.Status != 409 {
		t.Fatalf("import after a concurrent write: %v, want 409", err)
	}
	if _, ok, _ := kv.Get(ctx, "c", dispatch.ServiceKey("backup")); ok {
		t.Fatal("part of a refused import was written")
	}

	// A write between the import's read and its command: the CAS fails
	// the whole command.
	racy := &racingKV{fsmKV: kv, before: func() { putSvc(t, b, "web", "/bin/racer") }}
	b.kv = racy
	_, err = b.Import(ctx, "c", []byte(importFile), httpapi.ImportOptions{})
	if !errors.As(err, &he) || he.Status != 409 {
		t.Fatalf("racing import: %v, want 409", err)
	}
	if _, ok, _ := kv.Get(ctx, "c", dispatch.ServiceKey("backup")); ok {
		t.Fatal("part of a racing import was written")
	}
}

// racingKV runs before once, just before the first multi-op Apply.
type racingKV struct {
	*fsmKV
	before func()
	done   bool
}

func (r *racingKV) Apply(ctx context.Context, cluster string, cmd fsm.Command) (fsm.Result, error) {
	if !r.done && len(cmd.Ops) > 2 {
		r.done = true
		r.before()
	}
	return r.fsmKV.Apply(ctx, cluster, cmd)
}
