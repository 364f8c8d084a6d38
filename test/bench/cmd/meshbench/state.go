package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// startEtcd starts a 3-member etcd on loopback, data on disk.
func startEtcd() []string {
	type m struct{ name, client, peer string }
	var ms []m
	for i := 1; i <= 3; i++ {
		ms = append(ms, m{fmt.Sprintf("e%d", i), fmt.Sprintf("http://127.0.0.1:%d", freePort()), fmt.Sprintf("http://127.0.0.1:%d", freePort())})
	}
	var cluster []string
	for _, x := range ms {
		cluster = append(cluster, x.name+"="+x.peer)
	}
	var endpoints []string
	for _, x := range ms {
		dir, _ := os.MkdirTemp("", "meshbench-etcd-")
		start("etcd", "--name", x.name, "--data-dir", dir, "--listen-client-urls", x.client, "--advertise-client-urls", x.client,
			"--listen-peer-urls", x.peer, "--initial-advertise-peer-urls", x.peer, "--initial-cluster", strings.Join(cluster, ","),
			"--initial-cluster-state", "new", "--log-level", "warn")
		endpoints = append(endpoints, x.client)
	}
	return endpoints
}

// benchState: replicated writes through meshgw's API (a service PUT, ~128 B,
// Raft on disk) vs etcd puts of 128 B, 1 and 32 clients.
func benchState(bin string) {
	nodes := startMesh(bin, 3)
	eps := startEtcd()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		fatal("etcd client: %v", err)
	}
	defer cli.Close()
	waitFor(30*time.Second, "etcd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "warmup", "x")
		return err
	})
	hc := httpClient()
	value := strings.Repeat("v", 128)
	body := func(name string) string {
		// ~128 B definition
		return fmt.Sprintf(`{"name":"%s","type":"exec","command":["echo","%s"]}`, name, value[:128-50-len(name)])
	}
	meshOp := func(c, i int) error {
		name := fmt.Sprintf("s%d-%d", c, i%1000)
		return put(hc, "http://"+nodes[c%len(nodes)].http+"/v1/services/"+name, body(name))
	}
	etcdOp := func(c, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, fmt.Sprintf("k%d-%d", c, i%1000), value)
		return err
	}
	for _, clients := range []int{1, 32} {
		var mRate, eRate, mP50, eP50, mP99, eP99 series
		for r := 0; r < *rounds; r++ {
			a := load(clients, *dur, meshOp)
			b := load(clients, *dur, etcdOp)
			mRate, eRate = append(mRate, a.rate), append(eRate, b.rate)
			mP50, eP50 = append(mP50, ms(a.p50)), append(eP50, ms(b.p50))
			mP99, eP99 = append(mP99, ms(a.p99)), append(eP99, ms(b.p99))
		}
		fmt.Printf("\n%d client(s): | measurement | meshgw median [range] | etcd median [range] | meshgw/etcd |\n|---|---|---|---|\n", clients)
		row("writes/s", "", mRate, eRate, true)
		row("p50", "ms", mP50, eP50, false)
		row("p99", "ms", mP99, eP99, false)
	}
	// Linearizable reads, 1 client.
	var mR, eR series
	for r := 0; r < *rounds; r++ {
		a := load(1, *dur/2, func(c, i int) error { return get("http://" + nodes[i%3].http + "/v1/services/warmup") })
		b := load(1, *dur/2, func(c, i int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := cli.Get(ctx, "warmup")
			return err
		})
		mR, eR = append(mR, ms(a.p50)), append(eR, ms(b.p50))
	}
	fmt.Printf("\nlinearizable read, 1 client: | measurement | meshgw | etcd | ratio |\n|---|---|---|---|\n")
	row("p50", "ms", mR, eR, false)
}
