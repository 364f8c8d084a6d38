package main

// "dragonboat alone": the ceiling meshgw's write path sits under. Three
// child processes (this binary re-executed as `statebench raftnode`) each
// run a dragonboat NodeHost configured as meshgw configures its own
// (RTT 20 ms, election 10, heartbeat 1, CheckQuorum, PreVote, the small
// LogDB, snapshots every 10,000 entries, mutual TLS on the Raft links with
// certificates from `meshgw tls`), with a trivial in-memory key/value state
// machine. The load runs inside the nodes: client c proposes from node
// c%3 with SyncPropose, 128 B values, so there is no HTTP, no JSON and no
// meshgw code on the path, only Raft, its transport and its log.
//
// The driver talks to each child over its stdin/stdout, one line each way:
//
//	→ load CLIENTS DURATION_MS MAXOPS
//	← result N LAT_NS LAT_NS ...

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/valyala/fasthttp"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

const rawShard = 42

// kv is the trivial state machine: entry = key length (2 bytes), key, value.
type kv struct{ m map[string][]byte }

func (s *kv) Update(e sm.Entry) (sm.Result, error) {
	if len(e.Cmd) < 2 {
		return sm.Result{}, errors.New("short entry")
	}
	n := int(binary.BigEndian.Uint16(e.Cmd))
	if len(e.Cmd) < 2+n {
		return sm.Result{}, errors.New("short key")
	}
	s.m[string(e.Cmd[2:2+n])] = append([]byte(nil), e.Cmd[2+n:]...)
	return sm.Result{Value: 1}, nil
}

func (s *kv) Lookup(q any) (any, error) { return s.m[q.(string)], nil }

func (s *kv) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	bw := bufio.NewWriter(w)
	var hdr [4]byte
	for k, v := range s.m {
		binary.BigEndian.PutUint32(hdr[:], uint32(len(k)))
		bw.Write(hdr[:])
		bw.WriteString(k)
		binary.BigEndian.PutUint32(hdr[:], uint32(len(v)))
		bw.Write(hdr[:])
		bw.Write(v)
	}
	return bw.Flush()
}

func (s *kv) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	br := bufio.NewReader(r)
	m := map[string][]byte{}
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		k := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(br, k); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return err
		}
		v := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(br, v); err != nil {
			return err
		}
		m[string(k)] = v
	}
	s.m = m
	return nil
}

func (s *kv) Close() error { return nil }

// proposeKV proposes key=value (an entry of the kv state machine) and
// waits until it is applied, for at most 10 s.
func proposeKV(ctx context.Context, nh *dragonboat.NodeHost, key string, value []byte) error {
	cmd := make([]byte, 2+len(key)+len(value))
	binary.BigEndian.PutUint16(cmd, uint16(len(key)))
	copy(cmd[2:], key)
	copy(cmd[2+len(key):], value)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := nh.SyncPropose(ctx, nh.GetNoOPSession(rawShard), cmd)
	return err
}

// raftNode is the child: `statebench raftnode INDEX DIR ADDR1,ADDR2,ADDR3 HTTPADDR FASTADDR`.
// Besides the in-process load it serves PUT /k/KEY (body = value) with a
// bare net/http handler that proposes and answers 200 once applied: the
// same Raft group behind the cheapest HTTP API net/http allows; FASTADDR
// serves the same handler on valyala/fasthttp's server.
func raftNode(args []string) {
	if len(args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: statebench raftnode INDEX DIR ADDR,ADDR,ADDR HTTPADDR FASTADDR")
		os.Exit(2)
	}
	idx, _ := strconv.Atoi(args[0])
	dir, addrs := args[1], strings.Split(args[2], ",")
	logger.GetLogger("raft").SetLevel(logger.ERROR)
	logger.GetLogger("rsm").SetLevel(logger.ERROR)
	logger.GetLogger("transport").SetLevel(logger.ERROR)
	logger.GetLogger("dragonboat").SetLevel(logger.ERROR)
	logger.GetLogger("logdb").SetLevel(logger.ERROR)
	nhc := config.NodeHostConfig{
		NodeHostDir:    filepath.Join(dir, "nh"),
		RTTMillisecond: 20,
		RaftAddress:    addrs[idx],
		MutualTLS:      true,
		CAFile:         filepath.Join(dir, "..", "ca.pem"),
		CertFile:       filepath.Join(dir, "..", fmt.Sprintf("r%d.pem", idx+1)),
		KeyFile:        filepath.Join(dir, "..", fmt.Sprintf("r%d-key.pem", idx+1)),
	}
	nhc.Expert.LogDB = config.GetSmallMemLogDBConfig()
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftnode:", err)
		os.Exit(1)
	}
	defer nh.Close()
	members := map[uint64]string{}
	for i, a := range addrs {
		members[uint64(i+1)] = a
	}
	rc := config.Config{ReplicaID: uint64(idx + 1), ShardID: rawShard, ElectionRTT: 10, HeartbeatRTT: 1,
		CheckQuorum: true, PreVote: true, SnapshotEntries: 10000, CompactionOverhead: 2000}
	if err := nh.StartReplica(members, false, func(uint64, uint64) sm.IStateMachine { return &kv{m: map[string][]byte{}} }, rc); err != nil {
		fmt.Fprintln(os.Stderr, "raftnode:", err)
		os.Exit(1)
	}
	hl, err := net.Listen("tcp", args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftnode:", err)
		os.Exit(1)
	}
	go http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/k/")
		value, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		if r.Method != http.MethodPut || key == "" || err != nil {
			http.Error(w, "PUT /k/KEY", http.StatusBadRequest)
			return
		}
		if err := proposeKV(r.Context(), nh, key, value); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	}))
	fl, err := net.Listen("tcp", args[4])
	if err != nil {
		fmt.Fprintln(os.Stderr, "raftnode:", err)
		os.Exit(1)
	}
	go fasthttp.Serve(fl, func(fc *fasthttp.RequestCtx) {
		key := strings.TrimPrefix(string(fc.Path()), "/k/")
		value := fc.PostBody()
		if !fc.IsPut() || key == "" || len(value) > 4096 {
			fc.Error("PUT /k/KEY", fasthttp.StatusBadRequest)
			return
		}
		if err := proposeKV(context.Background(), nh, key, value); err != nil {
			fc.Error(err.Error(), fasthttp.StatusServiceUnavailable)
			return
		}
		fc.SetContentType("application/json")
		fc.SetBodyString(`{"ok":true}`)
	})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var clients, maxOps int
		var durMs int64
		if _, err := fmt.Sscanf(in.Text(), "load %d %d %d", &clients, &durMs, &maxOps); err != nil {
			fmt.Fprintln(os.Stderr, "raftnode: bad command:", in.Text())
			os.Exit(2)
		}
		lat := raftLoad(nh, idx, clients, time.Duration(durMs)*time.Millisecond, maxOps)
		leader, _, _, _ := nh.GetLeaderID(rawShard)
		var b strings.Builder
		fmt.Fprintf(&b, "result %d %d", leader, len(lat))
		for _, l := range lat {
			b.WriteByte(' ')
			b.WriteString(strconv.FormatInt(int64(l), 10))
		}
		fmt.Println(b.String())
	}
}

// raftLoad runs this node's share of clients (c%3 == idx) for d and
// returns the latencies of the acknowledged proposals.
func raftLoad(nh *dragonboat.NodeHost, idx, clients int, d time.Duration, maxOps int) []time.Duration {
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	value := []byte(strings.Repeat("v", 128))
	end := time.Now().Add(d)
	for c := idx; c < clients; c += 3 {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for i := 0; i < maxOps/clients && time.Now().Before(end); i++ {
				key := fmt.Sprintf("k%d-%d", c, i)
				t := time.Now()
				if err := proposeKV(context.Background(), nh, key, value); err == nil {
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	return lat
}

// rawGroup is the driver's handle on the three children.
type rawGroup struct {
	leader int      // 1-based index of the leader at the last load
	http   []string // the children's bare net/http fronts
	fast   []string // the children's fasthttp fronts
	in     []io.WriteCloser
	out    []*bufio.Reader
	pids   []int
}

// startRaw creates TLS material with meshgw's own CLI, starts the three
// children and waits until a write goes through.
func startRaw(meshgw string) *rawGroup {
	dir := filepath.Join(tmpRoot, "raw")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fatal("raw dir: %v", err)
	}
	tlsCmd := func(args ...string) {
		if out, err := exec.Command(meshgw, append([]string{"tls"}, args...)...).CombinedOutput(); err != nil {
			fatal("meshgw tls %v: %v\n%s", args, err, out)
		}
	}
	tlsCmd("ca", "create", "-dir", dir)
	var addrs []string
	for i := 1; i <= 3; i++ {
		tlsCmd("cert", "create", "-node", fmt.Sprintf("r%d", i), "-dir", dir, "-host", "127.0.0.1")
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", freePort()))
	}
	self, err := os.Executable()
	if err != nil {
		fatal("executable: %v", err)
	}
	g := &rawGroup{}
	for i := 0; i < 3; i++ {
		g.http = append(g.http, fmt.Sprintf("127.0.0.1:%d", freePort()))
		g.fast = append(g.fast, fmt.Sprintf("127.0.0.1:%d", freePort()))
		cmd := exec.Command(self, "raftnode", strconv.Itoa(i), filepath.Join(dir, fmt.Sprintf("n%d", i+1)), strings.Join(addrs, ","), g.http[i], g.fast[i])
		log, err := os.Create(filepath.Join(tmpRoot, fmt.Sprintf("raw-n%d.log", i+1)))
		if err != nil {
			fatal("log: %v", err)
		}
		cmd.Stderr = log
		w, err := cmd.StdinPipe()
		if err != nil {
			fatal("pipe: %v", err)
		}
		r, err := cmd.StdoutPipe()
		if err != nil {
			fatal("pipe: %v", err)
		}
		if err := cmd.Start(); err != nil {
			fatal("start raftnode: %v", err)
		}
		procsMu.Lock()
		procs = append(procs, cmd)
		procsMu.Unlock()
		g.in, g.out, g.pids = append(g.in, w), append(g.out, bufio.NewReaderSize(r, 1<<20)), append(g.pids, cmd.Process.Pid)
	}
	// Warm up: one client until a proposal is acknowledged.
	waitFor(60*time.Second, "dragonboat group", func() error {
		if lat := g.load(1, 200*time.Millisecond, 1); len(lat) == 0 {
			return errors.New("no write acknowledged yet")
		}
		return nil
	})
	return g
}

// load runs clients spread over the three nodes and merges the latencies.
func (g *rawGroup) load(clients int, d time.Duration, maxOps int) []time.Duration {
	for _, w := range g.in {
		fmt.Fprintf(w, "load %d %d %d\n", clients, d.Milliseconds(), maxOps)
	}
	var all []time.Duration
	for i, r := range g.out {
		line, err := r.ReadString('\n')
		if err != nil {
			fatal("raftnode %d: %v", i+1, err)
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "result" {
			fatal("raftnode %d: %q", i+1, line)
		}
		if i == 0 {
			g.leader, _ = strconv.Atoi(f[1])
		}
		for _, s := range f[3:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			all = append(all, time.Duration(n))
		}
	}
	return all
}

func (g *rawGroup) cpu() int64 {
	var t int64
	for _, p := range g.pids {
		t += cpuTicks(p)
	}
	return t
}
