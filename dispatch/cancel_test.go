package dispatch

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgw/meshgw/transport"
)

// pidRun starts a sync run of `echo $$; exec sleep 30` through via and
// returns the process's pid (from its output) and the run's outcome.
func pidRun(t *testing.T, via *tnode, svc Service) (string, int, chan Execution) {
	t.Helper()
	pids := make(chan int, 1)
	var once sync.Once
	var buf strings.Builder
	done := make(chan Execution, 1)
	idc := make(chan string, 1)
	go func() {
		ex, err := via.d.Run(context.Background(), testCluster, svc, nil, RunOptions{
			OnOutput: func(_ string, c []byte) {
				buf.Write(c)
				if line, _, ok := strings.Cut(buf.String(), "\n"); ok {
					if pid, err := strconv.Atoi(line); err == nil {
						once.Do(func() { pids <- pid })
					}
				}
			},
		})
		if err != nil {
			t.Errorf("run: %v", err)
		}
		done <- ex
	}()
	var pid int
	select {
	case pid = <-pids:
	case <-time.After(10 * time.Second):
		t.Fatal("the run never printed its pid")
	}
	waitFor(t, 5*time.Second, "running record", func() bool {
		es, err := via.d.List(context.Background(), testCluster, ListFilter{Status: StatusRunning})
		if err == nil && len(es) == 1 {
			idc <- es[0].ID
			return true
		}
		return false
	})
	return <-idc, pid, done
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// A sync run driven by gw on runner r1, cancelled through a third node:
// the process group is killed, the record and the run's answer say
// cancelled within 2 s, and a second cancel answers the same.
func TestClusterCancelSyncRunThroughAnotherNode(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	other := c.add("other", false, nil)
	svc := execSvc("sh", "-c", "echo $$; exec sleep 30")
	svc.Timeout = Duration(60 * time.Second)
	id, pid, done := pidRun(t, gw, c.define(svc))

	start := time.Now()
	ex, err := other.d.Cancel(context.Background(), testCluster, id)
	if err != nil || ex.Status != StatusCancelled {
		t.Fatalf("cancel: %v %+v", err, ex)
	}
	waitFor(t, 2*time.Second-time.Since(start), "the process to be gone", func() bool { return processGone(pid) })
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cancel took %s", el)
	}
	select {
	case ans := <-done:
		if ans.Status != StatusCancelled || ans.ID != id {
			t.Fatalf("run answered %+v", ans)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the sync run did not return after its cancel")
	}
	rec := c.record(id)
	if rec.Status != StatusCancelled || rec.CancelRequestedBy != "other" || rec.Attempts != 1 ||
		rec.History[0].Outcome != string(StatusCancelled) {
		t.Fatalf("record %+v", rec)
	}
	// Idempotent: the record as it is, no error, from any node.
	for _, n := range []*tnode{other, gw} {
		again, err := n.d.Cancel(context.Background(), testCluster, id)
		if err != nil || again.Status != StatusCancelled || again.Version != rec.Version {
			t.Fatalf("second cancel through %s: %v %+v", n.name, err, again)
		}
	}
	if n := gw.d.Stats().Terminal[StatusCancelled]; n != 1 {
		t.Fatalf("gw counted %d cancelled", n)
	}
}

// An async run still queued (its claim did not land) is ended cancelled
// at once; recovery, once its lease lapses, must not start it.
func TestClusterCancelQueuedAsyncNeverRuns(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, func(cfg *Config) { cfg.QueueLease, cfg.NoRunnerWait = 300*time.Millisecond, 100*time.Millisecond })
	c.add("r1", true, nil)
	lead := c.add("lead", false, nil)
	marker := filepath.Join(t.TempDir(), "ran")
	svc := c.define(execSvc("touch", marker))

	// The create lands, the claim does not: the record stays queued.
	c.store.mu.Lock()
	c.store.limitWrites, c.store.writesLeft = true, 1
	c.store.mu.Unlock()
	ex, err := gw.d.Run(context.Background(), testCluster, svc, nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "gw to give up its claim", func() bool { return !gw.d.isLive(ex.ID) })
	c.store.mu.Lock()
	c.store.limitWrites = false
	c.store.mu.Unlock()
	if st := c.record(ex.ID).Status; st != StatusQueued {
		t.Fatalf("status %s, want queued", st)
	}

	got, err := lead.d.Cancel(context.Background(), testCluster, ex.ID)
	if err != nil || got.Status != StatusCancelled || got.Attempts != 0 {
		t.Fatalf("cancel: %v %+v", err, got)
	}
	// Recovery would re-dispatch an abandoned queued run well within this.
	lead.store.leader.Store(true)
	time.Sleep(time.Second) // nothing to wait for: proving an absence
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the cancelled run ran: %v", err)
	}
	if rec := c.record(ex.ID); rec.Status != StatusCancelled || rec.Attempts != 0 {
		t.Fatalf("record %+v", rec)
	}
}

// Cancel of a run that succeeded is ErrAlreadyFinished with the record.
func TestClusterCancelFinishedRun(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(execSvc("true")), nil, RunOptions{})
	if err != nil || ex.Status != StatusSucceeded {
		t.Fatalf("%v %+v", err, ex)
	}
	got, err := gw.d.Cancel(context.Background(), testCluster, ex.ID)
	if !errors.Is(err, ErrAlreadyFinished) || got.Status != StatusSucceeded {
		t.Fatalf("cancel of a succeeded run: %v %+v", err, got)
	}
	if _, err := gw.d.Cancel(context.Background(), testCluster, NewID(time.Now())); !errors.Is(err, ErrNotFound) {
		t.Fatalf("cancel of an unknown run: %v", err)
	}
}

// The driver of an async run dies (kill -9) and the cancel is recorded:
// recovery ends the run cancelled instead of re-running it.
func TestClusterCancelRecordedDriverKilledIsNotRerun(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	lead := c.add("lead", false, nil)
	marker := filepath.Join(t.TempDir(), "runs")
	svc := execSvc("sh", "-c", "echo x >> "+marker+"; exec sleep 30")
	svc.Timeout = Duration(60 * time.Second)
	svc.Retries = 2
	ex, err := gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the run to start", func() bool {
		b, _ := os.ReadFile(marker)
		return len(b) > 0
	})
	c.kill("gw")
	// The request is recorded; the driver cannot be signalled. The leader's
	// recovery ends it.
	lead.store.leader.Store(true)
	got, err := lead.d.Cancel(context.Background(), testCluster, ex.ID)
	if err != nil || got.Status != StatusCancelled {
		t.Fatalf("cancel: %v %+v", err, got)
	}
	time.Sleep(500 * time.Millisecond) // proving an absence: no second run
	b, _ := os.ReadFile(marker)
	if rec := c.record(ex.ID); rec.Status != StatusCancelled || rec.Attempts != 1 || string(b) != "x\n" {
		t.Fatalf("record %+v, runs %q", rec, b)
	}
}

// MethodCancel is refused to a caller that holds the mesh's CA but is no
// member of it.
func TestServeCancelRefusesStrangers(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	tr := c.transport("stranger")
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tr.Call(ctx, gw.tr.Addr().String(), MethodCancel, []byte(NewID(time.Now())))
	var re *transport.RemoteError
	if !errors.As(err, &re) || re.Code != codeForbidden {
		t.Fatalf("stranger's cancel: %v", err)
	}
	// A member is heard (and told gw drives no such execution).
	_, err = c.nodes["gw"].tr.Call(ctx, gw.tr.Addr().String(), MethodCancel, []byte(NewID(time.Now())))
	if !errors.As(err, &re) || re.Code != codeNotLive {
		t.Fatalf("member's cancel: %v", err)
	}
}

// The same for a sync run: its client went with the driver, and recovery
// ends it cancelled (as requested), not lost.
func TestClusterCancelRecordedSyncDriverKilledEndsCancelled(t *testing.T) {
	c := newTCluster(t)
	gw := c.add("gw", false, nil)
	c.add("r1", true, nil)
	lead := c.add("lead", false, nil)
	svc := execSvc("sleep", "30")
	svc.Timeout = Duration(60 * time.Second)
	go func() { _, _ = gw.d.Run(context.Background(), testCluster, c.define(svc), nil, RunOptions{}) }()
	var id string
	waitFor(t, 5*time.Second, "the run to start", func() bool {
		es, err := lead.d.List(context.Background(), testCluster, ListFilter{Status: StatusRunning})
		if err == nil && len(es) == 1 {
			id = es[0].ID
		}
		return id != ""
	})
	c.kill("gw")
	lead.store.leader.Store(true)
	got, err := lead.d.Cancel(context.Background(), testCluster, id)
	if err != nil || got.Status != StatusCancelled {
		t.Fatalf("cancel: %v %+v", err, got)
	}
}
