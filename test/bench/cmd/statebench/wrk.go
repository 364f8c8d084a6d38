package main

// meshgw's writes driven by wrk (C, one event loop per thread) instead of
// Go's net/http client: the same PUT /v1/services/NAME with distinct names,
// client c on node c mod 3 (one wrk process per node, -c = that node's
// share of the clients). It shows how much of the 2-core budget the Go
// client takes from the servers; etcd keeps its own Go client, so this is
// a second reading beside the main one, not a replacement for it.

import (
	"fmt"
	"github.com/meshgw/meshgw/test/bench/internal/wrkout"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

const putLua = `
local prefix, n = "w", 0
function init(args) prefix = args[1] .. "-" .. tostring(math.random(1, 1000000000)) end
function request()
  n = n + 1
  local name = prefix .. "-" .. n
  return wrk.format("PUT", "/v1/services/" .. name, {["Content-Type"] = "application/json"},
    '{"name":"' .. name .. '","type":"exec","command":["true"]}')
end
`

// wrkWrites runs clients spread over nodes for d and merges the wrk
// reports: rates add up, p50 and p99 are the largest of the processes'
// (a bound, not a merged histogram; with one client it is exact).
func wrkWrites(bin string, nodes []string, clients int, d time.Duration) result {
	script := filepath.Join(tmpRoot, "put.lua")
	if err := os.WriteFile(script, []byte(putLua), 0o644); err != nil {
		fatal("wrk script: %v", err)
	}
	s0, _ := cpuOf(bin)
	var (
		mu  sync.Mutex
		res result
		wg  sync.WaitGroup
	)
	for i, node := range nodes {
		share := clients / len(nodes)
		if i < clients%len(nodes) {
			share++
		}
		if share == 0 {
			continue
		}
		wg.Add(1)
		go func(i, share int, node string) {
			defer wg.Done()
			out, err := exec.Command("wrk", "-t1", fmt.Sprintf("-c%d", share), fmt.Sprintf("-d%ds", max(1, int(d.Round(time.Second).Seconds()))),
				"--latency", "-s", script, "http://"+node, "--", fmt.Sprintf("c%d", i)).CombinedOutput()
			if err != nil {
				fatal("wrk: %v\n%s", err, out)
			}
			w, err := wrkout.Parse(string(out))
			if err != nil {
				fatal("%v: %s", err, out)
			}
			mu.Lock()
			defer mu.Unlock()
			res.rate += w.Rate
			res.errs += w.Errors
			res.p50 = max(res.p50, w.P50)
			res.p99 = max(res.p99, w.P99)
		}(i, share, node)
	}
	wg.Wait()
	s1, _ := cpuOf(bin)
	res.n = int(res.rate * d.Seconds())
	if res.n > 0 {
		res.cpuServers = float64(s1-s0) * 1e6 / 100 / float64(res.n)
	}
	return res
}
