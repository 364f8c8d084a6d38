package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/cache"
	"github.com/meshgw/meshgw/centrallog"
	"github.com/meshgw/meshgw/consensus"
	"github.com/meshgw/meshgw/dispatch"
	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/gossip"
	"github.com/meshgw/meshgw/node/config"
	"github.com/meshgw/meshgw/node/console"
	meshdns "github.com/meshgw/meshgw/node/dns"
	"github.com/meshgw/meshgw/node/httpapi"
	"github.com/meshgw/meshgw/roles"
	"github.com/meshgw/meshgw/transport"
	"github.com/meshgw/meshgw/transport/tlsutil"
)

// Agent is one meshgw node. New wires it, Start launches it, Stop leaves
// the mesh gracefully and waits for everything it started.
type Agent struct {
	cfg     config.Runtime
	version string
	log     zerolog.Logger
	adv     advertised

	gossip *gossip.Gossip
	rpc    *transport.Transport
	tls    tlsMaterial
	keyTLS *keyTLS // non-nil when the TLS is derived from the gossip keyring
	cons   *consensus.Manager
	disp   *dispatch.Dispatcher
	roles  *roles.Manager
	exec   *runner.Executor
	state  *stateBackend
	reg    *prometheus.Registry
	met    *metrics
	api    *httpapi.API
	tokens *tokenStore
	execB  *execBackend
	trust  *peerTrust // whose TLS this node and they refuse
	srv    *http.Server
	httpLn net.Listener
	// dp serves -proxy, the data-plane listener, when set.
	dp      *httpapi.DataPlane
	proxyLn net.Listener
	// dns serves -dns, the DNS interface, when set.
	dns *meshdns.Server
	// cache is the response cache of the local cluster (cache.go).
	cache   *cache.Cache
	routing *routing // route table, health checks and their sharing (routing.go)

	ready     atomic.Bool
	leaveOnce sync.Once
	leaveCh   chan struct{}
	done      chan struct{} // closed by Shutdown: stops the agent's own goroutines
	// stopCtx is canceled with done, for the agent's own blocking calls.
	stopCtx    context.Context
	stopCancel context.CancelFunc
	stopOnce   sync.Once
	wg         sync.WaitGroup

	// hosting and hostingSig carry consensus's hosting changes to gossip
	// (noteHosting, hostingLoop).
	hosting    atomic.Bool
	hostingSig chan struct{}

	// quorumStop stops watchQuorum; closed by Shutdown before consensus
	// stops, as the watch reads consensus's status.
	quorumStop     chan struct{}
	quorumWG       sync.WaitGroup
	quorumLogEvery time.Duration // quorumLogEvery; shorter in tests

	// secrets serves /v1/secrets and the values of runs (secrets.go).
	secrets *secretsBackend
	clog    *centrallog.Service // the central log; nil with -central-log=false (centrallog.go)
	thr     *throttler          // limits and max_in_flight (throttle.go)
}

// advertised are the addresses peers use to reach this node.
type advertised struct {
	host              string
	gossip, rpc, raft string
	http              string
}

// New wires an agent from cfg. It opens no socket and starts no goroutine.
func New(cfg config.Runtime, version string, log zerolog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := config.EnsureIdentity(cfg.DataDir, cfg.NodeName); err != nil {
		return nil, err
	}
	adv, err := advertise(cfg)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, version: version, log: log, adv: adv, leaveCh: make(chan struct{}), done: make(chan struct{}),
		hostingSig: make(chan struct{}, 1), reg: prometheus.NewRegistry(), trust: newPeerTrust(),
		quorumStop: make(chan struct{}), quorumLogEvery: quorumLogEvery}
	a.stopCtx, a.stopCancel = context.WithCancel(context.Background())

	gcfg := gossip.DefaultConfig()
	gcfg.NodeName = cfg.NodeName
	gcfg.BindAddr = cfg.BindAddr
	gcfg.AdvertiseAddr = adv.gossip
	gcfg.Profile = cfg.GossipProfile
	gcfg.Cluster = cfg.Cluster
	gcfg.Roles = cfg.Roles
	gcfg.RPCAddr = adv.rpc
	gcfg.RaftAddr = adv.raft
	gcfg.HTTPAddr = adv.http
	gcfg.Version = version
	gcfg.UserTags = cfg.Tags
	gcfg.Join = cfg.Join
	gcfg.RetryJoin = cfg.RetryJoin
	gcfg.SnapshotPath = filepath.Join(cfg.DataDir, "serf", "snapshot")
	if cfg.Encrypt != "" {
		key, err := gossip.DecodeKey(cfg.Encrypt)
		if err != nil {
			return nil, fmt.Errorf("-encrypt: %w", err)
		}
		gcfg.EncryptKey = key
	}
	// The keyring file keeps rotated keys across restarts; it is only used
	// once encryption was enabled.
	gcfg.KeyringFile = filepath.Join(cfg.DataDir, "serf", "keyring")
	g, err := gossip.New(gcfg, log)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	a.gossip = g

	hosts := []string{adv.host}
	if h, _, _ := net.SplitHostPort(cfg.RPCAddr); h != "" {
		hosts = append(hosts, h)
	}
	if a.tls, a.keyTLS, err = resolveTLS(cfg, hosts, g.LocalKeys(), log.With().Str("component", "tls").Logger()); err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if a.keyTLS != nil {
		tlsConf = a.keyTLS.dyn.Config()
	} else if tlsConf, err = tlsutil.LoadFiles(a.tls.caFile, a.tls.certFile, a.tls.keyFile); err != nil {
		return nil, fmt.Errorf("node-to-node TLS: %w", err)
	}
	tcfg := transport.DefaultConfig()
	tcfg.BindAddr = cfg.RPCAddr
	tcfg.TLS = tlsConf
	tcfg.Authorize = newMemberGate(func() []gossip.Member { return g.Members(gossip.Filter{}) }).authorize
	if a.rpc, err = transport.New(tcfg, log); err != nil {
		return nil, fmt.Errorf("rpc: %w", err)
	}
	a.reg.MustRegister(a.rpc.Collectors()...)
	if a.keyTLS != nil {
		kt := a.keyTLS
		a.rpc.Handle(methodTLSIssuers, func(context.Context, *transport.Request) ([]byte, error) {
			return kt.Issuers(), nil
		})
	}
	if err := a.wireState(); err != nil {
		return nil, err
	}

	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.reg.MustRegister(newMemberCollector(g))
	a.met = newMetrics()
	a.reg.MustRegister(a.met.collectors()...)
	a.reg.MustRegister(newRaftCollector(a.cons, g, cfg.NodeName))
	a.disp.SetObserver(a.met)
	// Every node checks tokens: a request for a cluster whose state says
	// its ACLs are on is checked against that cluster's tokens, whether or
	// not this node runs -acl (httpapi's package comment has the table).
	a.tokens = newTokenStore(knownClusters{kvStore: a.cons, known: func(cluster string) bool {
		return len(a.gossip.Members(gossip.Filter{Cluster: cluster})) > 0
	}})
	if err := a.wireSecrets(); err != nil {
		return nil, err
	}
	a.execB = newExecBackend(a.state, a.disp, a.tokens.secrets.down)
	a.execB.met = a.met
	if err := a.wireCache(); err != nil { // the response cache (cache.go)
		return nil, err
	}
	a.routing = newRouting(a) // before the API: it serves GET /v1/routes
	opts := []httpapi.Option{httpapi.WithTokens(a.tokens)}
	if cfg.ACL {
		opts = []httpapi.Option{httpapi.WithACL(a.tokens)}
	}
	opts = append(opts,
		httpapi.WithMetrics(promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}), cfg.MetricsPublic),
		httpapi.WithRequestObserver(a.met.observeRequest),
		httpapi.WithKeyring(keyringBackend{g: g, changed: func() { a.refreshKeyTLS() }}),
		httpapi.WithState(a.state),
		httpapi.WithExec(a.execB),
		httpapi.WithProxyPolicies(a.execB),
		httpapi.WithRoles((*backend)(a)),
		httpapi.WithReadiness((*readiness)(a)),
		httpapi.WithSchedules(&scheduleBackend{kv: a.state.kv, now: time.Now}),
		httpapi.WithConfig(&configBackend{kv: a.state.kv, state: a.state, now: time.Now}))
	opts = append(opts, httpapi.WithConsole(console.Handler()))                      // the web console at /ui/
	opts = append(opts, httpapi.WithRepositories(repositoryBackend{kv: a.state.kv})) // /v1/repositories
	// secrets.go, decorators.go
	opts = append(opts, httpapi.WithSecrets(a.secrets), httpapi.WithDecorators(&decoratorsBackend{kv: a.cons}))
	opts = append(opts, httpapi.WithCache((*backend)(a))) // /v1/cache (cache.go)
	opts = append(opts, httpapi.WithRoutes(a.routing))    // GET /v1/routes (routing.go)
	if a.clog != nil {
		opts = append(opts, httpapi.WithCentralLog(a.clog)) // centrallog.go
	}
	opts = append(opts, httpapi.WithThrottle(a.thr)) // limits, max_in_flight, /v1/throttles (throttle.go)
	a.api = httpapi.New(httpapi.Config{MaxBodyBytes: cfg.MaxBodyBytes}, (*backend)(a), log, opts...)
	return a, nil
}

// advertise works out the addresses to gossip: the -advertise IP if given,
// else the bind host when it is specific, else the first private IP.
func advertise(cfg config.Runtime) (advertised, error) {
	host := cfg.AdvertiseAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		bh, _, _ := net.SplitHostPort(cfg.BindAddr)
		if ip := net.ParseIP(bh); ip != nil && !ip.IsUnspecified() {
			host = bh
		}
	}
	if host == "" {
		ip, err := sockaddr.GetPrivateIP()
		if err != nil || ip == "" {
			return advertised{}, fmt.Errorf("-advertise: no private IP found to advertise (%v); set -advertise", err)
		}
		host = ip
	}
	with := func(addr string) string {
		h, p, _ := net.SplitHostPort(addr)
		if ip := net.ParseIP(h); ip != nil && !ip.IsUnspecified() {
			return addr
		}
		return net.JoinHostPort(host, p)
	}
	return advertised{
		host:   host,
		gossip: with(cfg.BindAddr),
		rpc:    with(cfg.RPCAddr),
		raft:   with(cfg.RaftAddr),
		http:   with(cfg.HTTPAddr),
	}, nil
}

// Start opens the listeners and starts every part, in dependency order. On
// error the caller must call Shutdown.
func (a *Agent) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return listenError("-http", a.cfg.HTTPAddr, "HTTP API", err)
	}
	a.httpLn = ln
	if a.cfg.ProxyAddr != "" {
		pln, err := net.Listen("tcp", a.cfg.ProxyAddr)
		if err != nil {
			return listenError("-proxy", a.cfg.ProxyAddr, "data-plane proxy", err)
		}
		a.proxyLn = pln
	}
	if err := a.rpc.Start(); err != nil {
		return listenError("-rpc", a.cfg.RPCAddr, "RPC (QUIC)", err)
	}
	switch a.tls.mode {
	case tlsBuiltin:
		why := "-require-tls-ca=false"
		if a.cfg.RequireTLSCA {
			why = "every listener is on loopback"
		}
		a.log.Warn().Str("allowed_because", why).Msg("node-to-node TLS uses the built-in shared CA: links are encrypted, but any meshgw node can join the RPC and Raft layers; " +
			"set -encrypt (the CA is then derived from the gossip key) or -ca-file/-cert-file/-key-file (meshgw tls ca create)")
	default:
		a.log.Info().Str("tls", string(a.tls.mode)).Msg("node-to-node TLS")
	}
	a.wg.Add(1)
	go a.hostingLoop()
	if err := a.cons.Start(ctx); err != nil {
		return err
	}
	if a.clog != nil {
		if err := a.clog.Start(); err != nil { // needs consensus' NodeHost
			return err
		}
	}
	a.quorumWG.Add(1)
	go a.watchQuorum(a.quorumLogEvery)
	a.cache.Start() // reads the purge records (cache.go)
	if err := a.gossip.Start(ctx); err != nil {
		return listenError("-bind", a.cfg.BindAddr, "gossip", err)
	}
	a.wg.Add(1)
	go a.watchFailures()
	a.wg.Add(1)
	go a.probePeers()
	if a.keyTLS != nil {
		a.wg.Add(1)
		go a.watchKeyring()
	}
	if a.cfg.ACL {
		a.wg.Add(1)
		go a.markACL()
	}
	if err := a.disp.Start(); err != nil {
		return fmt.Errorf("dispatch: %w", err)
	}
	a.roles.Start()
	a.routing.start(a) // route table and health checks
	a.startThrottle()
	a.srv = httpapi.Server(a.cfg.HTTPAddr, a.api)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		var err error
		if a.cfg.HTTPCertFile != "" {
			err = a.srv.ServeTLS(ln, a.cfg.HTTPCertFile, a.cfg.HTTPKeyFile)
		} else {
			err = a.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("http server stopped")
		}
	}()
	if a.proxyLn != nil {
		a.dp = httpapi.NewDataPlane(a.api, a.cfg.MaxBodyBytes, a.log.With().Str("listener", "proxy").Logger())
		a.dp.SetRouter(a.routing.route) // Host and path routes (routing.go)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			var err error
			if a.cfg.HTTPCertFile != "" {
				err = a.dp.ServeTLS(a.proxyLn, a.cfg.HTTPCertFile, a.cfg.HTTPKeyFile)
			} else {
				err = a.dp.Serve(a.proxyLn)
			}
			if err != nil {
				a.log.Error().Err(err).Msg("data-plane server stopped")
			}
		}()
	}
	if a.cfg.DNSAddr != "" {
		a.dns = meshdns.New(dnsView{a.gossip}, a.log)
		if err := a.dns.Start(ctx, a.cfg.DNSAddr); err != nil {
			return err
		}
	}
	a.ready.Store(true)
	return nil
}

// watchFailures closes the RPC connection to a peer as soon as gossip
// declares it failed: a peer killed with -9 sends no CONNECTION_CLOSE, so
// runs, proxied requests and forwarded writes in flight on it would
// otherwise wait for QUIC's idle timeout before failing over.
func (a *Agent) watchFailures() {
	defer a.wg.Done()
	flaps := flapTracker{m: a.met, failed: map[string]bool{}}
	for {
		select {
		case <-a.done:
			return
		case ev := <-a.gossip.Events():
			flaps.event(ev)
			if ev.Type != gossip.EventFailed {
				continue
			}
			for _, m := range ev.Members {
				if m.RPCAddr != "" && m.Name != a.cfg.NodeName {
					a.log.Info().Str("peer", m.Name).Msg("peer failed: closing its RPC connection")
					a.rpc.Disconnect(m.RPCAddr, "gossip declared "+m.Name+" failed")
				}
			}
		}
	}
}

// markACL records in this node's cluster state that its ACLs are on, so
// that nodes without -acl, of this cluster or another, check the requests
// they serve for it. It retries until the group takes the write (it does
// not exist until bootstrapped) or the agent stops.
func (a *Agent) markACL() {
	defer a.wg.Done()
	ctx := a.stopCtx
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.tokens.enable(actx, a.cfg.Cluster)
		acancel()
		if err == nil {
			a.log.Info().Str("cluster", a.cfg.Cluster).Msg("ACLs recorded as on in the cluster's state")
			return
		}
		a.log.Debug().Err(err).Msg("recording ACLs as on; will retry")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// watchKeyring keeps the derived node TLS following the gossip keyring:
// rotations reach this node through serf's key queries from any node,
// which offer no hook, so the keyring is polled. It also fetches the
// issuer copies of the cluster's peers for the Raft CA bundle (see
// keyTLS.raftBundle) until they cover every installed key.
func (a *Agent) watchKeyring() {
	defer a.wg.Done()
	tick := time.NewTicker(keyPollInterval)
	defer tick.Stop()
	ask := time.NewTicker(issuerFetchInterval)
	defer ask.Stop()
	next := map[string]time.Time{} // peer → when to ask it again
	var reverifyUntil time.Time
	for {
		select {
		case <-a.done:
			return
		case now := <-tick.C:
			if a.refreshKeyTLS() {
				clear(next) // what a peer holds changes with the same rotation
				reverifyUntil = now.Add(reverifyFor)
			}
			if now.Before(reverifyUntil) {
				a.dropUntrusted()
			}
		case <-ask.C:
			a.fetchIssuers(next)
		}
	}
}

const (
	methodTLSIssuers    = "node.tls-issuers"
	issuerFetchInterval = 2 * time.Second
	// reverifyFor: after the trust set changed, connections are checked
	// again at every keyring poll for this long, since a handshake that
	// verified against the old set may register its connection after the
	// first pass (the transport's handshake timeout bounds it).
	reverifyFor = 5 * time.Second
)

// dropUntrusted closes the RPC connections whose peer's certificate the
// derived trust set no longer accepts (a removed key's CA): new handshakes
// follow the keyring at once, and this ends what was connected before.
func (a *Agent) dropUntrusted() {
	if peers := a.rpc.Reverify(a.keyTLS.VerifyPeer); len(peers) > 0 {
		a.log.Warn().Strs("peers", peers).
			Msg("closed RPC connections of peers whose certificate the gossip keyring no longer trusts " +
				"(a member of the mesh reconnects at once with its current certificate)")
	}
}

// fetchIssuers asks the cluster's live peers whose issuer copies do not
// yet cover every installed key for them, with a backoff per peer.
func (a *Agent) fetchIssuers(next map[string]time.Time) {
	ctx := a.stopCtx
	known := map[string]bool{}
	for _, m := range a.gossip.Members(gossip.Filter{}) {
		known[m.Name] = true
	}
	if err := a.keyTLS.Prune(known); err != nil {
		a.log.Warn().Err(err).Msg("Raft CA file not rewritten")
	}
	now := time.Now()
	for _, m := range a.gossip.Members(gossip.Filter{Cluster: a.cfg.Cluster, Status: gossip.StatusAlive}) {
		if m.Name == a.cfg.NodeName || m.RPCAddr == "" || now.Before(next[m.Name]) || a.keyTLS.Complete(m.Name) {
			continue
		}
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := a.rpc.Call(cctx, m.RPCAddr, methodTLSIssuers, nil)
		ccancel()
		if err != nil {
			// An older peer has no such method: its Raft certificate is
			// signed by a CA directly and needs no copy.
			next[m.Name] = now.Add(30 * time.Second)
			a.log.Debug().Err(err).Str("peer", m.Name).Msg("no issuer copies from peer")
			continue
		}
		changed, err := a.keyTLS.Learn(m.Name, body)
		if err != nil {
			a.log.Warn().Err(err).Str("peer", m.Name).Msg("issuer copies from peer refused")
		}
		if !changed {
			next[m.Name] = now.Add(10 * time.Second)
		}
	}
}

// refreshKeyTLS applies the local keyring to the derived node TLS now and
// reports whether anything changed.
func (a *Agent) refreshKeyTLS() bool {
	if a.keyTLS == nil {
		return false
	}
	changed, err := a.keyTLS.Refresh(a.gossip.LocalKeys())
	if err != nil {
		a.log.Error().Err(err).Msg("gossip keyring changed but node TLS could not follow it")
	}
	return changed
}

// HTTPAddr is the address the API listens on.
func (a *Agent) HTTPAddr() string {
	if a.httpLn != nil {
		return a.httpLn.Addr().String()
	}
	return a.cfg.HTTPAddr
}

// ProxyAddr is the address the data-plane listener (-proxy) listens on, or
// "" when it is off.
func (a *Agent) ProxyAddr() string {
	if a.proxyLn != nil {
		return a.proxyLn.Addr().String()
	}
	return ""
}

// DNSAddr is the address the DNS interface (-dns) listens on, or "" when
// it is off.
func (a *Agent) DNSAddr() string {
	if a.dns != nil {
		return a.dns.Addr()
	}
	return ""
}

// LeaveRequested is closed when a client asked the agent to leave.
func (a *Agent) LeaveRequested() <-chan struct{} { return a.leaveCh }

// Stop leaves the mesh gracefully (bounded by ctx and -leave-timeout) and
// stops every part: what `meshgw leave` asks for.
func (a *Agent) Stop(ctx context.Context) error { return a.stop(ctx, true) }

// Terminate is the graceful stop for SIGTERM and SIGINT. A node that holds
// a Raft replica stops without leaving the mesh unless -leave-on-terminate
// is set: its peers see it failed, autopilot keeps its voter for
// -autopilot-dead-after, and a restart within that time finds the group as
// it was. A node without a replica leaves, as its departure changes no
// group. It reports whether the node left.
func (a *Agent) Terminate(ctx context.Context) (left bool, err error) {
	leave := a.cfg.LeaveOnTerminate || !a.holdsReplica()
	return leave, a.stop(ctx, leave)
}

// holdsReplica reports whether this node holds a replica of any group.
func (a *Agent) holdsReplica() bool {
	if a.cons == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, g := range a.cons.Status(ctx) {
		if g.Local {
			return true
		}
	}
	return false
}

func (a *Agent) stop(ctx context.Context, leave bool) error {
	a.ready.Store(false)
	var errs []error
	if a.srv != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := a.srv.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		if a.dp != nil {
			if err := a.dp.Shutdown(sctx); err != nil {
				errs = append(errs, fmt.Errorf("proxy listener shutdown: %w", err))
			}
		}
		cancel()
	}
	if leave {
		lctx, cancel := context.WithTimeout(ctx, a.cfg.LeaveTimeout)
		if err := a.gossip.Leave(lctx); err != nil {
			errs = append(errs, fmt.Errorf("leave: %w", err))
		}
		cancel()
	}
	a.Shutdown()
	return errors.Join(errs...)
}

// Shutdown stops everything at once, without a graceful leave.
func (a *Agent) Shutdown() {
	a.stopOnce.Do(func() {
		a.ready.Store(false)
		if a.srv != nil {
			_ = a.srv.Close()
		} else if a.httpLn != nil {
			_ = a.httpLn.Close()
		}
		if a.dp != nil {
			// Closes the listener and idle connections and cancels the
			// requests in flight, without waiting for them.
			now, cancel := context.WithCancel(context.Background())
			cancel()
			_ = a.dp.Shutdown(now)
		} else if a.proxyLn != nil {
			_ = a.proxyLn.Close()
		}
		if a.dns != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := a.dns.Shutdown(ctx); err != nil {
				a.log.Warn().Err(err).Msg("dns shutdown")
			}
			cancel()
		}
		a.roles.Stop() // before the dispatcher: retention runs in it
		a.cache.Stop() // the response cache's refresher and copies in flight
		if a.clog != nil {
			if err := a.clog.Stop(); err != nil { // before consensus: its shard is on the NodeHost
				a.log.Warn().Err(err).Msg("central log stop")
			}
		}
		close(a.quorumStop)
		a.quorumWG.Wait()
		if err := a.disp.Stop(); err != nil {
			a.log.Warn().Err(err).Msg("dispatch stop")
		}
		if err := a.gossip.Shutdown(); err != nil {
			a.log.Warn().Err(err).Msg("gossip shutdown")
		}
		if err := a.cons.Stop(); err != nil {
			a.log.Warn().Err(err).Msg("consensus stop")
		}
		if err := a.rpc.Close(); err != nil {
			a.log.Warn().Err(err).Msg("rpc close")
		}
		if a.exec != nil {
			_ = a.exec.Close()
		}
		if a.tokens != nil {
			a.tokens.close()
		}
		if a.execB != nil {
			a.execB.close()
		}
		close(a.done)
		a.stopCancel()
		a.wg.Wait()
		if a.routing != nil {
			a.routing.close() // its loop has stopped with wg
		}
	})
}

// backend adapts the agent to httpapi.Backend.
type backend Agent

var _ httpapi.Backend = (*backend)(nil)

func (b *backend) Ready() error {
	if !b.ready.Load() {
		return errors.New("agent is starting or stopping")
	}
	return nil
}

func (b *backend) LocalCluster() string { return b.cfg.Cluster }

func (b *backend) Members(f httpapi.MemberFilter) []httpapi.Member {
	ms := b.gossip.Members(gossip.Filter{Cluster: f.Cluster, Role: f.Role, Status: gossip.Status(f.Status), Tags: f.Tags})
	out := make([]httpapi.Member, 0, len(ms))
	for _, m := range ms {
		hm := httpapi.Member{
			Name: m.Name, Addr: m.Addr, Status: string(m.Status), Cluster: m.Cluster,
			Roles: m.Roles, Tags: m.Tags, Version: m.Version, RPCAddr: m.RPCAddr, HTTP: m.HTTPAddr,
		}
		if err := b.trust.refusal(m.RPCAddr); err != nil && m.Status == gossip.StatusAlive {
			hm.Refused = err.Error()
		}
		out = append(out, hm)
	}
	return out
}

func (b *backend) Status(ctx context.Context) (httpapi.Status, error) {
	counts := map[string]int{}
	for _, m := range b.gossip.Members(gossip.Filter{}) {
		counts[string(m.Status)]++
	}
	st := httpapi.Status{
		Node: b.cfg.NodeName, Cluster: b.cfg.Cluster, Roles: b.cfg.Roles, Version: b.version,
		Members: counts,
	}
	for _, g := range b.cons.Status(ctx) {
		gs := httpapi.GroupStatus{Cluster: g.Cluster, ShardID: g.ShardID, Leader: g.Leader, LeaderID: g.LeaderReplicaID,
			Term: g.Term, AppliedIndex: g.AppliedIndex, Local: g.Local,
			HeartbeatMs: g.HeartbeatInterval.Milliseconds(), ElectionTimeoutMs: g.ElectionTimeout.Milliseconds()}
		for _, r := range g.Replicas {
			gs.Replicas = append(gs.Replicas, httpapi.Replica{ID: r.ID, Node: r.Node, Addr: r.Addr})
		}
		st.Groups = append(st.Groups, gs)
	}
	return st, nil
}

func (b *backend) Leave(ctx context.Context) error {
	b.leaveOnce.Do(func() { close(b.leaveCh) })
	return nil
}

// memberCollector exports member counts by status and cluster.
type memberCollector struct {
	g    *gossip.Gossip
	desc *prometheus.Desc
}

func newMemberCollector(g *gossip.Gossip) *memberCollector {
	return &memberCollector{g: g, desc: prometheus.NewDesc("meshgw_members",
		"Members of the mesh as this node sees them, by status and cluster.", []string{"status", "cluster"}, nil)}
}

func (c *memberCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *memberCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ status, cluster string }
	counts := map[key]int{}
	for _, m := range c.g.Members(gossip.Filter{}) {
		for _, s := range []string{"alive", "suspect", "failed", "left"} {
			counts[key{s, m.Cluster}] += 0
		}
		counts[key{string(m.Status), m.Cluster}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k.status, k.cluster)
	}
}

// SetMaxConcurrentExecs changes how many exec processes this runner runs
// at once (SIGHUP); runs over it are refused with 429 as at start.
func (a *Agent) SetMaxConcurrentExecs(n int) error {
	if a.exec == nil {
		return nil // not a runner: nothing to limit
	}
	if err := a.exec.SetMaxConcurrent(n); err != nil {
		return fmt.Errorf("set max-concurrent-execs: %w", err)
	}
	a.cfg.MaxConcurrentExecs = n
	return nil
}

// SetTags replaces this node's user tags at run time (SIGHUP); peers see
// them with the next gossip round, and runner_tags match them from then on.
func (a *Agent) SetTags(tags map[string]string) error {
	if err := a.gossip.SetUserTags(tags); err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	a.cfg.Tags = tags
	return nil
}
