package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
)

// benchFailover: the same load — 32 callers, each request a 50 ms unit of
// work on one of the workers — through (a) meshgw: 2 gateway-only nodes in
// front of 3 runners, an exec service `sleep 0.05` with retries 2; (b)
// NATS: request/reply to a queue group of 3 responder processes that sleep
// 50 ms, 2 s request timeout. One worker (a runner that is not a Raft
// voter; a responder) is killed with SIGKILL 3 s into a 10 s round. Counted
// per round: requests answered, requests failed, and the slowest answer.
func benchFailover(bin string) {
	type outcome struct {
		ok, failed int
		max        time.Duration
	}
	var mesh, nt []outcome
	for r := 0; r < *rounds; r++ {
		ok, failed, max := failoverMeshgw(bin)
		mesh = append(mesh, outcome{ok, failed, max})
		fmt.Printf("  round %d meshgw: %d answered, %d failed, slowest %s\n", r+1, ok, failed, max.Round(time.Millisecond))
		stopAll()
		ok, failed, max = failoverNATS()
		nt = append(nt, outcome{ok, failed, max})
		fmt.Printf("  round %d NATS:   %d answered, %d failed, slowest %s\n", r+1, ok, failed, max.Round(time.Millisecond))
		stopAll()
	}
	med := func(os []outcome, f func(outcome) float64) (float64, float64, float64) {
		var s series
		for _, o := range os {
			s = append(s, f(o))
		}
		lo, hi := s.span()
		return s.median(), lo, hi
	}
	fmt.Printf("\n| SIGKILL of 1 of 3 workers under 32 callers | meshgw median [range] | NATS median [range] |\n|---|---|---|\n")
	for _, m := range []struct {
		name string
		f    func(outcome) float64
	}{
		{"failed requests", func(o outcome) float64 { return float64(o.failed) }},
		{"answered requests", func(o outcome) float64 { return float64(o.ok) }},
		{"slowest answer (ms)", func(o outcome) float64 { return ms(o.max) }},
	} {
		a, alo, ahi := med(mesh, m.f)
		b, blo, bhi := med(nt, m.f)
		fmt.Printf("| %s | %.0f [%.0f–%.0f] | %.0f [%.0f–%.0f] |\n", m.name, a, alo, ahi, b, blo, bhi)
	}
}

const (
	failoverCallers = 32
	failoverRound   = 10 * time.Second
	failoverKillAt  = 3 * time.Second
)

// failLoad runs op from failoverCallers callers for failoverRound, calling
// kill once at failoverKillAt.
func failLoad(op func(caller, i int) error, kill func()) (ok, failed int, max time.Duration) {
	var nOK, nFail atomic.Int64
	var mu sync.Mutex
	end := time.Now().Add(failoverRound)
	var wg sync.WaitGroup
	for c := 0; c < failoverCallers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				t0 := time.Now()
				if err := op(c, i); err != nil {
					nFail.Add(1)
					continue
				}
				d := time.Since(t0)
				nOK.Add(1)
				mu.Lock()
				max = maxDur(max, d)
				mu.Unlock()
			}
		}(c)
	}
	time.AfterFunc(failoverKillAt, kill)
	wg.Wait()
	return int(nOK.Load()), int(nFail.Load()), max
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func failoverMeshgw(bin string) (ok, failed int, max time.Duration) {
	// Voters are the first three names: g1, g2, r1. r3 is a pure runner.
	names := []string{"g1", "g2", "r1", "r2", "r3"}
	nodes, cmds := startNodes(bin, names, func(i int) []string {
		if i < 2 {
			return []string{"-roles", "gateway", "-gossip-profile", "lan"}
		}
		return []string{"-roles", "runner", "-gossip-profile", "lan"}
	})
	hc := httpClient()
	if err := put(hc, "http://"+nodes[0].http+"/v1/services/work",
		`{"name":"work","type":"exec","command":["sleep","0.05"],"retries":2,"timeout":"10s"}`); err != nil {
		fatal("service: %v", err)
	}
	waitFor(30*time.Second, "3 live runners", func() error {
		b, err := getBody(hc, "http://"+nodes[0].http+"/v1/runners?status=alive")
		if err != nil {
			return err
		}
		var rs []json.RawMessage
		if json.Unmarshal(b, &rs) != nil || len(rs) != 3 {
			return fmt.Errorf("runners: %s", b)
		}
		return nil
	})
	return failLoad(func(c, i int) error {
		b, err := post(hc, "http://"+nodes[(c+i)%2].http+"/v1/services/work/run", "{}")
		if err == nil && !strings.Contains(string(b), `"succeeded"`) {
			err = fmt.Errorf("run: %s", b)
		}
		return err
	}, func() { _ = cmds[4].Process.Signal(syscall.SIGKILL) })
}

func getBody(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return io.ReadAll(resp.Body)
}

var natsResponder = flag.String("nats-responder", "", "internal: run as a NATS responder connected to this URL")

// runNATSResponder answers "work" requests in queue group "q" after 50 ms,
// each in its own goroutine, until killed.
func runNATSResponder(url string) {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := nc.QueueSubscribe("work", "q", func(m *nats.Msg) {
		if string(m.Data) == "probe" { // who answers: lets the bench see all 3 subscribed
			_ = m.Respond([]byte(fmt.Sprint(os.Getpid())))
			return
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			_ = m.Respond(m.Data)
		}()
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	_ = nc.Flush()
	select {}
}

func failoverNATS() (ok, failed int, max time.Duration) {
	port := freePort()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	start("nats-server", "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	var nc *nats.Conn
	waitFor(10*time.Second, "nats-server", func() (err error) {
		nc, err = nats.Connect(url)
		return err
	})
	defer nc.Close()
	self, err := os.Executable()
	if err != nil {
		fatal("%v", err)
	}
	var responders []*exec.Cmd
	for i := 0; i < 3; i++ {
		responders = append(responders, start(self, "-nats-responder", url))
	}
	seen := map[string]bool{}
	waitFor(10*time.Second, "3 responders", func() error {
		m, err := nc.Request("work", []byte("probe"), time.Second)
		if err != nil {
			return err
		}
		if seen[string(m.Data)] = true; len(seen) < 3 {
			return fmt.Errorf("%d of 3 responders answered", len(seen))
		}
		return nil
	})
	payload := []byte(strings.Repeat("x", 64))
	ok, failed, max = failLoad(func(c, i int) error {
		_, err := nc.Request("work", payload, 2*time.Second)
		return err
	}, func() { _ = responders[2].Process.Signal(syscall.SIGKILL) })
	return ok, failed, max
}
