package node

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/meshgw/meshgw/node/config"
)

// regInput is one operation on the register "the command of service reg".
type regInput struct {
	write bool
	value int
}

// registerModel: a single register; a read returns the last write (0 before any).
var registerModel = porcupine.Model{
	Init: func() interface{} { return 0 },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(int) == state.(int), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("put(%d)", in.value)
		}
		return fmt.Sprintf("get() -> %v", output)
	},
}

// TestServiceRegistryIsLinearizable records a history of concurrent writes
// and reads of one service through every node while the Raft leader is
// killed, and checks it with porcupine. A write whose outcome is unknown
// (error or timeout) may have taken effect at any later time; failed reads
// are dropped.
func TestServiceRegistryIsLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster with a leader kill")
	}
	a1 := startAgent(t, testConfig(t, "l1", nil))
	join := []string{a1.cfg.BindAddr}
	agents := []*Agent{a1,
		startAgent(t, testConfig(t, "l2", func(c *config.Runtime) { c.Join = join })),
		startAgent(t, testConfig(t, "l3", func(c *config.Runtime) { c.Join = join }))}
	def := func(v int) map[string]any {
		return map[string]any{"name": "reg", "type": "exec", "command": []string{"echo", strconv.Itoa(v)}}
	}
	eventually(t, 30*time.Second, func() error {
		_, err := do("PUT", a1.HTTPAddr(), "/v1/services/reg", def(0), nil)
		return err
	})
	var leader string
	eventually(t, 10*time.Second, func() (err error) { leader, err = leaderOf(a1.HTTPAddr()); return })

	start := time.Now()
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		killed  sync.Once
		wg      sync.WaitGroup
	)
	now := func() int64 { return int64(time.Since(start)) }
	deadline := start.Add(6 * time.Second)
	for c := 0; c < 6; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				a := agents[(c+i)%3]
				if a.cfg.NodeName == leader && !a.ready.Load() {
					continue
				}
				op := porcupine.Operation{ClientId: c, Call: now()}
				if i%2 == 0 {
					v := c*100000 + i + 1
					op.Input = regInput{write: true, value: v}
					_, err := do("PUT", a.HTTPAddr(), "/v1/services/reg", def(v), nil)
					op.Return = now()
					if err != nil {
						op.Return = math.MaxInt64 // unknown outcome: may apply any time later
					}
					op.Output = 0
				} else {
					op.Input = regInput{}
					var s struct {
						Command []string `json:"command"`
					}
					_, err := do("GET", a.HTTPAddr(), "/v1/services/reg", nil, &s)
					op.Return = now()
					if err != nil || len(s.Command) != 2 {
						continue
					}
					v, _ := strconv.Atoi(s.Command[1])
					op.Output = v
				}
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
				if time.Since(start) > 2*time.Second {
					killed.Do(func() {
						for _, x := range agents {
							if x.cfg.NodeName == leader {
								x.Shutdown()
							}
						}
					})
				}
			}
		}(c)
	}
	wg.Wait()
	reads := 0
	for _, op := range history {
		if !op.Input.(regInput).write {
			reads++
		}
	}
	res := porcupine.CheckOperationsTimeout(registerModel, history, 60*time.Second)
	t.Logf("history: %d operations (%d reads), leader %s killed at 2 s: %v", len(history), reads, leader, res)
	if res == porcupine.Illegal {
		t.Fatal("the service registry history is not linearizable")
	}
	if reads < 10 {
		t.Fatalf("only %d successful reads: the check proves little", reads)
	}
}
