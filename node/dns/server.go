package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/rs/zerolog"
)

// Zone is the DNS zone the server is authoritative for.
const Zone = "meshgw."

// TTL is the time to live of every answer: short, so a dead node drops out
// of resolvers' caches within seconds of gossip noticing.
const TTL = 5

// MaxUDPSize caps an answer over UDP whatever the client's EDNS0 buffer
// says (the size DNS flag day 2020 recommends: no IP fragmentation).
const MaxUDPSize = 1232

// maxTCPQueries caps the queries served on one TCP connection.
const maxTCPQueries = 128

// viewTTL is how long one read of the View serves queries: a flood of
// queries costs one member listing per viewTTL, not one each, and a dead
// node is still gone from answers well within a second of gossip.
const viewTTL = 200 * time.Millisecond

// Member is one node as the DNS interface sees it.
type Member struct {
	Name     string
	Cluster  string
	Gateway  bool
	Runner   bool
	IP       net.IP
	HTTPPort uint16 // the node's HTTP API port, for SRV
}

// View lists the members to answer with. It is called once per query and
// must return only live members; it must be safe for concurrent use.
type View interface {
	LiveMembers() []Member
}

// Server answers DNS queries on UDP and TCP on one address.
type Server struct {
	view View
	log  zerolog.Logger

	mu       sync.Mutex
	udp, tcp *mdns.Server
	addr     string
	wg       sync.WaitGroup

	viewMu   sync.Mutex // also makes concurrent refreshes one
	viewAt   time.Time
	viewLast []Member // never modified: lookup filters into a new slice
}

// members is the View's answer, at most viewTTL old.
func (s *Server) members() []Member {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if now := time.Now(); s.viewAt.IsZero() || now.Sub(s.viewAt) >= viewTTL {
		s.viewLast, s.viewAt = s.view.LiveMembers(), now
	}
	return s.viewLast
}

// New builds a server over view. It opens no socket.
func New(view View, log zerolog.Logger) *Server {
	return &Server{view: view, log: log.With().Str("component", "dns").Logger()}
}

// Start listens on addr (host:port, UDP and TCP: port 0 picks one free for
// both) and serves until Shutdown. It returns once both listeners serve.
func (s *Server) Start(ctx context.Context, addr string) error {
	pc, ln, err := listen(addr)
	if err != nil {
		return err
	}
	h := mdns.HandlerFunc(s.serveDNS)
	udpUp, tcpUp := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.udp = &mdns.Server{PacketConn: pc, Handler: h, UDPSize: MaxUDPSize,
		NotifyStartedFunc: func() { close(udpUp) }}
	s.tcp = &mdns.Server{Listener: ln, Handler: h, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		IdleTimeout: func() time.Duration { return 8 * time.Second }, MaxTCPQueries: maxTCPQueries,
		NotifyStartedFunc: func() { close(tcpUp) }}
	servers := []*mdns.Server{s.udp, s.tcp}
	s.mu.Unlock()
	for _, srv := range servers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error().Err(err).Msg("dns server stopped")
			}
		}()
	}
	// Shutdown of a miekg server that has not started yet is a no-op that
	// would leave it running: wait until both run.
	for _, up := range []chan struct{}{udpUp, tcpUp} {
		select {
		case <-up:
		case <-ctx.Done():
			return fmt.Errorf("dns on %s: %w", addr, ctx.Err())
		}
	}
	s.log.Info().Str("addr", s.addr).Msg("dns interface listening (udp, tcp)")
	return nil
}

// listen opens UDP and TCP on the same port.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dns listen udp %s: %w", addr, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		_ = pc.Close()
		return nil, nil, fmt.Errorf("dns listen tcp %s: %w", net.JoinHostPort(host, port), err)
	}
	return pc, ln, nil
}

// Addr is the address the server listens on (UDP and TCP), "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Shutdown stops both listeners and waits, bounded by ctx, for the
// queries in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := []*mdns.Server{s.udp, s.tcp}
	s.udp, s.tcp = nil, nil
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns shutdown: %w", err)
	}
	return nil
}

func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	resp := s.answer(req, w.RemoteAddr().Network() == "tcp")
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug().Err(err).Msg("dns write")
	}
}

// answer builds the response to req; over UDP it fits the client's buffer.
func (s *Server) answer(req *mdns.Msg, tcp bool) *mdns.Msg {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = false
	switch {
	case req.Opcode != mdns.OpcodeQuery:
		resp.SetRcode(req, mdns.RcodeNotImplemented)
		return resp
	case len(req.Question) != 1:
		resp.SetRcode(req, mdns.RcodeFormatError)
		return resp
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		resp.SetRcode(req, mdns.RcodeRefused)
		return resp
	}
	if !mdns.IsSubDomain(Zone, name) {
		resp.Authoritative = false
		resp.SetRcode(req, mdns.RcodeRefused)
		return resp
	}
	members, known := s.lookup(name)
	switch {
	case !known:
		resp.SetRcode(req, mdns.RcodeNameError)
	case q.Qtype == mdns.TypeSOA && name == Zone:
		resp.Answer = append(resp.Answer, soa())
	default:
		rand.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
		for _, m := range members {
			switch q.Qtype {
			case mdns.TypeA, mdns.TypeAAAA, mdns.TypeANY:
				if rr := addrRR(q.Name, m, q.Qtype); rr != nil {
					resp.Answer = append(resp.Answer, rr)
				}
			case mdns.TypeSRV:
				if !validLabel(m.Name) {
					continue // no host name to point at
				}
				target := strings.ToLower(m.Name) + ".node." + Zone
				resp.Answer = append(resp.Answer, &mdns.SRV{
					Hdr:      hdr(q.Name, mdns.TypeSRV),
					Priority: 1, Weight: 1, Port: m.HTTPPort, Target: target,
				})
				if rr := addrRR(target, m, mdns.TypeANY); rr != nil {
					resp.Extra = append(resp.Extra, rr)
				}
			}
		}
	}
	if len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, soa())
	}
	size := mdns.MaxMsgSize
	if !tcp {
		size = mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), MaxUDPSize)
		}
	}
	if opt := req.IsEdns0(); opt != nil {
		resp.SetEdns0(uint16(min(size, MaxUDPSize)), false)
	}
	resp.Truncate(size)
	return resp
}

// lookup maps a lower-case name in the zone to its members; known is false
// for a name that does not exist (NXDOMAIN).
func (s *Server) lookup(name string) (members []Member, known bool) {
	if name == Zone {
		return nil, true
	}
	rel := strings.TrimSuffix(name, "."+Zone)
	// RFC 2782's form, as load balancers ask for it.
	rel = strings.TrimPrefix(rel, "_http._tcp.")
	var keep func(Member) bool
	switch {
	case rel == "gateway":
		keep = func(m Member) bool { return m.Gateway }
	case strings.HasSuffix(rel, ".gateway"):
		c := strings.TrimSuffix(rel, ".gateway")
		keep = func(m Member) bool { return m.Gateway && strings.EqualFold(m.Cluster, c) }
	case strings.HasSuffix(rel, ".runner"):
		c := strings.TrimSuffix(rel, ".runner")
		keep = func(m Member) bool { return m.Runner && strings.EqualFold(m.Cluster, c) }
	case strings.HasSuffix(rel, ".node") && !strings.Contains(strings.TrimSuffix(rel, ".node"), "."):
		n := strings.TrimSuffix(rel, ".node")
		keep = func(m Member) bool { return strings.EqualFold(m.Name, n) }
	default:
		return nil, false
	}
	for _, m := range s.members() {
		if keep(m) {
			members = append(members, m)
		}
	}
	// A cluster with no live node of the kind is no name at all: resolvers
	// then fail fast instead of caching an empty answer as success.
	return members, len(members) > 0 || rel == "gateway"
}

func hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: TTL}
}

// addrRR is m's A or AAAA record for name, nil when m's address is of the
// other family than qtype asks (ANY takes either).
func addrRR(name string, m Member, qtype uint16) mdns.RR {
	if ip4 := m.IP.To4(); ip4 != nil {
		if qtype == mdns.TypeA || qtype == mdns.TypeANY {
			return &mdns.A{Hdr: hdr(name, mdns.TypeA), A: ip4}
		}
		return nil
	}
	if m.IP.To16() != nil && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY) {
		return &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA), AAAA: m.IP}
	}
	return nil
}

// soa is the zone's SOA; its minimum is the negative-caching TTL.
func soa() mdns.RR {
	return &mdns.SOA{Hdr: hdr(Zone, mdns.TypeSOA), Ns: "ns." + Zone, Mbox: "hostmaster." + Zone,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: TTL}
}

// validLabel reports whether a node name can be one DNS label.
func validLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			(i > 0 && (c == '-' || c == '_'))
		if !ok {
			return false
		}
	}
	return true
}
