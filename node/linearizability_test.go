package node

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/meshgw/meshgw/node/config"
)

// regInput is one operation on a register "the command of service key".
type regInput struct {
	key   string
	write bool
	value int
}

// registerModel: one register per key (a read returns the last write to
// its key, 0 before any). Registers are independent, so the history is
// linearizable iff each key's sub-history is (Partition): each is a few
// clients' worth of operations, small enough for porcupine to decide,
// where one history of every operation may not be decided in time.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
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
			return fmt.Sprintf("put(%s, %d)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %v", in.key, output)
	},
}

// checkLinearizable checks history against model within timeout. Only Ok
// passes: Unknown (porcupine gave up at the timeout) proves nothing, so it
// fails like Illegal, which also writes a visualization to dir.
func checkLinearizable(model porcupine.Model, history []porcupine.Operation, timeout time.Duration, dir string) (porcupine.CheckResult, time.Duration, error) {
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	took := time.Since(start)
	switch res {
	case porcupine.Ok:
		return res, took, nil
	case porcupine.Illegal:
		path := filepath.Join(dir, "linearizability.html")
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			path = "(visualization failed: " + err.Error() + ")"
		}
		return res, took, fmt.Errorf("the history of %d operations is not linearizable: see %s", len(history), path)
	}
	return res, took, fmt.Errorf("porcupine could not decide %d operations within %s (%v): "+
		"the check proves nothing; make the history smaller or partition it", len(history), timeout, res)
}

// TestUnknownIsAFailure: a history porcupine cannot decide in time fails
// the check: every write overlaps every other and none returned, and the
// reads see the values in an order no write order explains.
func TestUnknownIsAFailure(t *testing.T) {
	var h []porcupine.Operation
	const writes = 40
	for i := 0; i < writes; i++ {
		h = append(h, porcupine.Operation{ClientId: i, Input: regInput{key: "k", write: true, value: i + 1},
			Call: 0, Output: 0, Return: math.MaxInt64})
	}
	for i := 0; i < writes; i++ {
		v := (i*7)%writes + 1
		h = append(h, porcupine.Operation{ClientId: writes + i, Input: regInput{key: "k"},
			Call: int64(10 + 2*i), Output: v, Return: int64(11 + 2*i)})
	}
	h = append(h, porcupine.Operation{ClientId: 2 * writes, Input: regInput{key: "k"}, Call: 1000, Output: 3, Return: 1001})
	res, took, err := checkLinearizable(registerModel, h, 200*time.Millisecond, t.TempDir())
	t.Logf("%d operations: %v after %s: %v", len(h), res, took.Round(time.Millisecond), err)
	if res != porcupine.Unknown {
		t.Skipf("porcupine decided this history (%v) in %s: it tests nothing here", res, took)
	}
	if err == nil {
		t.Fatal("an undecided history passed the check")
	}
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
	// Three registers (services reg0-reg2), each written and read by every
	// client in turn: with the operations spread over them, each key's
	// history is a third of the whole, which porcupine decides in time.
	const nkeys = 3
	def := func(key string, v int) map[string]any {
		return map[string]any{"name": key, "type": "exec", "command": []string{"echo", strconv.Itoa(v)}}
	}
	for k := 0; k < nkeys; k++ {
		key := fmt.Sprintf("reg%d", k)
		eventually(t, 30*time.Second, func() error {
			_, err := do("PUT", a1.HTTPAddr(), "/v1/services/"+key, def(key, 0), nil)
			return err
		})
	}
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
				key := fmt.Sprintf("reg%d", (c+i/2)%nkeys)
				op := porcupine.Operation{ClientId: c, Call: now()}
				if i%2 == 0 {
					v := c*100000 + i + 1
					op.Input = regInput{key: key, write: true, value: v}
					_, err := do("PUT", a.HTTPAddr(), "/v1/services/"+key, def(key, v), nil)
					op.Return = now()
					if err != nil {
						op.Return = math.MaxInt64 // unknown outcome: may apply any time later
					}
					op.Output = 0
				} else {
					op.Input = regInput{key: key}
					var s struct {
						Command []string `json:"command"`
					}
					_, err := do("GET", a.HTTPAddr(), "/v1/services/"+key, nil, &s)
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
	reads, unknown := 0, 0
	for _, op := range history {
		if !op.Input.(regInput).write {
			reads++
		} else if op.Return == math.MaxInt64 {
			unknown++
		}
	}
	res, took, err := checkLinearizable(registerModel, history, 60*time.Second, t.TempDir())
	t.Logf("history: %d operations (%d reads, %d writes of unknown outcome) over %d keys, leader %s killed at 2 s: "+
		"CheckOperationsVerbose %v in %s", len(history), reads, unknown, nkeys, leader, res, took.Round(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if reads < 10 {
		t.Fatalf("only %d successful reads: the check proves little", reads)
	}
}
