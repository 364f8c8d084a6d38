package main

import (
	"fmt"
	"strings"
)

// benchDispatch: end-to-end runs of a trivial exec service (`true`) through
// a gateway-only node's API to 2 runners, recorded in Raft (2 writes per
// run). No peer does this; the figure stands on its own.
func benchDispatch(bin string) {
	nodes := startMesh(bin, 3)
	hc := httpClient()
	if err := put(hc, "http://"+nodes[0].http+"/v1/services/true", `{"name":"true","type":"exec","command":["true"]}`); err != nil {
		fatal("service: %v", err)
	}
	for _, clients := range []int{1, 16} {
		var rate, p50, p99 series
		for r := 0; r < *rounds; r++ {
			a := load(clients, *dur, func(c, i int) error {
				b, err := post(hc, "http://"+nodes[(c+i)%3].http+"/v1/services/true/run", "{}")
				if err == nil && !strings.Contains(string(b), `"succeeded"`) {
					err = fmt.Errorf("run: %s", b)
				}
				return err
			})
			rate, p50, p99 = append(rate, a.rate), append(p50, ms(a.p50)), append(p99, ms(a.p99))
		}
		lo, hi := rate.span()
		fmt.Printf("dispatch, %d client(s): %.0f runs/s [%.0f–%.0f], p50 %.2f ms, p99 %.2f ms\n", clients, rate.median(), lo, hi, p50.median(), p99.median())
	}
}
