package test

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"
)

// logLine returns the first line of n's log that holds every one of subs.
func (n *Node) logLine(subs ...string) (string, bool) {
	f, err := os.Open(n.LogPath)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		for _, s := range subs {
			if !strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		return sc.Text(), true
	}
	return "", false
}

// waitLogLine waits up to d for a line of n's log holding every one of subs.
func waitLogLine(t *testing.T, n *Node, d time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if line, ok := n.logLine(subs...); ok {
			return line
		}
		if time.Now().After(deadline) {
			n.dumpLog()
			t.Fatalf("%s logged no line with %q within %s", n.Name, subs, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The system says what it waits for: with 2 of 3 voters killed, the
// survivor logs, within seconds, that its group has no quorum, naming the
// two missing voters; once one is back it logs the quorum regained and
// how long it was gone.
func TestSurvivorLogsNoQuorumAndRegain(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	WaitMembers(t, 30*time.Second, c.Nodes, allStatus(c, "alive"))
	WaitLeader(t, c.Nodes, "default")
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	if _, ok := n1.logLine("no quorum for the group"); ok {
		t.Fatalf("n1 logged no quorum while the group was whole")
	}
	start := time.Now()
	n2.Kill()
	n3.Kill()
	line := waitLogLine(t, n1, 15*time.Second, `"level":"warn"`, "no quorum for the group of cluster default",
		"waiting for voters n2 (", "n3 (", "1 of 3 voters reachable, 2 needed")
	t.Logf("n1 said no quorum %s after the kills: %s", time.Since(start).Round(100*time.Millisecond), line)

	start = time.Now()
	n2.Start()
	line = waitLogLine(t, n1, 30*time.Second, `"level":"info"`, "quorum regained for the group of cluster default")
	t.Logf("n1 said quorum regained %s after n2's restart: %s", time.Since(start).Round(100*time.Millisecond), line)
	if !strings.Contains(line, `"lasted":`) {
		t.Errorf("regain line says not how long the loss lasted: %s", line)
	}
}
