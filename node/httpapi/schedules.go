package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/meshgw/meshgw/schedule"
)

// ScheduleBackend serves the cluster's schedules (package schedule).
// Errors follow the Backend rules.
type ScheduleBackend interface {
	// PutSchedule writes a validated, normalized definition (cas as for
	// services) and returns its version.
	PutSchedule(ctx context.Context, cluster string, s schedule.Schedule, cas *uint64) (uint64, error)
	GetSchedule(ctx context.Context, cluster, name string) (schedule.Status, error)
	ListSchedules(ctx context.Context, cluster string) ([]schedule.Status, error)
	// DeleteSchedule removes the definition and its firing state.
	DeleteSchedule(ctx context.Context, cluster, name string, cas *uint64) error
}

// WithSchedules serves /v1/schedules. Who may call it (ACLs on):
//
//	GET    /v1/schedules, /v1/schedules/{name}  read
//	PUT    /v1/schedules/{name}                 write, and run on the schedule's service
//	DELETE /v1/schedules/{name}                 write
//
// A schedule runs its service with no one asking each time, so creating
// or changing one needs what running the service needs as well as write:
// a token with write alone cannot get a service run through a schedule.
// Schedules belong to the node's own cluster (the scheduler role runs
// there); ?cluster= is not taken.
func WithSchedules(s ScheduleBackend) Option { return func(a *API) { a.schedules = s } }

func (a *API) scheduleRoutes() {
	a.handle("GET /v1/schedules", a.listSchedules)
	a.handle("GET /v1/schedules/{name}", a.getSchedule)
	a.handle("PUT /v1/schedules/{name}", a.putSchedule)
	a.handle("DELETE /v1/schedules/{name}", a.deleteSchedule)
}

func scheduleName(r *http.Request) (string, error) {
	name := r.PathValue("name")
	if err := schedule.ValidateName(name); err != nil {
		return "", Errorf(http.StatusBadRequest, "bad_request", "schedule name: %v", err)
	}
	return name, nil
}

func (a *API) listSchedules(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	ss, err := a.schedules.ListSchedules(r.Context(), a.b.LocalCluster())
	if err != nil {
		return err
	}
	if ss == nil {
		ss = []schedule.Status{}
	}
	return WriteJSON(w, http.StatusOK, ss)
}

func (a *API) getSchedule(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	name, err := scheduleName(r)
	if err != nil {
		return err
	}
	s, err := a.schedules.GetSchedule(r.Context(), a.b.LocalCluster(), name)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, s)
}

// invalidSchedule is the 400 of a bad definition, naming the field.
func invalidSchedule(err error) error {
	e := Errorf(http.StatusBadRequest, "invalid_schedule", "%v", err)
	var ve *schedule.ValidationError
	if errors.As(err, &ve) {
		e.Path = ve.Field
	}
	return e
}

func (a *API) putSchedule(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := scheduleName(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	s, err := schedule.Parse(body)
	var ve *schedule.ValidationError
	if s.Name == "" && errors.As(err, &ve) && ve.Field == "name" {
		s.Name = name // the path names it
		err = s.Validate()
	}
	if err != nil {
		return invalidSchedule(err)
	}
	if s.Name != name {
		return Errorf(http.StatusBadRequest, "invalid_schedule", "invalid schedule: name: %q in the body does not match %q in the path", s.Name, name)
	}
	if err := require(r, PermRun, s.Service); err != nil {
		return err
	}
	s.Normalize()
	c := a.b.LocalCluster()
	v, err := a.schedules.PutSchedule(r.Context(), c, s, cas)
	if err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "version": v})
}

func (a *API) deleteSchedule(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "cas")
	if err != nil {
		return err
	}
	cas, err := casParam(q)
	if err != nil {
		return err
	}
	name, err := scheduleName(r)
	if err != nil {
		return err
	}
	c := a.b.LocalCluster()
	if err := a.schedules.DeleteSchedule(r.Context(), c, name, cas); err != nil {
		return err
	}
	return WriteJSON(w, http.StatusOK, map[string]any{"name": name, "cluster": c, "deleted": true})
}
