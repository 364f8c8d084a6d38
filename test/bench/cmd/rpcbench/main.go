// Command rpcbench compares meshgw's transport request/reply with NATS
// request/reply in one run, alternating rounds so both see the same machine.
//
// meshgw: one server Transport with an echo handler, the client on a second
// Transport (one QUIC connection, one stream per call, mutual TLS).
// NATS: `nats-server -a 127.0.0.1 -p PORT` started here (Debian package
// nats-server), 2 responders in a queue group, one requesting connection.
// Bodies are 256 B. Per round: 1 caller (req/s, p50, p99) and 64 callers.
//
//	go run ./cmd/rpcbench -rounds 3 -d 4s
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

type result struct {
	rate     float64
	p50, p99 time.Duration
}

// load runs op from n callers for d and measures every call.
func load(n int, d time.Duration, op func() error) (result, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []time.Duration
		firstErr atomic.Value
	)
	stop := time.Now().Add(d)
	start := time.Now()
	for c := 0; c < n; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(stop) {
				t0 := time.Now()
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					break
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if e := firstErr.Load(); e != nil {
		return result{}, e.(error)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) == 0 {
		return result{}, fmt.Errorf("no calls completed")
	}
	return result{rate: float64(len(all)) / el.Seconds(), p50: all[len(all)/2], p99: all[len(all)*99/100]}, nil
}

type series []float64

func (s series) stats() (med, lo, hi float64) {
	c := append(series(nil), s...)
	sort.Float64s(c)
	return c[len(c)/2], c[0], c[len(c)-1]
}

func fatal(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "rpcbench: "+f+"\n", a...)
	os.Exit(1)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newTransport(dir, name string) *transport.Transport {
	ca, cert, key, err := tlsutil.EnsureDevFiles(dir, name)
	if err != nil {
		fatal("%v", err)
	}
	tc, err := tlsutil.LoadFiles(ca, cert, key)
	if err != nil {
		fatal("%v", err)
	}
	cfg := transport.DefaultConfig()
	cfg.BindAddr = "127.0.0.1:0"
	cfg.TLS = tc
	tr, err := transport.New(cfg, zerolog.Nop())
	if err != nil {
		fatal("%v", err)
	}
	return tr
}

func main() {
	rounds := flag.Int("rounds", 3, "alternating rounds (≥3 for a median)")
	dur := flag.Duration("d", 4*time.Second, "duration of one measurement")
	natsBin := flag.String("nats-server", "nats-server", "nats-server binary")
	flag.Parse()

	dir, err := os.MkdirTemp("", "rpcbench-")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(dir)
	srv := newTransport(dir, "server")
	srv.Handle("echo", func(ctx context.Context, r *transport.Request) ([]byte, error) { return r.Body, nil })
	if err := srv.Start(); err != nil {
		fatal("%v", err)
	}
	defer srv.Close()
	cli := newTransport(dir, "client")
	if err := cli.Start(); err != nil {
		fatal("%v", err)
	}
	defer cli.Close()
	addr := srv.Addr().String()

	port := freePort()
	ns := exec.Command(*natsBin, "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	if err := ns.Start(); err != nil {
		fatal("start nats-server (apt-get install -y nats-server): %v", err)
	}
	defer func() { _ = ns.Process.Kill(); _ = ns.Wait() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var nc *nats.Conn
	for deadline := time.Now().Add(15 * time.Second); ; {
		if nc, err = nats.Connect(url); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fatal("nats-server not reachable: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer nc.Close()
	for i := 0; i < 2; i++ {
		rc, err := nats.Connect(url)
		if err != nil {
			fatal("responder: %v", err)
		}
		defer rc.Close()
		if _, err := rc.QueueSubscribe("echo", "workers", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			fatal("subscribe: %v", err)
		}
		if err := rc.Flush(); err != nil {
			fatal("flush: %v", err)
		}
	}

	body := make([]byte, 256)
	meshOp := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cli.Call(ctx, addr, "echo", body)
		return err
	}
	natsOp := func() error {
		_, err := nc.Request("echo", body, 5*time.Second)
		return err
	}
	// Warm up both (handshake, subscriptions, JIT of pools).
	if _, err := load(4, 300*time.Millisecond, meshOp); err != nil {
		fatal("meshgw warm-up: %v", err)
	}
	if _, err := load(4, 300*time.Millisecond, natsOp); err != nil {
		fatal("nats warm-up: %v", err)
	}

	type key struct {
		sys     string
		callers int
	}
	rate, p50, p99 := map[key]series{}, map[key]series{}, map[key]series{}
	for r := 0; r < *rounds; r++ {
		for _, callers := range []int{1, 64} {
			for _, s := range []struct {
				name string
				op   func() error
			}{{"meshgw", meshOp}, {"nats", natsOp}} {
				res, err := load(callers, *dur, s.op)
				if err != nil {
					fatal("%s, %d callers, round %d: %v", s.name, callers, r+1, err)
				}
				k := key{s.name, callers}
				rate[k] = append(rate[k], res.rate)
				p50[k] = append(p50[k], float64(res.p50)/float64(time.Millisecond))
				p99[k] = append(p99[k], float64(res.p99)/float64(time.Millisecond))
				fmt.Fprintf(os.Stderr, "round %d %-6s %2d callers: %8.0f req/s p50 %.3f ms p99 %.3f ms\n",
					r+1, s.name, callers, res.rate, float64(res.p50)/1e6, float64(res.p99)/1e6)
			}
		}
	}

	fmt.Printf("go %s %s/%s, %d CPUs, %d rounds of %s, 256 B request/reply\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), *rounds, *dur)
	fmt.Println("| callers | measurement | meshgw transport | NATS (2 responders, queue group) | meshgw/NATS |")
	fmt.Println("|---|---|---|---|---|")
	for _, callers := range []int{1, 64} {
		m, n := key{"meshgw", callers}, key{"nats", callers}
		for _, row := range []struct {
			name string
			s    map[key]series
			f    string
		}{{"req/s", rate, "%.0f"}, {"p50 (ms)", p50, "%.3f"}, {"p99 (ms)", p99, "%.3f"}} {
			mm, ml, mh := row.s[m].stats()
			nm, nl, nh := row.s[n].stats()
			cell := func(med, lo, hi float64) string {
				return fmt.Sprintf(row.f+" ["+row.f+"–"+row.f+"]", med, lo, hi)
			}
			fmt.Printf("| %d | %s | %s | %s | %.2f× |\n", callers, row.name, cell(mm, ml, mh), cell(nm, nl, nh), mm/nm)
		}
	}
}
