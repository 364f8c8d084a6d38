package transport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"
)

// Request is one unary call as a handler sees it. Body is owned by the
// handler (it may keep it).
type Request struct {
	Peer   string // CN of the caller's verified certificate
	Method string
	Body   []byte
}

// Handler serves a unary method. The returned body is written before the
// handler's goroutine ends, so the handler may reuse it afterwards only if
// it does not share it with other goroutines. ctx is cancelled when the
// caller cancels, the caller's deadline passes, or the Transport closes.
// Return Errorf(code, ...) to choose the caller's RemoteError code; a panic
// is recovered and reported as code "internal".
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// StreamHandler serves a streaming method. When it returns, the transport
// half-closes the stream (nil) or sends the error as *RemoteError.
type StreamHandler func(ctx context.Context, s *Stream) error

// Application error codes on QUIC streams and connections.
const (
	codeCancel   quic.StreamErrorCode = 1 // the caller gave up (ctx)
	codeDone     quic.StreamErrorCode = 2 // no more data wanted
	codeShutdown quic.StreamErrorCode = 3 // transport closing
	codeProtocol quic.StreamErrorCode = 4 // malformed frame

	connShutdown   quic.ApplicationErrorCode = 0
	connPeerFailed quic.ApplicationErrorCode = 1 // gossip declared the peer failed
)

// Transport is a QUIC node-to-node RPC endpoint: it serves registered
// handlers and calls peers over one pooled connection per peer address.
// All methods are safe for concurrent use; Handle/HandleStream only before
// Start.
type Transport struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics

	unary   map[string]Handler
	streams map[string]StreamHandler

	serverTLS, clientTLS *tls.Config
	listenConf, dialConf *quic.Config

	started atomic.Bool
	closed  atomic.Bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	udp *net.UDPConn
	qt  *quic.Transport
	ln  *quic.Listener

	mu      sync.Mutex
	conns   map[string]*peerConn    // outbound, by dialed address
	inbound map[*quic.Conn]struct{} // accepted

	lanes lanePool // idle lanes to peers (lane.go)
}

// peerConn is one pooled outbound connection; ready is closed when the dial
// finished (conn or err set).
type peerConn struct {
	ready chan struct{}
	conn  *quic.Conn
	peer  string
	err   error
}

// New validates cfg and wires a Transport; it opens no socket.
func New(cfg Config, log zerolog.Logger) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srv := cfg.TLS.Clone()
	srv.NextProtos = []string{NextProto}
	if !verifiesItself(srv) {
		srv.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if srv.MinVersion < tls.VersionTLS13 {
		srv.MinVersion = tls.VersionTLS13
	}
	cli := srv.Clone()
	if cli.ServerName == "" {
		cli.ServerName = "meshgw"
	}
	keepAlive := cfg.IdleTimeout / 3
	ctx, cancel := context.WithCancel(context.Background())
	return &Transport{
		cfg:       cfg,
		log:       log.With().Str("component", "transport").Logger(),
		metrics:   newMetrics(),
		unary:     map[string]Handler{},
		streams:   map[string]StreamHandler{},
		serverTLS: srv,
		clientTLS: cli,
		listenConf: &quic.Config{
			HandshakeIdleTimeout:  cfg.HandshakeTimeout,
			MaxIdleTimeout:        cfg.IdleTimeout,
			KeepAlivePeriod:       keepAlive,
			MaxIncomingStreams:    cfg.MaxIncomingStreams,
			MaxIncomingUniStreams: -1,
		},
		dialConf: &quic.Config{
			HandshakeIdleTimeout:  cfg.HandshakeTimeout,
			MaxIdleTimeout:        cfg.IdleTimeout,
			KeepAlivePeriod:       keepAlive,
			MaxIncomingStreams:    -1, // peers dial us on their own connection
			MaxIncomingUniStreams: -1,
		},
		ctx:     ctx,
		cancel:  cancel,
		conns:   map[string]*peerConn{},
		inbound: map[*quic.Conn]struct{}{},
		lanes:   lanePool{idle: map[string][]*lane{}, laneless: map[string]time.Time{}},
	}, nil
}

// Handle registers a unary handler. It panics on an invalid or duplicate
// method or after Start (programming errors).
func (t *Transport) Handle(method string, h Handler) {
	t.register(method)
	t.unary[method] = h
}

// HandleStream registers a streaming handler; see Handle.
func (t *Transport) HandleStream(method string, h StreamHandler) {
	t.register(method)
	t.streams[method] = h
}

func (t *Transport) register(method string) {
	if err := checkMethod(method); err != nil {
		panic(err)
	}
	if t.started.Load() {
		panic("transport: Handle after Start")
	}
	if method == laneMethod {
		panic("transport: " + laneMethod + " is the transport's own")
	}
	if t.unary[method] != nil || t.streams[method] != nil {
		panic("transport: duplicate handler for " + method)
	}
}

// Start binds the UDP socket and starts accepting connections.
func (t *Transport) Start() error {
	if t.closed.Load() {
		return ErrClosed
	}
	if !t.started.CompareAndSwap(false, true) {
		return errors.New("transport: already started")
	}
	ua, err := net.ResolveUDPAddr("udp", t.cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("transport: resolve %s: %w", t.cfg.BindAddr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", t.cfg.BindAddr, err)
	}
	checkUDPBuffers(udp, t.log)
	// quic-go prints its own buffer warning through the std logger;
	// checkUDPBuffers already said it once through ours.
	if _, ok := os.LookupEnv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"); !ok {
		_ = os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	}
	t.udp = udp
	t.qt = &quic.Transport{Conn: udp, StatelessResetKey: statelessResetKey(t.serverTLS)}
	ln, err := t.qt.Listen(t.serverTLS, t.listenConf)
	if err != nil {
		_ = t.qt.Close()
		_ = udp.Close()
		return fmt.Errorf("transport: listen %s: %w", t.cfg.BindAddr, err)
	}
	t.ln = ln
	t.wg.Add(1)
	go t.acceptLoop()
	t.log.Debug().Str("addr", udp.LocalAddr().String()).Msg("listening")
	return nil
}

// statelessResetKey derives a key that stays the same across restarts of a
// node (it comes from the node's private key), so a restarted peer resets
// the stale connections of its callers at once instead of letting them
// wait for the idle timeout. nil (no resets) if the key is not available.
func statelessResetKey(c *tls.Config) *quic.StatelessResetKey {
	var cert *tls.Certificate
	switch {
	case len(c.Certificates) > 0:
		cert = &c.Certificates[0]
	case c.GetCertificate != nil:
		cert, _ = c.GetCertificate(&tls.ClientHelloInfo{})
	}
	if cert == nil || cert.PrivateKey == nil {
		return nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil
	}
	m := hmac.New(sha256.New, der)
	m.Write([]byte("meshgw transport stateless reset v1"))
	var k quic.StatelessResetKey
	copy(k[:], m.Sum(nil))
	return &k
}

// Addr is the bound UDP address (nil before Start).
func (t *Transport) Addr() net.Addr {
	if t.udp == nil {
		return nil
	}
	return t.udp.LocalAddr()
}

// Close stops accepting, cancels every handler's ctx, closes all
// connections and waits for every goroutine the Transport started. Calls in
// flight fail with ErrClosed. Close is idempotent.
func (t *Transport) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	// Collect the connections before cancelling: serveConn drops an inbound
	// connection from the map as soon as its context ends, and a connection
	// closed without CONNECTION_CLOSE leaves callers waiting for the idle
	// timeout instead of failing over at once.
	t.mu.Lock()
	var conns []*quic.Conn
	for c := range t.inbound {
		conns = append(conns, c)
	}
	for _, pc := range t.conns {
		select {
		case <-pc.ready:
			if pc.conn != nil {
				conns = append(conns, pc.conn)
			}
		default: // the dialer sees t.ctx cancelled
		}
	}
	t.mu.Unlock()
	if t.ln != nil {
		_ = t.ln.Close()
	}
	for _, c := range conns {
		_ = c.CloseWithError(connShutdown, "shutdown")
	}
	t.cancel()
	var err error
	if t.qt != nil {
		err = t.qt.Close()
		if e := t.udp.Close(); err == nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	t.wg.Wait()
	return err
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		conn, err := t.ln.Accept(t.ctx)
		if err != nil {
			if !t.closed.Load() {
				t.log.Error().Err(err).Msg("accept stopped")
			}
			return
		}
		t.mu.Lock()
		if t.closed.Load() {
			t.mu.Unlock()
			_ = conn.CloseWithError(connShutdown, "shutdown")
			return
		}
		t.inbound[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveConn(conn)
	}
}

func peerName(c *quic.Conn) string {
	certs := c.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return certs[0].Subject.CommonName
}

func (t *Transport) serveConn(conn *quic.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.inbound, conn)
		t.mu.Unlock()
	}()
	peer := peerName(conn)
	t.metrics.accepted.Inc()
	for {
		str, err := conn.AcceptStream(t.ctx)
		if err != nil {
			return // connection closed (by the peer, idle timeout or Close)
		}
		t.wg.Add(1)
		go t.serveStream(conn, peer, str)
	}
}

// serveStream reads the request frame and runs the handler.
func (t *Transport) serveStream(conn *quic.Conn, peer string, str *quic.Stream) {
	defer t.wg.Done()
	var h [frameHeaderLen]byte
	// The first frame must come promptly: a silent stream must not pin a
	// goroutine until the connection idles out.
	_ = str.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	typ, p, err := readFrame(str, &h, t.cfg.MaxFrameSize, nil)
	_ = str.SetReadDeadline(time.Time{})
	if err != nil {
		switch {
		case errors.Is(err, ErrFrameTooLarge):
			t.refuse(str, CodeTooLarge, err.Error())
		case errors.Is(err, errBadFrame):
			t.refuse(str, CodeBadRequest, err.Error())
		default:
			str.CancelRead(codeProtocol)
			str.CancelWrite(codeProtocol)
		}
		return
	}
	method, timeout, body, err := decodeRequest(p)
	if err != nil || (typ != frameRequest && typ != frameOpen) {
		t.refuse(str, CodeBadRequest, fmt.Sprintf("bad request frame (type %d): %v", typ, err))
		return
	}
	switch {
	case typ == frameRequest:
		t.serveUnary(str, peer, method, timeout, body)
	case typ == frameOpen && method == laneMethod && len(body) == 0 && t.cfg.LanesPerPeer > 0:
		t.serveLane(str, peer)
	case typ == frameOpen:
		t.serveStreamed(str, peer, method, timeout, len(body))
	}
}

// authorize asks Config.Authorize, after the method is known to exist (so a
// probe of an unknown method still tells TLS apart from authorization).
func (t *Transport) authorize(peer, method string) error {
	if t.cfg.Authorize == nil {
		return nil
	}
	if peer == "" {
		return fmt.Errorf("%s: the caller's certificate names no node", method)
	}
	return t.cfg.Authorize(peer, method)
}

// refuse answers a stream with an error frame and stops reading it.
func (t *Transport) refuse(str *quic.Stream, code, msg string) {
	t.metrics.serverErrors.Inc()
	str.CancelRead(codeDone)
	_, _ = str.Write(appendFrame(nil, frameError, appendError(nil, code, msg)))
	_ = str.Close()
}

// handlerContext is cancelled when the Transport closes, the caller's
// timeout passes, or the caller resets the stream (which cancels str's
// context with a remote StreamError).
func (t *Transport) handlerContext(str *quic.Stream, timeout time.Duration) (context.Context, func()) {
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(t.ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(t.ctx)
	}
	sctx := str.Context()
	stop := context.AfterFunc(sctx, func() {
		var se *quic.StreamError
		if errors.As(context.Cause(sctx), &se) && se.Remote {
			cancel()
		} else if !errors.Is(context.Cause(sctx), quic.ErrStreamClosed) {
			cancel() // connection gone
		}
	})
	return ctx, func() { stop(); cancel() }
}

func (t *Transport) serveUnary(str *quic.Stream, peer, method string, timeout time.Duration, body []byte) {
	t.metrics.served.Inc()
	h := t.unary[method]
	if h == nil {
		t.refuse(str, CodeNoHandler, "no unary handler for "+method)
		return
	}
	if err := t.authorize(peer, method); err != nil {
		t.refuse(str, CodeForbidden, err.Error())
		return
	}
	ctx, done := t.handlerContext(str, timeout)
	resp, err := t.invoke(ctx, method, func() ([]byte, error) {
		return h(ctx, &Request{Peer: peer, Method: method, Body: body})
	})
	done()
	if err == nil && len(resp) > t.cfg.MaxFrameSize {
		err = &RemoteError{Code: CodeTooLarge, Message: fmt.Sprintf("response of %d bytes > %d", len(resp), t.cfg.MaxFrameSize)}
	}
	bp := getBuf()
	b := *bp
	if err != nil {
		t.metrics.serverErrors.Inc()
		re := toRemote(err)
		b = appendFrame(b[:0], frameError, appendError(nil, re.Code, re.Message))
		_, werr := str.Write(b)
		err = werr
	} else {
		err = writeFrame(str, b[:0], frameOK, nil, resp)
	}
	*bp = b
	putBuf(bp)
	if err != nil {
		str.CancelWrite(codeCancel)
		str.CancelRead(codeDone)
		return
	}
	_ = str.Close()
	// The caller half-closed after its request; consume the FIN so the
	// stream completes (and its credit returns to the caller).
	expectEOF(str)
}

// expectEOF reads the peer's FIN, or stops reading if data follows.
func expectEOF(str *quic.Stream) {
	var one [1]byte
	if n, err := str.Read(one[:]); n > 0 || err != io.EOF {
		str.CancelRead(codeDone)
	}
}

// invoke runs fn, turning a panic into an "internal" error.
func (t *Transport) invoke(ctx context.Context, method string, fn func() ([]byte, error)) (resp []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			t.metrics.panics.Inc()
			t.log.Error().Str("method", method).Interface("panic", r).Bytes("stack", debug.Stack()).Msg("handler panicked")
			resp, err = nil, &RemoteError{Code: CodeInternal, Message: fmt.Sprintf("handler panic: %v", r)}
		}
	}()
	return fn()
}

func (t *Transport) serveStreamed(str *quic.Stream, peer, method string, timeout time.Duration, extra int) {
	t.metrics.served.Inc()
	h := t.streams[method]
	if h == nil || extra != 0 {
		t.refuse(str, CodeNoHandler, "no stream handler for "+method)
		return
	}
	if err := t.authorize(peer, method); err != nil {
		t.refuse(str, CodeForbidden, err.Error())
		return
	}
	ctx, done := t.handlerContext(str, timeout)
	s := newStream(t, str, method, peer, "")
	_, err := t.invoke(ctx, method, func() ([]byte, error) { return nil, h(ctx, s) })
	done()
	s.finish(err)
}
