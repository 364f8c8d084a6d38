package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A `sleep 30` sync run accepted by one node and cancelled through
// another ends cancelled within 2 s, its process gone; a second cancel
// (through the CLI) answers the same.
func TestCancelSyncRunThroughAnotherNode(t *testing.T) {
	c := StartCluster(t, 3, Options{BootstrapExpect: 3})
	WaitLeader(t, c.Nodes, "default")
	WaitMembers(t, 20*time.Second, c.Nodes, allStatus(c, "alive"))
	pidFile := filepath.Join(t.TempDir(), "pid")
	putService(t, c.Nodes[0], map[string]any{"name": "sleeper", "type": "exec", "timeout": "60s",
		"command": []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 30"}})

	acceptor := c.Nodes[0]
	answer := make(chan runResult, 1)
	go func() {
		var r runResult
		_, err := acceptor.Do("POST", "/v1/services/sleeper/run", map[string]any{}, &r)
		if err != nil {
			r.Error = err.Error()
		}
		answer <- r
	}()
	var pid int
	Eventually(t, 15*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err == nil {
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return err
	})
	var running []runResult
	Eventually(t, 5*time.Second, func() error {
		if err := acceptor.GetJSON("/v1/executions?status=running", &running); err != nil {
			return err
		}
		if len(running) != 1 {
			return fmt.Errorf("%d running", len(running))
		}
		return nil
	})
	id, runnerName := running[0].ID, running[0].Runner
	var via *Node
	for _, n := range c.Nodes {
		if n != acceptor && n.Name != runnerName {
			via = n
			break
		}
	}
	t.Logf("run %s accepted by %s on runner %s, cancelled through %s", id, acceptor.Name, runnerName, via.Name)

	start := time.Now()
	var rec runResult
	if code, err := via.Do("POST", "/v1/executions/"+id+"/cancel", nil, &rec); err != nil || code != 200 ||
		rec.Status != "cancelled" {
		t.Fatalf("cancel: %d %v %+v", code, err, rec)
	}
	for !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("process %d still there %s after the cancel", pid, time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if took > 2*time.Second {
		t.Fatalf("cancel took %s", took)
	}
	t.Logf("cancelled and process gone in %s", took)
	select {
	case r := <-answer:
		if r.Status != "cancelled" || r.ID != id {
			t.Fatalf("the sync run answered %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the sync run did not answer after its cancel")
	}
	out, errOut, code := CLI(t, "executions", "cancel", id, "-http-addr", c.Nodes[1].HTTP)
	if code != 0 || !strings.Contains(out, `"cancelled"`) {
		t.Fatalf("second cancel: exit %d %q %q", code, out, errOut)
	}
}
