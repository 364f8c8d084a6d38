package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
)

// Service history: every write of a service definition that changes it
// also writes, in the same command, a revision under
// svc-history/<name>/<revision, 10 digits>, and deletes the revisions
// beyond the newest historyKeep. Revisions number each service's
// definitions from 1 (they are not store versions, which only exist once
// the write is applied). A revision key is written by compare-and-set on
// its absence, so two concurrent writers of one service cannot both take
// the same number: one gets a 409. A deleted service keeps its history,
// so `services revert` can bring it back; writing it again continues the
// numbering.

// historyKeep is how many revisions each service keeps.
const historyKeep = 10

const historyRoot = "svc-history/"

func historyPrefix(name string) string { return historyRoot + name + "/" }

func historyKey(name string, rev uint64) string {
	return fmt.Sprintf("%s%010d", historyPrefix(name), rev)
}

// storedRevision is the value of a revision key.
type storedRevision struct {
	Revision   uint64          `json:"revision"`
	WrittenAt  time.Time       `json:"written_at"`
	Definition json.RawMessage `json:"definition"`
}

// historyOps returns the ops that record val (a service definition as
// stored) as name's next revision and drop the oldest beyond historyKeep;
// none when val equals the newest revision.
func historyOps(ctx context.Context, kv kvStore, cluster, name string, val []byte, now time.Time) ([]fsm.Op, error) {
	items, err := kv.List(ctx, cluster, fsm.ListQuery{Prefix: historyPrefix(name), Limit: fsm.MaxOps})
	if err != nil {
		return nil, fmt.Errorf("read history of service %q: %w", name, err)
	}
	var last uint64
	if n := len(items); n > 0 {
		var r storedRevision
		if err := json.Unmarshal(items[n-1].Value, &r); err == nil {
			if bytes.Equal(r.Definition, val) {
				return nil, nil
			}
		}
		last, _ = strconv.ParseUint(strings.TrimPrefix(items[n-1].Key, historyPrefix(name)), 10, 64)
	}
	rev := storedRevision{Revision: last + 1, WrittenAt: now.UTC(), Definition: val}
	b, err := json.Marshal(rev)
	if err != nil {
		return nil, err
	}
	zero := uint64(0)
	ops := []fsm.Op{{Type: fsm.OpPut, Key: historyKey(name, rev.Revision), Value: b, CAS: &zero}}
	for i := 0; i+historyKeep-1 < len(items); i++ {
		v := items[i].Version
		ops = append(ops, fsm.Op{Type: fsm.OpDelete, Key: items[i].Key, CAS: &v})
	}
	return ops, nil
}

// isHistoryKey reports whether a conflict was on a revision key: another
// writer of the same service got there first.
func isHistoryKey(k string) bool { return strings.HasPrefix(k, historyRoot) }

func historyConflict(name string) error {
	return httpapi.Errorf(http.StatusConflict, "conflict",
		"service %q was written concurrently by another client; read it again and retry", name)
}

// ServiceHistory returns name's revisions, newest first.
func (b *configBackend) ServiceHistory(ctx context.Context, cluster, name string) ([]httpapi.ServiceRevision, error) {
	items, err := b.kv.List(ctx, cluster, fsm.ListQuery{Prefix: historyPrefix(name), Limit: fsm.MaxOps, Reverse: true})
	if err != nil {
		return nil, apiError("service history", err)
	}
	cur, found, err := b.kv.Get(ctx, cluster, dispatch.ServiceKey(name))
	if err != nil {
		return nil, apiError("service history", err)
	}
	if len(items) == 0 && !found {
		return nil, notFound("service", name)
	}
	out := make([]httpapi.ServiceRevision, 0, len(items))
	for _, it := range items {
		var r storedRevision
		if err := json.Unmarshal(it.Value, &r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", it.Key, err)
		}
		out = append(out, httpapi.ServiceRevision{Revision: r.Revision, WrittenAt: r.WrittenAt, Definition: r.Definition,
			Current: found && bytes.Equal(r.Definition, cur.Value)})
	}
	return out, nil
}

// RevertService writes revision rev of name's definition again, as a new
// write (and so a new revision).
func (b *configBackend) RevertService(ctx context.Context, cluster, name string, rev uint64) (uint64, error) {
	it, ok, err := b.kv.Get(ctx, cluster, historyKey(name, rev))
	if err != nil {
		return 0, apiError("revert service", err)
	}
	if !ok {
		return 0, httpapi.Errorf(http.StatusNotFound, "not_found",
			"service %q has no revision %d (it keeps the last %d: see meshgw services history %s)", name, rev, historyKeep, name)
	}
	var r storedRevision
	if err := json.Unmarshal(it.Value, &r); err != nil {
		return 0, fmt.Errorf("decode %s: %w", it.Key, err)
	}
	svc, err := dispatch.ParseService(r.Definition)
	if err != nil {
		return 0, httpapi.Errorf(http.StatusBadRequest, "invalid_service",
			"revision %d of service %q is no longer valid: %v", rev, name, err)
	}
	svc.Normalize()
	return b.state.PutService(ctx, cluster, svc, nil)
}
