package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// benchRPC: request/reply of 256 B, meshgw's QUIC transport (mutual TLS,
// one connection, one stream per call, a handler on 2 responder
// transports picked round-robin) vs NATS request/reply with 2 responders
// in a queue group.
func benchRPC() {
	dir, _ := os.MkdirTemp("", "meshbench-tls-")
	mk := func(name string, handler bool) *transport.Transport {
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
		if handler {
			tr.Handle("echo", func(ctx context.Context, r *transport.Request) ([]byte, error) { return r.Body, nil })
		}
		if err := tr.Start(); err != nil {
			fatal("%v", err)
		}
		return tr
	}
	r1, r2, cl := mk("r1", true), mk("r2", true), mk("client", false)
	defer r1.Close()
	defer r2.Close()
	defer cl.Close()
	addrs := []string{r1.Addr().String(), r2.Addr().String()}

	port := freePort()
	start("nats-server", "-a", "127.0.0.1", "-p", fmt.Sprint(port))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	var nc *nats.Conn
	waitFor(20*time.Second, "nats", func() (err error) { nc, err = nats.Connect(url); return })
	defer nc.Close()
	for i := 0; i < 2; i++ {
		rc, err := nats.Connect(url)
		if err != nil {
			fatal("%v", err)
		}
		defer rc.Close()
		rc.QueueSubscribe("echo", "workers", func(m *nats.Msg) { m.Respond(m.Data) })
		rc.Flush()
	}
	payload := make([]byte, 256)
	meshOp := func(c, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cl.Call(ctx, addrs[(c+i)%2], "echo", payload)
		return err
	}
	natsOp := func(c, i int) error {
		_, err := nc.Request("echo", payload, 2*time.Second)
		return err
	}
	for _, clients := range []int{1, 64} {
		var mRate, nRate, mP50, nP50, mP99, nP99 series
		for r := 0; r < *rounds; r++ {
			a := load(clients, *dur, meshOp)
			b := load(clients, *dur, natsOp)
			mRate, nRate = append(mRate, a.rate), append(nRate, b.rate)
			mP50, nP50 = append(mP50, ms(a.p50)), append(nP50, ms(b.p50))
			mP99, nP99 = append(mP99, ms(a.p99)), append(nP99, ms(b.p99))
		}
		fmt.Printf("\n%d caller(s): | measurement | meshgw QUIC RPC median [range] | NATS median [range] | meshgw/NATS |\n|---|---|---|---|\n", clients)
		row("req/s", "", mRate, nRate, true)
		row("p50", "ms", mP50, nP50, false)
		row("p99", "ms", mP99, nP99, false)
	}
}
