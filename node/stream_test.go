package node

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/meshgw/meshgw/node/config"
)

// stalledStream opens a streaming run of service on addr from a client
// with a tiny receive buffer that never reads, and returns the connection.
func stalledStream(t *testing.T, addr, service string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := fmt.Sprintf("POST /v1/services/%s/run?stream=true HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", service)
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestStalledStreamDoesNotPinTheRunner: a client that opens a streaming
// run and stops reading while the process writes far more than the socket
// buffers hold neither holds the process past its timeout nor the runner's
// slot: with one slot, the next run succeeds, and nothing stays in flight.
func TestStalledStreamDoesNotPinTheRunner(t *testing.T) {
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "remote"}[remote], func(t *testing.T) {
			one := func(c *config.Runtime) { c.MaxConcurrentExecs = 1; c.BootstrapExpect = 1 }
			run := startAgent(t, testConfig(t, "r1", one))
			gw := run
			if remote {
				gw = startAgent(t, testConfig(t, "g1", func(c *config.Runtime) {
					c.Roles = []string{"gateway"}
					c.BootstrapExpect = 1
					c.Join = []string{run.cfg.BindAddr}
				}))
			}
			// 1 MiB of NULs is 6 MiB of JSON ("\u0000"), beyond any socket
			// buffer; then the process sleeps past its timeout.
			flood := map[string]any{"name": "flood", "type": "exec", "timeout": "2s",
				"command": []string{"sh", "-c", "head -c 1048576 /dev/zero; sleep 30"}}
			quick := map[string]any{"name": "quick", "type": "exec", "command": []string{"echo", "ok"}}
			eventually(t, 30*time.Second, func() error {
				if _, err := do("PUT", gw.HTTPAddr(), "/v1/services/flood", flood, nil); err != nil {
					return err
				}
				_, err := do("PUT", gw.HTTPAddr(), "/v1/services/quick", quick, nil)
				return err
			})
			stalledStream(t, gw.HTTPAddr(), "flood")
			eventually(t, 10*time.Second, func() error {
				if run.exec.InFlight() != 1 {
					return fmt.Errorf("flood is not running yet")
				}
				return nil
			})
			start := time.Now()
			eventually(t, 15*time.Second, func() error {
				var res map[string]any
				if _, err := do("POST", gw.HTTPAddr(), "/v1/services/quick/run", nil, &res); err != nil {
					return err
				}
				if res["status"] != "succeeded" {
					return fmt.Errorf("quick: %v", res)
				}
				return nil
			})
			t.Logf("the next run succeeded %s after the stalled stream started", time.Since(start).Round(time.Millisecond))
			eventually(t, 10*time.Second, func() error {
				if n := gw.disp.Stats().InFlight; n != 0 {
					return fmt.Errorf("%d calls still in flight from %s", n, gw.cfg.NodeName)
				}
				if n := run.exec.InFlight(); n != 0 {
					return fmt.Errorf("%d executions still hold a slot on %s", n, run.cfg.NodeName)
				}
				return nil
			})
			// The stalled run itself ended, at its timeout, and is recorded.
			eventually(t, 10*time.Second, func() error {
				var es []map[string]any
				if _, err := do("GET", gw.HTTPAddr(), "/v1/executions?service=flood", nil, &es); err != nil {
					return err
				}
				if len(es) != 1 || es[0]["status"] != "timed_out" {
					return fmt.Errorf("flood executions: %v", es)
				}
				return nil
			})
		})
	}
}
