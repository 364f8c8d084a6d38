package gossip

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
)

// Status is a member's state as gossip sees it.
type Status string

// Member statuses.
const (
	StatusAlive   Status = "alive"
	StatusSuspect Status = "suspect"
	StatusFailed  Status = "failed"
	StatusLeft    Status = "left"
)

// ValidStatus reports whether s is one of the four statuses.
func ValidStatus(s Status) bool {
	switch s {
	case StatusAlive, StatusSuspect, StatusFailed, StatusLeft:
		return true
	}
	return false
}

// Member is one node of the mesh with its decoded tags.
type Member struct {
	Name     string
	Addr     string // gossip host:port
	Status   Status
	Cluster  string
	Roles    []string
	Tags     map[string]string // user tags only
	RPCAddr  string
	RaftAddr string
	HTTPAddr string
	Version  string
	// Hosting: the member says it hosts a replica of its cluster's Raft
	// group (see SetHosting).
	Hosting bool
}

// HasRole reports whether m has role r.
func (m Member) HasRole(r string) bool {
	for _, x := range m.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// Filter selects members; zero fields match everything.
type Filter struct {
	Cluster string
	Role    string
	Status  Status
	Tags    map[string]string
}

func (f Filter) match(m Member) bool {
	if f.Cluster != "" && m.Cluster != f.Cluster {
		return false
	}
	if f.Role != "" && !m.HasRole(f.Role) {
		return false
	}
	if f.Status != "" && m.Status != f.Status {
		return false
	}
	for k, v := range f.Tags {
		if m.Tags[k] != v {
			return false
		}
	}
	return true
}

// EventType says what happened to the members of an Event.
type EventType string

// Event types.
const (
	EventJoin   EventType = "join"
	EventLeave  EventType = "leave"
	EventFailed EventType = "failed"
	EventUpdate EventType = "update"
	EventReap   EventType = "reap"
)

// Event is a membership change.
type Event struct {
	Type    EventType
	Members []Member
}

// Gossip is this node's member of the mesh. New wires it, Start joins,
// Leave and Shutdown end it.
type Gossip struct {
	cfg    Config
	log    zerolog.Logger
	serfCf *serf.Config
	sp     atomic.Pointer[serf.Serf] // set by Start; nil before
	serfCh chan serf.Event
	events chan Event

	dropped atomic.Uint64
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex // guards closed, hosting and the serf start
	closed  bool
	hosting bool
}

// New validates cfg and prepares the serf configuration. It opens no socket.
func New(cfg Config, log zerolog.Logger) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:    cfg,
		log:    log.With().Str("component", "gossip").Logger(),
		serfCh: make(chan serf.Event, 1024),
		events: make(chan Event, cfg.EventBuffer),
		stop:   make(chan struct{}),
	}
	sc, err := g.serfConfig()
	if err != nil {
		return nil, err
	}
	g.serfCf = sc
	return g, nil
}

func (g *Gossip) serfConfig() (*serf.Config, error) {
	cfg := g.cfg
	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = cfg.NodeName
	sc.Tags = cfg.tags(false)
	sc.EventCh = g.serfCh
	sc.ReconnectTimeout = cfg.ReconnectTimeout
	sc.ReconnectInterval = reconnectInterval(cfg.Profile)
	sc.TombstoneTimeout = cfg.TombstoneTimeout
	sc.EnableNameConflictResolution = true
	sc.RejoinAfterLeave = false
	sc.LeavePropagateDelay = cfg.LeavePropagateDelay
	if cfg.SnapshotPath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.SnapshotPath), 0o700); err != nil {
			return nil, fmt.Errorf("gossip snapshot dir: %w", err)
		}
		sc.SnapshotPath = cfg.SnapshotPath
	}
	logger := newLibLogger(g.log)
	sc.Logger = logger
	sc.MemberlistConfig = profileConfig(cfg.Profile)
	mc := sc.MemberlistConfig
	mc.Name = cfg.NodeName
	mc.Logger = logger
	// A failed member's name may be taken over at once by a new address: a
	// kill -9'd node restarted on another IP or port must come back alive.
	// memberlist's default (0) refuses the new address forever ("Conflicting
	// address"). A name held by a live or suspect member is still refused.
	mc.DeadNodeReclaimTime = time.Nanosecond
	host, port, _ := net.SplitHostPort(cfg.BindAddr)
	mc.BindAddr = host
	mc.BindPort, _ = strconv.Atoi(port)
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			ah, ap = cfg.AdvertiseAddr, port
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	if err := g.setupKeyring(sc); err != nil {
		return nil, err
	}
	return sc, nil
}

// setupKeyring configures encryption: the keyring file in the data dir wins
// (it holds rotated keys), else EncryptKey seeds it.
func (g *Gossip) setupKeyring(sc *serf.Config) error {
	cfg := g.cfg
	var keys [][]byte
	if cfg.KeyringFile != "" {
		var err error
		if keys, err = ReadKeyringFile(cfg.KeyringFile); err != nil {
			return err
		}
	}
	if len(keys) == 0 && len(cfg.EncryptKey) > 0 {
		keys = [][]byte{cfg.EncryptKey}
		if cfg.KeyringFile != "" {
			data, _ := json.Marshal([]string{base64.StdEncoding.EncodeToString(cfg.EncryptKey)})
			if err := os.MkdirAll(filepath.Dir(cfg.KeyringFile), 0o700); err != nil {
				return fmt.Errorf("keyring dir: %w", err)
			}
			if err := os.WriteFile(cfg.KeyringFile, data, 0o600); err != nil {
				return fmt.Errorf("write keyring file: %w", err)
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	sc.MemberlistConfig.Keyring = kr
	sc.MemberlistConfig.GossipVerifyIncoming = true
	sc.MemberlistConfig.GossipVerifyOutgoing = true
	if cfg.KeyringFile != "" {
		sc.KeyringFile = cfg.KeyringFile
	}
	return nil
}

// LocalKeys returns the keys installed on this node, primary first, or nil
// when gossip is not encrypted. Rotations done through any node change
// them (serf's key queries); callers that derive from them poll.
func (g *Gossip) LocalKeys() [][]byte {
	kr := g.serfCf.MemberlistConfig.Keyring
	if kr == nil {
		return nil
	}
	return kr.GetKeys()
}

// ReadKeyringFile reads the keys of a keyring file, primary first; a
// missing file holds none.
func ReadKeyringFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyring file: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, fmt.Errorf("keyring file %s: %w", path, err)
	}
	keys := make([][]byte, 0, len(encoded))
	for _, k := range encoded {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("keyring file %s: %w", path, err)
		}
		keys = append(keys, b)
	}
	return keys, nil
}

// Encrypted reports whether gossip is encrypted.
func (g *Gossip) Encrypted() bool { return g.serfCf.MemberlistConfig.Keyring != nil }

// Start creates the serf member (opening the gossip sockets), joins
// cfg.Join and starts the retry-join and event loops.
func (g *Gossip) Start(ctx context.Context) error {
	// Under mu: a SetHosting meanwhile either changes the tags serf starts
	// with or reaches the started serf.
	g.mu.Lock()
	s, err := serf.Create(g.serfCf)
	if err != nil {
		g.mu.Unlock()
		return fmt.Errorf("gossip listen %s: %w", g.cfg.BindAddr, err)
	}
	g.sp.Store(s)
	g.mu.Unlock()
	g.wg.Add(1)
	go g.eventLoop()
	if len(g.cfg.Join) > 0 {
		if _, err := g.Join(ctx, g.cfg.Join); err != nil {
			return err
		}
	}
	if len(g.cfg.RetryJoin) > 0 {
		g.wg.Add(1)
		go g.retryJoin()
	}
	g.log.Info().Str("bind", g.cfg.BindAddr).Str("profile", g.cfg.Profile).Bool("encrypted", g.Encrypted()).Msg("gossip started")
	return nil
}

// Join contacts addrs and returns how many answered. Failing to reach every
// one is an error naming them.
func (g *Gossip) Join(ctx context.Context, addrs []string) (int, error) {
	type result struct {
		n   int
		err error
	}
	s := g.sp.Load()
	if s == nil {
		return 0, errors.New("join: gossip not started")
	}
	ch := make(chan result, 1)
	go func() {
		n, err := s.Join(addrs, true)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		if r.n == 0 {
			return 0, fmt.Errorf("join %s: %w", strings.Join(addrs, ","), joinErr(r.err))
		}
		return r.n, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("join %s: %w", strings.Join(addrs, ","), ctx.Err())
	}
}

// ErrKeyMismatch (wrapped) means a join failed because this node's gossip
// key does not match the seed's (or one side has none): fix -encrypt.
var ErrKeyMismatch = errors.New("gossip encryption key mismatch (check -encrypt / the keyring file)")

// joinErr flattens serf's multierror into one line and classifies key
// mismatches.
func joinErr(err error) error {
	if err == nil {
		return errors.New("no node answered")
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	l := strings.ToLower(msg)
	if strings.Contains(l, "no installed keys could decrypt") || strings.Contains(l, "encryption is not configured") ||
		strings.Contains(l, "encryption") || strings.Contains(l, "decrypt") {
		return fmt.Errorf("%w: %s", ErrKeyMismatch, msg)
	}
	return errors.New(msg)
}

// retryJoin keeps joining cfg.RetryJoin with backoff until one answers.
func (g *Gossip) retryJoin() {
	defer g.wg.Done()
	delay := g.cfg.RetryInterval
	failures := 0
	s := g.sp.Load() // set before this loop starts
	for attempt := 1; ; attempt++ {
		n, err := s.Join(g.cfg.RetryJoin, true)
		if n > 0 {
			g.log.Info().Int("joined", n).Strs("seeds", g.cfg.RetryJoin).Int("attempts", attempt).Msg("retry-join succeeded")
			return
		}
		failures++
		if failures == 1 {
			g.log.Info().Err(joinErr(err)).Strs("seeds", g.cfg.RetryJoin).Msg("retry-join: no seed answered yet; retrying in the background")
		}
		if g.cfg.RetryMax > 0 && attempt >= g.cfg.RetryMax {
			g.log.Error().Err(joinErr(err)).Int("attempts", attempt).Msg("retry-join: giving up")
			return
		}
		select {
		case <-time.After(delay):
		case <-g.stop:
			return
		}
		if delay < g.cfg.RetryMaxInterval {
			delay = min(delay*2, g.cfg.RetryMaxInterval)
		}
	}
}

// eventLoop drains serf's events into the caller's channel, never blocking
// serf: when the caller falls behind, events are dropped and counted.
func (g *Gossip) eventLoop() {
	defer g.wg.Done()
	for {
		select {
		case ev := <-g.serfCh:
			me, ok := ev.(serf.MemberEvent)
			if !ok {
				continue
			}
			out := Event{Members: make([]Member, 0, len(me.Members))}
			switch me.Type {
			case serf.EventMemberJoin:
				out.Type = EventJoin
			case serf.EventMemberLeave:
				out.Type = EventLeave
			case serf.EventMemberFailed:
				out.Type = EventFailed
			case serf.EventMemberUpdate:
				out.Type = EventUpdate
			case serf.EventMemberReap:
				out.Type = EventReap
			default:
				continue
			}
			for _, m := range me.Members {
				out.Members = append(out.Members, decode(m, nil))
			}
			for _, m := range out.Members {
				g.log.Debug().Str("event", string(out.Type)).Str("member", m.Name).Str("addr", m.Addr).Msg("membership")
			}
			select {
			case g.events <- out:
			default:
				g.dropped.Add(1)
			}
		case <-g.stop:
			return
		}
	}
}

// Events delivers membership changes. The channel is buffered; when the
// consumer falls behind, events are dropped (see Dropped), never blocking
// gossip. Members() is always the authoritative view.
func (g *Gossip) Events() <-chan Event { return g.events }

// Dropped counts events dropped because Events() was not drained.
func (g *Gossip) Dropped() uint64 { return g.dropped.Load() }

// Members returns the members matching f, sorted by name.
func (g *Gossip) Members(f Filter) []Member {
	s := g.sp.Load()
	if s == nil {
		return nil
	}
	suspect := map[string]bool{}
	for _, n := range s.Memberlist().Members() {
		if n.State == memberlist.StateSuspect {
			suspect[n.Name] = true
		}
	}
	ms := s.Members()
	out := make([]Member, 0, len(ms))
	for _, sm := range ms {
		m := decode(sm, suspect)
		if f.match(m) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Local returns this node as a member.
func (g *Gossip) Local() Member {
	s := g.sp.Load()
	if s == nil {
		return Member{Name: g.cfg.NodeName, Status: StatusAlive, Cluster: g.cfg.Cluster, Roles: g.cfg.Roles}
	}
	return decode(s.LocalMember(), nil)
}

func decode(m serf.Member, suspect map[string]bool) Member {
	out := Member{Name: m.Name, Addr: net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))}
	switch m.Status {
	case serf.StatusAlive:
		out.Status = StatusAlive
		if suspect[m.Name] {
			out.Status = StatusSuspect
		}
	case serf.StatusLeaving, serf.StatusLeft:
		out.Status = StatusLeft
	default:
		out.Status = StatusFailed
	}
	decodeTags(m.Tags, &out)
	return out
}

// SetHosting sets or clears this member's hosting tag, which tells peers
// it hosts a replica of its cluster's Raft group. Before Start it only
// changes the tags Start announces. It may block until the update is
// broadcast (serf's BroadcastTimeout at most).
func (g *Gossip) SetHosting(hosting bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.hosting == hosting {
		return nil
	}
	g.hosting = hosting
	tags := g.cfg.tags(hosting)
	s := g.sp.Load()
	if s == nil {
		g.serfCf.Tags = tags
		return nil
	}
	if err := s.SetTags(tags); err != nil {
		return fmt.Errorf("gossip: set hosting tag: %w", err)
	}
	return nil
}

// Leave broadcasts a graceful leave and waits for it to propagate (bounded
// by ctx). Peers see this node as left.
func (g *Gossip) Leave(ctx context.Context) error {
	s := g.sp.Load()
	if s == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- s.Leave() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("gossip leave: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gossip leave: %w", ctx.Err())
	}
}

// Shutdown stops gossip at once (peers will see this node fail unless Leave
// ran first) and waits for every goroutine.
func (g *Gossip) Shutdown() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	close(g.stop)
	g.mu.Unlock()
	var err error
	if s := g.sp.Load(); s != nil {
		err = s.Shutdown()
	}
	g.wg.Wait()
	return err
}

// newLibLogger routes serf's and memberlist's std-log lines into zerolog at
// the level their "[LEVEL]" prefix names, rate-limiting warnings and errors
// so garbage traffic cannot flood the log.
func newLibLogger(l zerolog.Logger) *log.Logger {
	return log.New(&libWriter{log: l, limiter: newLimiter(10, 10*time.Second)}, "", 0)
}

type libWriter struct {
	log     zerolog.Logger
	limiter *limiter
}

func (w *libWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	lvl := zerolog.DebugLevel
	for _, x := range []struct {
		prefix string
		lvl    zerolog.Level
	}{{"[DEBUG]", zerolog.DebugLevel}, {"[INFO]", zerolog.InfoLevel}, {"[WARN]", zerolog.WarnLevel}, {"[ERR]", zerolog.ErrorLevel}, {"[ERROR]", zerolog.ErrorLevel}} {
		if i := strings.Index(line, x.prefix); i >= 0 {
			lvl = x.lvl
			line = strings.TrimSpace(line[i+len(x.prefix):])
			break
		}
	}
	// serf's routine chatter at INFO (EventMemberJoin etc.) is debug for us:
	// node reports membership itself.
	if lvl == zerolog.InfoLevel {
		lvl = zerolog.DebugLevel
	}
	// Undecodable or undecryptable traffic (a peer with the wrong key, a port
	// scanner, garbage) is the sender's problem, not ours: warn, rate-limited.
	if lvl >= zerolog.WarnLevel && isReceiveNoise(line) {
		lvl = zerolog.WarnLevel
	}
	if lvl >= zerolog.WarnLevel {
		if !w.limiter.allow() {
			return len(p), nil
		}
		if n := w.limiter.takeSuppressed(); n > 0 {
			w.log.WithLevel(lvl).Uint64("suppressed", n).Msg(line)
			return len(p), nil
		}
	}
	w.log.WithLevel(lvl).Msg(line)
	return len(p), nil
}

func isReceiveNoise(line string) bool {
	l := strings.ToLower(line)
	for _, s := range []string{"failed to receive", "decrypt", "failed to decode", "failed to read", "unknown message type", "no installed keys"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// limiter allows n events per window and counts the rest.
type limiter struct {
	mu         sync.Mutex
	n          int
	window     time.Duration
	start      time.Time
	used       int
	suppressed uint64
}

func newLimiter(n int, window time.Duration) *limiter { return &limiter{n: n, window: window} }

func (l *limiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.start) > l.window {
		l.start, l.used = now, 0
	}
	if l.used >= l.n {
		l.suppressed++
		return false
	}
	l.used++
	return true
}

func (l *limiter) takeSuppressed() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.suppressed
	l.suppressed = 0
	return n
}

var _ io.Writer = (*libWriter)(nil)

// SetUserTags replaces the member's user tags at run time (SIGHUP) and
// gossips them; the size limit is checked as at start. Before Start the new
// tags are used when the member joins.
func (g *Gossip) SetUserTags(tags map[string]string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	next := g.cfg
	next.UserTags = make(map[string]string, len(tags))
	for k, v := range tags {
		next.UserTags[k] = v
	}
	if err := next.Validate(); err != nil {
		return err
	}
	if s := g.sp.Load(); s != nil {
		if err := s.SetTags(next.tags(g.hosting)); err != nil {
			return fmt.Errorf("gossip: set tags: %w", err)
		}
	} else {
		g.serfCf.Tags = next.tags(g.hosting)
	}
	g.cfg.UserTags = next.UserTags // under g.mu, as SetHosting reads it
	return nil
}
