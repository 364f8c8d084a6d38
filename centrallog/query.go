package centrallog

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// MaxLimit bounds the entries one query returns.
const MaxLimit = 10000

// lateSlack: a query with a since bound walks back from the newest entry
// and stops at the first one stored that is this much older than since.
// Entries are stored in shipping order, about time order; one shipped
// later than this after its time (a node down for longer, its spool
// shipped on restart) can be missed by since-bounded queries, never by a
// cursor (After) walk.
const lateSlack = 10 * time.Minute

// Query selects entries. Status is a code ("404") or a class ("5xx").
type Query struct {
	Service string    `json:"service,omitempty"`
	Kind    string    `json:"kind,omitempty"`
	Status  string    `json:"status,omitempty"`
	Since   time.Time `json:"since,omitzero"`
	Until   time.Time `json:"until,omitzero"`
	// After is a cursor (the Seq of an entry already seen): when set, the
	// oldest Limit matching entries after it; else the newest Limit.
	After uint64 `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// Validate names the bad field.
func (q *Query) Validate() error {
	switch q.Kind {
	case "", KindHTTP, KindRun, KindAdmin:
	default:
		return fmt.Errorf("kind: %q is not http, run or admin", q.Kind)
	}
	if q.Status != "" {
		if _, _, err := statusRange(q.Status); err != nil {
			return err
		}
	}
	if q.Limit < 0 || q.Limit > MaxLimit {
		return fmt.Errorf("limit: %d is not between 1 and %d", q.Limit, MaxLimit)
	}
	if q.Limit == 0 {
		q.Limit = 100
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return fmt.Errorf("until: before since")
	}
	return nil
}

func statusRange(s string) (int, int, error) {
	if len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5' {
		lo := int(s[0]-'0') * 100
		return lo, lo + 99, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 999 {
		return 0, 0, fmt.Errorf("status: %q is neither a code like 404 nor a class like 5xx", s)
	}
	return n, n, nil
}

func (q Query) match() func(Entry) bool {
	lo, hi := -1, -1
	if q.Status != "" {
		lo, hi, _ = statusRange(q.Status)
	}
	return func(e Entry) bool {
		return (q.Service == "" || e.Service == q.Service) && (q.Kind == "" || e.Kind == q.Kind) &&
			(lo < 0 || (e.Status >= lo && e.Status <= hi)) &&
			(q.Since.IsZero() || !e.Time.Before(q.Since)) && (q.Until.IsZero() || e.Time.Before(q.Until))
	}
}

func (q Query) scan() *scan {
	sc := &scan{After: q.After, Limit: q.Limit, Match: q.match()}
	if q.After == 0 {
		sc.Reverse = true
		if !q.Since.IsZero() {
			cut := q.Since.Add(-lateSlack)
			sc.Stop = func(e Entry) bool { return e.Time.Before(cut) }
		}
	}
	return sc
}

type queryReq struct {
	KPI   *KPIQuery `json:"kpi,omitempty"`
	Query *Query    `json:"query,omitempty"`
}

// Result is a query's answer: entries oldest first, and a cursor (use as
// Query.After) past every entry this answer covered.
type Result struct {
	Entries []Stored `json:"entries"`
	Cursor  uint64   `json:"cursor"`
}

// Logs answers q from the log shard, linearizably: on the local replica,
// or through the active logger when this node holds none.
func (s *Service) Logs(ctx context.Context, q Query) (Result, error) {
	if err := q.Validate(); err != nil {
		return Result{}, err
	}
	if s.localReplica() == 0 {
		var out Result
		err := s.remote(ctx, queryReq{Query: &q}, &out)
		return out, err
	}
	v, err := s.read(ctx, q.scan())
	if err != nil {
		return Result{}, err
	}
	sr := v.(scanResult)
	out := Result{Entries: sr.Entries, Cursor: max(sr.Last, q.After)}
	if q.After == 0 {
		for i, j := 0, len(out.Entries)-1; i < j; i, j = i+1, j-1 {
			out.Entries[i], out.Entries[j] = out.Entries[j], out.Entries[i]
		}
	} else if len(out.Entries) == q.Limit {
		// The walk stopped at the limit: resume after its last entry.
		out.Cursor = out.Entries[len(out.Entries)-1].Seq
	}
	for _, st := range out.Entries {
		out.Cursor = max(out.Cursor, st.Seq)
	}
	return out, nil
}

func (s *Service) remote(ctx context.Context, req queryReq, out any) error {
	m, err := s.mesh.Logger(ctx)
	if err != nil {
		return fmt.Errorf("central log: find the active logger: %w", err)
	}
	if m.Name == s.cfg.NodeName || m.RPCAddr == "" {
		return fmt.Errorf("central log: no node holding the log can be reached from %s; retry later", s.cfg.NodeName)
	}
	b, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.OpTimeout)
	defer cancel()
	resp, err := s.rpc.Call(ctx, m.RPCAddr, MethodQuery, b)
	if err != nil {
		return fmt.Errorf("central log: query through %s: %w", m.Name, err)
	}
	return json.Unmarshal(resp, out)
}

func (s *Service) serveQuery(ctx context.Context, r *transport.Request) ([]byte, error) {
	if !s.started.Load() {
		return nil, transport.Errorf(codeNotActive, "%s: the central log of %s is starting", r.Method, s.cfg.NodeName)
	}
	if _, ok := s.mesh.Member(r.Peer); !ok {
		return nil, transport.Errorf(transport.CodeForbidden, "%s: %s is not a live node of cluster %s", r.Method, r.Peer, s.cfg.Cluster)
	}
	var req queryReq
	if err := json.Unmarshal(r.Body, &req); err != nil {
		return nil, transport.Errorf("bad_request", "%s: undecodable query", r.Method)
	}
	if s.localReplica() == 0 {
		return nil, transport.Errorf(codeNotActive, "%s holds no log shard replica", s.cfg.NodeName)
	}
	switch {
	case req.Query != nil:
		out, err := s.Logs(ctx, *req.Query)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	case req.KPI != nil:
		out, err := s.KPIs(ctx, *req.KPI)
		if err != nil {
			return nil, err
		}
		return json.Marshal(out)
	}
	return nil, transport.Errorf("bad_request", "%s: empty query", r.Method)
}

// KPIQuery asks for per-service figures in windows of Window between
// Since and Until.
type KPIQuery struct {
	Service string        `json:"service,omitempty"`
	Window  time.Duration `json:"window"`
	Since   time.Time     `json:"since"`
	Until   time.Time     `json:"until"`
}

// KPI is one service's figures over one window (http and run entries).
type KPI struct {
	Service string    `json:"service"`
	Start   time.Time `json:"window_start"`
	Window  string    `json:"window"`
	Count   int       `json:"count"`
	Errors  int       `json:"errors"`
	P50MS   float64   `json:"p50_ms"`
	P99MS   float64   `json:"p99_ms"`
}

// MaxWindows bounds the windows one KPI query spans.
const MaxWindows = 1440

// Validate names the bad field.
func (q *KPIQuery) Validate() error {
	if q.Window < time.Second {
		return fmt.Errorf("window: %s is shorter than 1s", q.Window)
	}
	if q.Until.IsZero() {
		q.Until = time.Now().UTC()
	}
	if q.Since.IsZero() {
		q.Since = q.Until.Add(-10 * q.Window)
	}
	if !q.Since.Before(q.Until) {
		return fmt.Errorf("since: not before until")
	}
	if q.Until.Sub(q.Since)/q.Window > MaxWindows {
		return fmt.Errorf("window: more than %d windows between since and until; widen the window", MaxWindows)
	}
	return nil
}

// KPIs computes q's figures, windows aligned to Window since the epoch,
// sorted by service then window.
func (s *Service) KPIs(ctx context.Context, q KPIQuery) ([]KPI, error) {
	if err := q.Validate(); err != nil {
		return nil, err
	}
	if s.localReplica() == 0 {
		var out []KPI
		err := s.remote(ctx, queryReq{KPI: &q}, &out)
		return out, err
	}
	cut := q.Since.Add(-lateSlack)
	var acc kpiAcc
	// The walk keeps no entry: it adds each to its window as it goes, so
	// memory is one duration per entry in the range, not the entries.
	sc := &scan{Reverse: true, Begin: func() { acc = kpiAcc{} }, Stop: func(e Entry) bool { return e.Time.Before(cut) },
		Match: func(e Entry) bool {
			if (e.Kind == KindHTTP || e.Kind == KindRun) && (q.Service == "" || e.Service == q.Service) &&
				!e.Time.Before(q.Since) && e.Time.Before(q.Until) {
				acc.add(e, q.Window)
			}
			return false
		}}
	if _, err := s.read(ctx, sc); err != nil {
		return nil, err
	}
	return acc.result(q.Window), nil
}

type kpiKey struct {
	svc   string
	start int64
}

// kpiAcc sums entries into windows.
type kpiAcc struct {
	durs map[kpiKey][]float64
	errs map[kpiKey]int
}

func (a *kpiAcc) add(e Entry, window time.Duration) {
	if a.durs == nil {
		a.durs, a.errs = map[kpiKey][]float64{}, map[kpiKey]int{}
	}
	k := kpiKey{e.Service, e.Time.UnixNano() / int64(window) * int64(window)}
	a.durs[k] = append(a.durs[k], e.DurationMS)
	if e.Failed() {
		a.errs[k]++
	}
}

func (a *kpiAcc) result(window time.Duration) []KPI {
	out := make([]KPI, 0, len(a.durs))
	for k, d := range a.durs {
		sort.Float64s(d)
		out = append(out, KPI{Service: k.svc, Start: time.Unix(0, k.start).UTC(), Window: window.String(),
			Count: len(d), Errors: a.errs[k], P50MS: quantile(d, 0.50), P99MS: quantile(d, 0.99)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Start.Before(out[j].Start)
	})
	return out
}

// computeKPIs is KPIs' arithmetic over a list (tests).
func computeKPIs(entries []Stored, window time.Duration) []KPI {
	var acc kpiAcc
	for _, st := range entries {
		acc.add(st.Entry, window)
	}
	return acc.result(window)
}

// quantile of sorted d (nearest rank).
func quantile(d []float64, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.999999) - 1
	return d[max(0, min(i, len(d)-1))]
}
