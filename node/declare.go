package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/schedule"
)

// Declarative export and import of a cluster's configuration work over a
// registry of kinds: each is one entry naming its JSON key in the file,
// its key prefix in the group, and how to turn a file's item into the
// value stored (validating it) and a stored value into the file's form.
// A new kind of configuration is one more entry in configKinds.

// configKind is one kind of exported configuration.
type configKind struct {
	// name is the kind's key in the file ("services").
	name string
	// prefix is its key prefix in the group ("svc/"): the item called N
	// is prefix+N.
	prefix string
	// store validates one item of a file and returns its name and the
	// value to store (defaults applied, server fields set). An error
	// should be a validation error naming the field.
	store func(item json.RawMessage, now time.Time) (name string, value []byte, err error)
	// export returns a stored value as the file shows it: no server
	// fields (versions, write times), so an export of an import of an
	// export is the same.
	export func(name string, stored []byte) (json.RawMessage, error)
	// extra returns writes that go with writing (value != nil) or
	// deleting (value nil) item name, in the same command (a service's
	// history revision). Optional.
	extra func(ctx context.Context, kv kvStore, cluster, name string, value []byte, now time.Time) ([]fsm.Op, error)
}

// configKinds are the kinds export and import handle, in file order.
// Never secret values.
var configKinds = []configKind{
	{name: "services", prefix: dispatch.ServiceKey(""), store: storeService, export: exportService,
		extra: func(ctx context.Context, kv kvStore, cluster, name string, value []byte, now time.Time) ([]fsm.Op, error) {
			if value == nil {
				return nil, nil // the history stays: revert can bring a deleted service back
			}
			return historyOps(ctx, kv, cluster, name, value, now)
		}},
	{name: "decorators", prefix: dispatch.DecoratorKey(""), store: storeDecorator, export: exportDecorator},
	{name: "repositories", prefix: dispatch.RepositoryKey(""), store: storeRepository, export: exportRepository},
	{name: "schedules", prefix: schedule.Prefix, store: storeSchedule, export: exportSchedule,
		extra: func(_ context.Context, _ kvStore, _, name string, value []byte, _ time.Time) ([]fsm.Op, error) {
			if value == nil {
				return []fsm.Op{{Type: fsm.OpDelete, Key: schedule.StateKey(name)}}, nil // its firing state goes with it
			}
			return nil, nil
		}},
}

func storeService(item json.RawMessage, _ time.Time) (string, []byte, error) {
	svc, err := dispatch.ParseService(item)
	if err != nil {
		return svc.Name, nil, err
	}
	svc.Normalize()
	svc.Version = 0
	b, err := json.Marshal(svc)
	return svc.Name, b, err
}

func exportService(_ string, stored []byte) (json.RawMessage, error) {
	var svc dispatch.Service
	if err := json.Unmarshal(stored, &svc); err != nil {
		return nil, err
	}
	svc.Version = 0
	return json.Marshal(svc)
}

// decoratorItem is a shared decorator as the file shows it; the group
// holds the schema alone, under its name's key.
type decoratorItem struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
}

func storeDecorator(item json.RawMessage, _ time.Time) (string, []byte, error) {
	var d decoratorItem
	dec := json.NewDecoder(bytes.NewReader(item))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return "", nil, fmt.Errorf("a decorator is {\"name\", \"schema\"}: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if err := dispatch.ValidateName(d.Name); err != nil {
		return d.Name, nil, fmt.Errorf("name: %w", err)
	}
	if len(d.Schema) == 0 {
		return d.Name, nil, fmt.Errorf("schema: required")
	}
	if err := dispatch.ValidateDecorator(d.Schema); err != nil {
		return d.Name, nil, fmt.Errorf("schema: %w", err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, d.Schema); err != nil {
		return d.Name, nil, fmt.Errorf("schema: %w", err)
	}
	return d.Name, b.Bytes(), nil
}

func exportDecorator(name string, stored []byte) (json.RawMessage, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, stored); err != nil {
		return nil, err
	}
	return json.Marshal(decoratorItem{Name: name, Schema: b.Bytes()})
}

func storeRepository(item json.RawMessage, _ time.Time) (string, []byte, error) {
	r, err := dispatch.ParseRepository(item)
	if err != nil {
		return r.Name, nil, err
	}
	r.Version = 0
	b, err := json.Marshal(r)
	return r.Name, b, err
}

func exportRepository(_ string, stored []byte) (json.RawMessage, error) {
	var r dispatch.Repository
	if err := json.Unmarshal(stored, &r); err != nil {
		return nil, err
	}
	r.Version = 0
	return json.Marshal(r)
}

func storeSchedule(item json.RawMessage, now time.Time) (string, []byte, error) {
	s, err := schedule.Parse(item)
	if err != nil {
		return s.Name, nil, err
	}
	s.Normalize()
	s.Version, s.UpdatedAt = 0, now.UTC()
	b, err := json.Marshal(s)
	return s.Name, b, err
}

func exportSchedule(_ string, stored []byte) (json.RawMessage, error) {
	var s schedule.Schedule
	if err := json.Unmarshal(stored, &s); err != nil {
		return nil, err
	}
	s.Version, s.UpdatedAt = 0, time.Time{}
	return json.Marshal(s)
}

// exportFormat is the file's format version.
const exportFormat = 1

// maxImportBytes bounds the values one import writes: they go in one
// Raft command, which must fit a transport frame (8 MiB, base64 in a
// forward) with room to spare.
const maxImportBytes = 4 << 20

// configBackend serves export, import and service history.
type configBackend struct {
	kv    kvStore
	state *stateBackend
	now   func() time.Time
}

var _ httpapi.ConfigBackend = (*configBackend)(nil)

// current is what the group holds of every kind: kind → name → item.
type current map[string]map[string]fsm.Item

func (b *configBackend) read(ctx context.Context, cluster string) (current, error) {
	cur := current{}
	for _, k := range configKinds {
		items, err := b.kv.List(ctx, cluster, fsm.ListQuery{Prefix: k.prefix, Limit: fsm.MaxList})
		if err != nil {
			return nil, apiError("read "+k.name, err)
		}
		if len(items) >= fsm.MaxList {
			return nil, fmt.Errorf("read %s: more than %d", k.name, fsm.MaxList)
		}
		m := map[string]fsm.Item{}
		for _, it := range items {
			m[strings.TrimPrefix(it.Key, k.prefix)] = it
		}
		cur[k.name] = m
	}
	return cur, nil
}

// plan fingerprints cur: the key and version of every item read. An
// import given the fingerprint of a dry run applies only if nothing it
// read has changed since.
func (cur current) plan() string {
	h := sha256.New()
	for _, k := range configKinds {
		names := make([]string, 0, len(cur[k.name]))
		for n := range cur[k.name] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(h, "%s\x00%s\x00%d\n", k.name, n, cur[k.name][n].Version)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Export returns the cluster's configuration: every kind, items in name
// order, without server fields.
func (b *configBackend) Export(ctx context.Context, cluster string) (map[string]any, error) {
	cur, err := b.read(ctx, cluster)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"format": exportFormat}
	for _, k := range configKinds {
		names := sortedNames(cur[k.name])
		items := make([]json.RawMessage, 0, len(names))
		for _, n := range names {
			e, err := k.export(n, cur[k.name][n].Value)
			if err != nil {
				return nil, fmt.Errorf("export %s %q: %w", k.name, n, err)
			}
			items = append(items, e)
		}
		out[k.name] = items
	}
	return out, nil
}

func sortedNames(m map[string]fsm.Item) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// desired is one validated item of the file.
type desired struct {
	name  string
	value []byte
	form  json.RawMessage // the export form, to compare with the group's
}

// parseFile validates the whole file and returns, per kind present in it,
// its items; all errors together, each naming the item and field.
func parseFile(body []byte, now time.Time) (map[string][]desired, []httpapi.ImportProblem) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&top); err != nil {
		return nil, []httpapi.ImportProblem{{Error: fmt.Sprintf("the file is not a JSON object: %v", err)}}
	}
	if dec.More() {
		return nil, []httpapi.ImportProblem{{Error: "trailing data after the JSON object"}}
	}
	var probs []httpapi.ImportProblem
	known := map[string]*configKind{}
	for i := range configKinds {
		known[configKinds[i].name] = &configKinds[i]
	}
	keys := make([]string, 0, len(top))
	for key := range top {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if key == "format" {
			var f int
			if json.Unmarshal(top[key], &f) != nil || f != exportFormat {
				probs = append(probs, httpapi.ImportProblem{Field: "format", Error: fmt.Sprintf("format %s: this version reads format %d", top[key], exportFormat)})
			}
			continue
		}
		if known[key] == nil {
			names := make([]string, 0, len(configKinds))
			for _, k := range configKinds {
				names = append(names, k.name)
			}
			probs = append(probs, httpapi.ImportProblem{Kind: key, Error: fmt.Sprintf("unknown kind %q (known: format, %s)", key, strings.Join(names, ", "))})
		}
	}
	out := map[string][]desired{}
	for _, k := range configKinds {
		raw, ok := top[k.name]
		if !ok {
			continue // absent: left alone, even with prune
		}
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			probs = append(probs, httpapi.ImportProblem{Kind: k.name, Error: k.name + " must be a list of definitions"})
			continue
		}
		seen := map[string]int{}
		list := []desired{}
		for i, it := range items {
			idx := i
			name, value, err := k.store(it, now)
			if err != nil {
				probs = append(probs, problem(k.name, idx, name, err))
				continue
			}
			if j, dup := seen[name]; dup {
				probs = append(probs, httpapi.ImportProblem{Kind: k.name, Index: &idx, Name: name, Field: "name",
					Error: fmt.Sprintf("%s[%d] %q: the same name as %s[%d]", k.name, i, name, k.name, j)})
				continue
			}
			seen[name] = i
			form, err := k.export(name, value)
			if err != nil {
				probs = append(probs, problem(k.name, idx, name, err))
				continue
			}
			list = append(list, desired{name: name, value: value, form: form})
		}
		out[k.name] = list
	}
	return out, probs
}

// problem names the item and, for a validation error, the field.
func problem(kind string, idx int, name string, err error) httpapi.ImportProblem {
	p := httpapi.ImportProblem{Kind: kind, Index: &idx, Name: name}
	var sve *dispatch.ValidationError
	var cve *schedule.ValidationError
	switch {
	case errors.As(err, &sve):
		p.Field = sve.Field
	case errors.As(err, &cve):
		p.Field = cve.Field
	}
	label := fmt.Sprintf("%s[%d]", kind, idx)
	if name != "" {
		label += fmt.Sprintf(" %q", name)
	}
	p.Error = label + ": " + err.Error()
	return p
}

// Import validates body (an export file) and computes what would change;
// unless dryRun, it applies every change in one command, by
// compare-and-set on every key it writes or deletes (and, given plan, only
// if nothing it read changed since the dry run that returned plan).
func (b *configBackend) Import(ctx context.Context, cluster string, body []byte, opts httpapi.ImportOptions) (httpapi.ImportResult, error) {
	now := b.now()
	want, probs := parseFile(body, now)
	if len(probs) > 0 {
		return httpapi.ImportResult{Problems: probs}, httpapi.Errorf(http.StatusBadRequest, "invalid_import",
			"%d problem(s) in the file, nothing was changed: %s", len(probs), probs[0].Error)
	}
	cur, err := b.read(ctx, cluster)
	if err != nil {
		return httpapi.ImportResult{}, err
	}
	res := httpapi.ImportResult{DryRun: opts.DryRun, Prune: opts.Prune, Plan: cur.plan(), Changes: []httpapi.ImportChange{}}
	if opts.Plan != "" && opts.Plan != res.Plan {
		return res, httpapi.Errorf(http.StatusConflict, "conflict",
			"the cluster's configuration changed since the dry run (plan %s, now %s): nothing was applied; run the import again to see the new diff", opts.Plan, res.Plan)
	}
	var ops []fsm.Op
	size := 0
	add := func(op fsm.Op) {
		ops = append(ops, op)
		size += len(op.Key) + len(op.Value)
	}
	for _, k := range configKinds {
		list, present := want[k.name]
		if !present {
			continue
		}
		inFile := map[string]bool{}
		for _, d := range list {
			inFile[d.name] = true
			it, exists := cur[k.name][d.name]
			action := httpapi.ChangeCreate
			var cas uint64
			if exists {
				form, err := k.export(d.name, it.Value)
				if err == nil && bytes.Equal(form, d.form) {
					res.Unchanged++
					continue
				}
				action, cas = httpapi.ChangeUpdate, it.Version
			}
			res.Changes = append(res.Changes, httpapi.ImportChange{Kind: k.name, Name: d.name, Action: action, Version: cas})
			c := cas
			add(fsm.Op{Type: fsm.OpPut, Key: k.prefix + d.name, Value: d.value, CAS: &c})
			if k.extra != nil { // in a dry run too: they count against the bounds
				more, err := k.extra(ctx, b.kv, cluster, d.name, d.value, now)
				if err != nil {
					return res, apiError("import", err)
				}
				for _, op := range more {
					add(op)
				}
			}
		}
		for _, n := range sortedNames(cur[k.name]) {
			if inFile[n] {
				continue
			}
			it := cur[k.name][n]
			if !opts.Prune {
				res.Kept++
				continue
			}
			res.Changes = append(res.Changes, httpapi.ImportChange{Kind: k.name, Name: n, Action: httpapi.ChangeDelete, Version: it.Version})
			v := it.Version
			add(fsm.Op{Type: fsm.OpDelete, Key: it.Key, CAS: &v})
			if k.extra != nil { // in a dry run too: they count against the bounds
				more, err := k.extra(ctx, b.kv, cluster, n, nil, now)
				if err != nil {
					return res, apiError("import", err)
				}
				for _, op := range more {
					add(op)
				}
			}
		}
	}
	if len(ops) > fsm.MaxOps || size > maxImportBytes {
		return res, httpapi.Errorf(http.StatusRequestEntityTooLarge, "too_large",
			"the import changes %d keys (%d bytes) in one atomic write, more than %d keys or %d bytes: split the file by kind or by item", len(ops), size, fsm.MaxOps, maxImportBytes)
	}
	if opts.DryRun || len(ops) == 0 {
		return res, nil
	}
	r, err := b.kv.Apply(ctx, cluster, fsm.Command{Ops: ops})
	for _, c := range res.Changes {
		if c.Kind == "services" {
			b.state.serviceChanged(cluster, c.Name)
		}
	}
	if err != nil {
		return res, apiError("import", err)
	}
	if r.Conflict {
		return res, httpapi.Errorf(http.StatusConflict, "conflict",
			"%s changed while the import was applied: nothing was applied; run the import again to see the new diff", r.ConflictKey)
	}
	res.Applied = true
	return res, nil
}
