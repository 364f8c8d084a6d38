package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// recObserver records what the dispatcher reports, keyed by service.
type recObserver struct {
	mu       sync.Mutex
	started  map[string]int
	driving  map[string]int
	finished map[string]int // service/status
	took     []time.Duration
}

func newRecObserver() *recObserver {
	return &recObserver{started: map[string]int{}, driving: map[string]int{}, finished: map[string]int{}}
}

func (o *recObserver) ExecStarted(c, s string) { o.mu.Lock(); o.started[c+"/"+s]++; o.mu.Unlock() }
func (o *recObserver) ExecDriving(c, s string, d int) {
	o.mu.Lock()
	o.driving[c+"/"+s] += d
	o.mu.Unlock()
}
func (o *recObserver) ExecFinished(c, s string, st Status, took time.Duration) {
	o.mu.Lock()
	o.finished[fmt.Sprintf("%s/%s/%s", c, s, st)]++
	o.took = append(o.took, took)
	o.mu.Unlock()
}

// The observer sees every accepted run once, its terminal status once, and
// the in-flight count back at zero when the runs are done, async included.
func TestObserverCountsRuns(t *testing.T) {
	e := newLocal(t, nil)
	o := newRecObserver()
	e.d.SetObserver(o)
	ctx := context.Background()
	if _, err := e.d.Run(ctx, testCluster, execSvc("true"), nil, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Run(ctx, testCluster, execSvc("sh", "-c", "exit 3"), nil, RunOptions{}); err != nil {
		t.Fatal(err)
	}
	ex, err := e.d.Run(ctx, testCluster, execSvc("sh", "-c", "sleep 0.3"), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	if n := o.driving[testCluster+"/svc"]; n != 1 {
		t.Errorf("driving while the async run sleeps = %d, want 1", n)
	}
	o.mu.Unlock()
	if _, err := e.d.Watch(ctx, testCluster, ex.ID, func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	// The async run's goroutine releases its live entry after the terminal
	// write that Watch saw: wait for it, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.mu.Lock()
		n := o.driving[testCluster+"/svc"]
		o.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("driving = %d after the runs ended, want 0", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := o.started[testCluster+"/svc"]; n != 3 {
		t.Errorf("started = %d, want 3", n)
	}
	want := map[string]int{testCluster + "/svc/succeeded": 2, testCluster + "/svc/failed": 1}
	if fmt.Sprint(o.finished) != fmt.Sprint(want) {
		t.Errorf("finished = %v, want %v", o.finished, want)
	}
	for _, d := range o.took {
		if d <= 0 || d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	}
}

// An async run refused because the queue is full was never started: it
// gets no record, so counting it would leave started above finished.
func TestObserverSkipsRefusedAsync(t *testing.T) {
	e := newLocal(t, func(c *Config) { c.MaxAsync = 1 })
	o := newRecObserver()
	e.d.SetObserver(o)
	ctx := context.Background()
	ex, err := e.d.Run(ctx, testCluster, execSvc("sh", "-c", "sleep 0.3"), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Run(ctx, testCluster, execSvc("true"), nil, RunOptions{Async: true}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second async run with MaxAsync 1: %v, want ErrBusy", err)
	}
	if _, err := e.d.Watch(ctx, testCluster, ex.ID, func(string, []byte) {}); err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := o.started[testCluster+"/svc"]; n != 1 {
		t.Errorf("started = %d, want 1 (the refused run has no record)", n)
	}
}
