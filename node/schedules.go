package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshgw/meshgw/consensus/fsm"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/roles"
	"github.com/meshgw/meshgw/schedule"
)

// schedulerRole is the singleton role that fires the cluster's schedules
// (package schedule): on the group's leader, its writes fenced.
func (a *Agent) schedulerRole() roles.Role {
	s := schedule.New(schedule.Config{}, schedStore{kv: a.state.kv}, schedFirer{state: a.state, disp: a.disp}, a.log)
	return roles.Role{Name: schedule.Role, Run: func(ctx context.Context, f *roles.Fence) error {
		return s.Run(roles.WithFence(ctx, f), f.Cluster)
	}}
}

// schedStore adapts consensus to schedule.Store; a write made with a
// role's fence in ctx carries the fence's compare-and-set.
type schedStore struct{ kv kvStore }

var _ schedule.Store = schedStore{}

func (s schedStore) List(ctx context.Context, cluster, prefix string) ([]schedule.Item, error) {
	items, err := s.kv.List(ctx, cluster, fsm.ListQuery{Prefix: prefix, Limit: fsm.MaxList})
	if err != nil {
		return nil, err
	}
	out := make([]schedule.Item, len(items))
	for i, it := range items {
		out[i] = schedule.Item{Key: it.Key, Value: it.Value, Version: it.Version}
	}
	return out, nil
}

func (s schedStore) apply(ctx context.Context, cluster string, op fsm.Op) (uint64, error) {
	var res fsm.Result
	var err error
	if f := roles.FenceFrom(ctx); f != nil {
		res, err = applyFenced(ctx, s.kv, f, cluster, []fsm.Op{op})
	} else {
		res, err = s.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{op}})
	}
	if err != nil {
		return 0, err
	}
	if res.Conflict {
		return 0, fmt.Errorf("%w: %s", schedule.ErrConflict, res.ConflictKey)
	}
	if len(res.Versions) != 1 {
		return 0, fmt.Errorf("store: %d versions for 1 op", len(res.Versions))
	}
	return res.Versions[0], nil
}

func (s schedStore) Put(ctx context.Context, cluster, key string, value []byte, version uint64) (uint64, error) {
	return s.apply(ctx, cluster, fsm.Op{Type: fsm.OpPut, Key: key, Value: value, CAS: &version})
}

func (s schedStore) Delete(ctx context.Context, cluster, key string, version uint64) error {
	_, err := s.apply(ctx, cluster, fsm.Op{Type: fsm.OpDelete, Key: key, CAS: &version})
	return err
}

// schedFirer adapts the dispatcher to schedule.Firer: a firing is an async
// execution whose first record goes in one command with the schedule's
// state (RunOptions.With), guarded by the fence in ctx (dispatchStore).
type schedFirer struct {
	state *stateBackend
	disp  *dispatch.Dispatcher
}

var _ schedule.Firer = schedFirer{}

func (f schedFirer) Fire(ctx context.Context, cluster string, fr schedule.Firing) (string, error) {
	name := fr.Schedule.Name
	it, ok, err := f.state.kv.Get(ctx, cluster, dispatch.ServiceKey(fr.Schedule.Service))
	if err != nil {
		return "", fmt.Errorf("read service %q: %w", fr.Schedule.Service, err)
	}
	if !ok {
		return "", fmt.Errorf("%w: service %q does not exist", schedule.ErrPermanent, fr.Schedule.Service)
	}
	svc, err := decodeService(it)
	if err != nil {
		return "", fmt.Errorf("%w: %v", schedule.ErrPermanent, err)
	}
	input := []byte(fr.Schedule.Input)
	if len(input) == 0 {
		input = []byte("{}")
	}
	stateVer := fr.StateVersion
	e, err := f.disp.Run(ctx, cluster, svc, input, dispatch.RunOptions{Async: true, Schedule: name, ScheduledAt: fr.Tick,
		With: func(id string) []dispatch.KV {
			return []dispatch.KV{{Key: schedule.StateKey(name), Value: fr.State(id), CAS: &stateVer}}
		}})
	var se *dispatch.SchemaError
	switch {
	case err == nil:
		return e.ID, nil
	case errors.Is(err, dispatch.ErrConflict):
		return "", fmt.Errorf("%w: %v", schedule.ErrConflict, err)
	case errors.Is(err, dispatch.ErrWrongType), errors.Is(err, dispatch.ErrInputTooLarge),
		errors.Is(err, dispatch.ErrInvalidInput), errors.As(err, &se), errors.Is(err, dispatch.ErrTooLarge):
		return "", fmt.Errorf("%w: service %q: %v", schedule.ErrPermanent, svc.Name, err)
	}
	return "", err
}

func (f schedFirer) Terminal(ctx context.Context, cluster, id string) (bool, error) {
	e, err := f.disp.Get(ctx, cluster, id)
	if errors.Is(err, dispatch.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return e.Status.Terminal(), nil
}

// scheduleBackend serves /v1/schedules over consensus.
type scheduleBackend struct {
	kv  kvStore
	now func() time.Time
}

var _ httpapi.ScheduleBackend = (*scheduleBackend)(nil)

func (b *scheduleBackend) PutSchedule(ctx context.Context, cluster string, s schedule.Schedule, cas *uint64) (uint64, error) {
	// A schedule of a service that does not exist would only count missed
	// ticks: say so now. (Deleting the service later is the scheduler's to
	// report, in the schedule's state.)
	it, ok, err := b.kv.Get(ctx, cluster, dispatch.ServiceKey(s.Service))
	if err != nil {
		return 0, apiError("put schedule", err)
	}
	if !ok {
		e := httpapi.Errorf(http.StatusBadRequest, "invalid_schedule", "invalid schedule: service: no service %q in cluster %s: create it first", s.Service, cluster)
		e.Path = "service"
		return 0, e
	}
	if svc, err := decodeService(it); err == nil && svc.Type != dispatch.TypeExec {
		e := httpapi.Errorf(http.StatusBadRequest, "invalid_schedule", "invalid schedule: service: %q is an %s service; a schedule runs exec services", s.Service, svc.Type)
		e.Path = "service"
		return 0, e
	}
	s.Version = 0
	s.UpdatedAt = b.now().UTC()
	val, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	res, err := b.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{{Type: fsm.OpPut, Key: schedule.Key(s.Name), Value: val, CAS: cas}}})
	if err != nil {
		return 0, apiError("put schedule", err)
	}
	if res.Conflict {
		return 0, casConflict("schedule", s.Name, cas)
	}
	return res.Versions[0], nil
}

// casConflict is the 409 of a failed ?cas= on what's name.
func casConflict(what, name string, cas *uint64) error {
	if cas != nil && *cas == 0 {
		return httpapi.Errorf(http.StatusConflict, "conflict", "%s %q already exists (cas=0 requires that it does not)", what, name)
	}
	v := uint64(0)
	if cas != nil {
		v = *cas
	}
	return httpapi.Errorf(http.StatusConflict, "conflict", "%s %q is not at version %d: read it again and retry", what, name, v)
}

func decodeSchedule(it fsm.Item) (schedule.Schedule, error) {
	var s schedule.Schedule
	if err := json.Unmarshal(it.Value, &s); err != nil {
		return s, fmt.Errorf("decode %s: %w", it.Key, err)
	}
	s.Version = it.Version
	return s, nil
}

func (b *scheduleBackend) GetSchedule(ctx context.Context, cluster, name string) (schedule.Status, error) {
	it, ok, err := b.kv.Get(ctx, cluster, schedule.Key(name))
	if err != nil {
		return schedule.Status{}, apiError("get schedule", err)
	}
	if !ok {
		return schedule.Status{}, notFound("schedule", name)
	}
	s, err := decodeSchedule(it)
	if err != nil {
		return schedule.Status{}, err
	}
	st, found, err := b.kv.Get(ctx, cluster, schedule.StateKey(name))
	if err != nil {
		return schedule.Status{}, apiError("get schedule", err)
	}
	var state []byte
	if found {
		state = st.Value
	}
	return schedule.StatusOf(s, state, b.now()), nil
}

func (b *scheduleBackend) ListSchedules(ctx context.Context, cluster string) ([]schedule.Status, error) {
	items, err := b.kv.List(ctx, cluster, fsm.ListQuery{Prefix: schedule.Prefix, Limit: fsm.MaxList})
	if err != nil {
		return nil, apiError("list schedules", err)
	}
	states, err := b.kv.List(ctx, cluster, fsm.ListQuery{Prefix: schedule.StatePrefix, Limit: fsm.MaxList})
	if err != nil {
		return nil, apiError("list schedules", err)
	}
	byName := map[string][]byte{}
	for _, it := range states {
		byName[it.Key[len(schedule.StatePrefix):]] = it.Value
	}
	now := b.now()
	out := make([]schedule.Status, 0, len(items))
	for _, it := range items {
		s, err := decodeSchedule(it)
		if err != nil {
			return nil, err
		}
		out = append(out, schedule.StatusOf(s, byName[s.Name], now))
	}
	schedule.Sort(out)
	return out, nil
}

func (b *scheduleBackend) DeleteSchedule(ctx context.Context, cluster, name string, cas *uint64) error {
	it, ok, err := b.kv.Get(ctx, cluster, schedule.Key(name))
	if err != nil {
		return apiError("delete schedule", err)
	}
	if !ok {
		if cas != nil {
			return casConflict("schedule", name, cas)
		}
		return notFound("schedule", name)
	}
	ver := it.Version
	if cas != nil {
		ver = *cas
	}
	// The state goes with the definition (unconditionally: the scheduler
	// deletes a state left behind by a firing that raced this delete).
	res, err := b.kv.Apply(ctx, cluster, fsm.Command{Ops: []fsm.Op{
		{Type: fsm.OpDelete, Key: schedule.Key(name), CAS: &ver},
		{Type: fsm.OpDelete, Key: schedule.StateKey(name)}}})
	if err != nil {
		return apiError("delete schedule", err)
	}
	if res.Conflict {
		return casConflict("schedule", name, &ver)
	}
	return nil
}
