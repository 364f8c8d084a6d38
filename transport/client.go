package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"
)

// conn returns the pooled connection to addr, dialing it once for all
// concurrent callers. A broken connection is replaced on the next call.
func (t *Transport) conn(ctx context.Context, addr string) (*quic.Conn, error) {
	if t.closed.Load() {
		return nil, ErrClosed
	}
	if t.qt == nil {
		return nil, errors.New("transport: not started")
	}
	for {
		t.mu.Lock()
		pc := t.conns[addr]
		if pc != nil {
			select {
			case <-pc.ready:
				if pc.err != nil || pc.conn.Context().Err() != nil {
					delete(t.conns, addr) // failed or broken: dial again
					pc = nil
				}
			default:
			}
		}
		if pc == nil {
			pc = &peerConn{ready: make(chan struct{})}
			t.conns[addr] = pc
			t.wg.Add(1)
			go t.dial(addr, pc)
		}
		t.mu.Unlock()
		select {
		case <-pc.ready:
			if pc.err != nil {
				return nil, pc.err
			}
			if pc.conn.Context().Err() != nil {
				continue
			}
			return pc.conn, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w", addr, ctx.Err())
		}
	}
}

// dial runs one handshake, bounded by HandshakeTimeout and Close, not by
// any single caller's context (others may be waiting on it).
func (t *Transport) dial(addr string, pc *peerConn) {
	defer t.wg.Done()
	defer close(pc.ready)
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		pc.err = fmt.Errorf("dial %s: %w: %w", addr, ErrUnreachable, err)
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	c, err := t.qt.Dial(ctx, ua, t.clientTLS, t.dialConf)
	if err != nil {
		t.metrics.dialErrors.Inc()
		if t.closed.Load() {
			pc.err = ErrClosed
			return
		}
		if refusedTLS(err) {
			pc.err = fmt.Errorf("dial %s: %w: %w: %w", addr, ErrUnreachable, ErrRefused, err)
			return
		}
		pc.err = fmt.Errorf("dial %s: %w: %w", addr, ErrUnreachable, err)
		return
	}
	pc.conn, pc.peer = c, peerName(c)
	t.metrics.dials.Inc()
}

// probeMethod is a method no node serves: a peer that answers it with
// CodeNoHandler has accepted this node's certificate, and this node its.
const probeMethod = "transport.probe"

// Probe checks that this node and the peer at addr accept each other's TLS:
// nil if so, an error wrapping ErrRefused if a certificate was refused
// (either way), another error (unreachable, ctx) if it cannot tell.
func (t *Transport) Probe(ctx context.Context, addr string) error {
	_, err := t.Call(ctx, addr, probeMethod, nil)
	if errors.Is(err, &RemoteError{Code: CodeNoHandler}) {
		return nil
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("probe %s: %w", addr, err)
}

// ProbeAs is Probe, and also checks that the certificate of the node at
// addr names name: a certificate for another node is refused like a
// foreign CA (the error wraps ErrRefused), so no node can answer in the
// name of another.
func (t *Transport) ProbeAs(ctx context.Context, addr, name string) error {
	if err := t.Probe(ctx, addr); err != nil {
		return err
	}
	t.mu.Lock()
	pc := t.conns[addr]
	t.mu.Unlock()
	if pc == nil {
		return fmt.Errorf("probe %s: %w: connection gone", addr, ErrUnreachable)
	}
	select {
	case <-pc.ready:
	default:
		return fmt.Errorf("probe %s: %w: redialing", addr, ErrUnreachable)
	}
	if pc.peer != name {
		return fmt.Errorf("probe %s: %w: its certificate names %q, not %q as gossip says", addr, ErrRefused,
			pc.peer, name)
	}
	return nil
}

// Disconnect closes the pooled connection to addr, if any: calls in flight
// on it fail at once with ErrUnreachable, and the next call redials. The
// agent calls it when gossip declares the peer failed, so work on a dead
// peer fails over in the failure detector's time rather than QUIC's idle
// timeout (a peer killed with -9 sends no CONNECTION_CLOSE).
func (t *Transport) Disconnect(addr, reason string) {
	t.mu.Lock()
	pc := t.conns[addr]
	if pc != nil {
		select {
		case <-pc.ready:
			delete(t.conns, addr)
		default:
			pc = nil // still dialing: its handshake times out by itself
		}
	}
	t.mu.Unlock()
	t.dropLanes(addr)
	if pc != nil && pc.conn != nil {
		t.metrics.disconnects.Inc()
		_ = pc.conn.CloseWithError(connPeerFailed, reason)
	}
}

// forget drops a broken pooled connection so the next call redials.
func (t *Transport) forget(addr string, c *quic.Conn) {
	t.mu.Lock()
	if pc := t.conns[addr]; pc != nil && pc.conn == c {
		delete(t.conns, addr)
	}
	t.mu.Unlock()
	t.dropLanes(addr)
}

// watch resets str when ctx ends before the call does.
func watch(ctx context.Context, str *quic.Stream) func() bool {
	return context.AfterFunc(ctx, func() {
		str.CancelRead(codeCancel)
		str.CancelWrite(codeCancel)
	})
}

func remaining(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d)
	}
	return 0
}

// Handlers get the caller's deadline less a margin (a tenth of what is
// left, at most maxAnswerMargin) for the answer's way back: a handler that
// runs out of time says why (no quorum, say) before the caller's own
// deadline ends the call and only "deadline exceeded" is known.
const maxAnswerMargin = 200 * time.Millisecond

// handlerBudget is the time the handler is sent: 0 for no deadline.
func handlerBudget(ctx context.Context) time.Duration {
	r := remaining(ctx)
	if r <= 0 {
		if _, ok := ctx.Deadline(); ok {
			return time.Nanosecond // passed: the handler fails at once
		}
		return 0
	}
	return r - min(r/10, maxAnswerMargin)
}

// openStream opens a stream on the pooled connection to addr.
func (t *Transport) openStream(ctx context.Context, addr string) (*quic.Conn, *quic.Stream, error) {
	c, err := t.conn(ctx, addr)
	if err != nil {
		return nil, nil, err
	}
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.forget(addr, c)
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("open stream to %s: %w", addr, ctx.Err())
		}
		if refusedTLS(err) {
			return nil, nil, fmt.Errorf("open stream to %s: %w: %w: %w", addr, ErrUnreachable, ErrRefused, err)
		}
		return nil, nil, fmt.Errorf("open stream to %s: %w: %w", addr, ErrUnreachable, err)
	}
	return c, str, nil
}

// Call sends body to method on the peer at addr and returns its answer.
// ctx bounds the whole call and its deadline travels to the handler.
func (t *Transport) Call(ctx context.Context, addr, method string, body []byte) ([]byte, error) {
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	if len(body)+requestHeaderLen+len(method) > t.cfg.MaxFrameSize {
		return nil, fmt.Errorf("call %s %s: %w: %d bytes", method, addr, ErrFrameTooLarge, len(body))
	}
	t.metrics.calls.Inc()
	c, str, err := t.openStream(ctx, addr)
	if err != nil {
		t.metrics.callErrors.Inc()
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	stop := watch(ctx, str)
	defer stop()
	resp, err := t.roundTrip(str, method, handlerBudget(ctx), body)
	if err != nil {
		t.metrics.callErrors.Inc()
		var re *RemoteError
		if errors.As(err, &re) {
			if re.Code == CodeDeadline {
				// The deadline travelled with the call and ran out there.
				return nil, fmt.Errorf("call %s %s: %w (%s)", method, addr, context.DeadlineExceeded, re.Message)
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("call %s %s: %w", method, addr, ctx.Err())
		}
		if c.Context().Err() != nil {
			t.forget(addr, c)
		}
		return nil, classify(fmt.Sprintf("call %s %s", method, addr), err)
	}
	return resp, nil
}

func (t *Transport) roundTrip(str *quic.Stream, method string, timeout time.Duration, body []byte) ([]byte, error) {
	bp := getBuf()
	hdr := appendRequestHeader((*bp)[:0], method, timeout)
	err := writeFrame(str, nil, frameRequest, hdr, body)
	*bp = hdr
	putBuf(bp)
	var se *quic.StreamError
	switch {
	case err != nil && errors.As(err, &se) && se.Remote && se.ErrorCode == codeDone:
		// The peer refused the request before reading all of it (too
		// large, no handler); its error frame says why.
	case err != nil:
		str.CancelRead(codeCancel)
		return nil, err
	default:
		if err := str.Close(); err != nil {
			return nil, err
		}
	}
	var h [frameHeaderLen]byte
	typ, p, err := readFrame(str, &h, t.cfg.MaxFrameSize, nil)
	if err != nil {
		if errors.Is(err, ErrFrameTooLarge) {
			str.CancelRead(codeProtocol)
			return nil, err
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	switch typ {
	case frameOK:
		return p, nil
	case frameError:
		re, err := decodeError(p)
		if err != nil {
			return nil, err
		}
		return nil, re
	}
	str.CancelRead(codeProtocol)
	return nil, fmt.Errorf("%w: unexpected frame type %d", errBadFrame, typ)
}

// Stream opens a streaming call to method on the peer at addr. ctx bounds
// the whole stream: when it ends, the stream is reset. The caller must
// Close the stream.
func (t *Transport) Stream(ctx context.Context, addr, method string) (*Stream, error) {
	return t.StreamFirst(ctx, addr, method, nil, false)
}

// StreamFirst is Stream that also sends first as the stream's first
// message (none when nil) and, with closeSend, half-closes: the open, the
// message and the FIN go out in one write, so usually in one packet,
// where Stream, Send and CloseSend take up to three.
func (t *Transport) StreamFirst(ctx context.Context, addr, method string, first []byte, closeSend bool) (*Stream, error) {
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	if len(first) > t.cfg.MaxFrameSize {
		return nil, fmt.Errorf("stream %s %s: %w: %d bytes > %d", method, addr, ErrFrameTooLarge, len(first), t.cfg.MaxFrameSize)
	}
	t.metrics.calls.Inc()
	_, str, err := t.openStream(ctx, addr)
	if err != nil {
		t.metrics.callErrors.Inc()
		return nil, err
	}
	s := &Stream{t: t, str: str, method: method, addr: addr, client: true}
	s.stopCtx = watch(ctx, str)
	bp := getBuf()
	var fh [frameHeaderLen]byte
	putFrameHeader(fh[:], frameOpen, requestHeaderLen+len(method))
	b := appendRequestHeader(append((*bp)[:0], fh[:]...), method, handlerBudget(ctx))
	if first != nil && len(first) <= 32<<10 {
		b = appendFrame(b, frameData, first)
		first = nil
	}
	_, err = str.Write(b)
	*bp = b
	putBuf(bp)
	if err == nil && first != nil {
		err = s.Send(first)
	}
	if err == nil && closeSend {
		// A handler that answered already may have stopped reading,
		// which fails the close; a broken stream fails Recv anyway.
		_ = str.Close()
	}
	if err != nil {
		s.Close()
		t.metrics.callErrors.Inc()
		return nil, s.wrap("open", err)
	}
	return s, nil
}

// writeFrame writes one frame (prefix and body as its payload) with as few
// writes as possible. buf is scratch space the caller owns (may be nil).
func writeFrame(w io.Writer, buf []byte, t frameType, prefix, body []byte) error {
	n := len(prefix) + len(body)
	var h [frameHeaderLen]byte
	putFrameHeader(h[:], t, n)
	if n <= 32<<10 {
		buf = append(append(append(buf[:0], h[:]...), prefix...), body...)
		_, err := w.Write(buf)
		return err
	}
	buf = append(append(buf[:0], h[:]...), prefix...)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// bufPool holds scratch buffers for frame encoding. A buffer taken with
// getBuf belongs to the taker until putBuf; nothing may keep a slice of it.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // don't pin big buffers
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// metrics are the transport's Prometheus counters.
type metrics struct {
	calls, callErrors, dials, dialErrors   prometheus.Counter
	accepted, served, serverErrors, panics prometheus.Counter
	disconnects                            prometheus.Counter
}

func newMetrics() *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "meshgw", Subsystem: "rpc", Name: name, Help: help})
	}
	return &metrics{
		calls:        c("calls_total", "Outgoing calls and streams."),
		callErrors:   c("call_errors_total", "Outgoing calls and streams that failed."),
		dials:        c("dials_total", "Connections dialed."),
		dialErrors:   c("dial_errors_total", "Dials that failed."),
		accepted:     c("accepted_total", "Connections accepted."),
		served:       c("served_total", "Incoming calls and streams served."),
		serverErrors: c("server_errors_total", "Incoming calls answered with an error."),
		panics:       c("handler_panics_total", "Handler panics recovered."),
		disconnects:  c("disconnects_total", "Connections closed because the peer was declared failed."),
	}
}

// Collectors returns the transport's metrics for registration.
func (t *Transport) Collectors() []prometheus.Collector {
	m := t.metrics
	lanes := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "meshgw", Subsystem: "rpc", Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{m.calls, m.callErrors, m.dials, m.dialErrors, m.accepted, m.served, m.serverErrors, m.panics, m.disconnects,
		lanes("lanes_opened_total", "Lanes opened to peers (streams kept for successive exchanges).", &t.lanes.opened),
		lanes("lane_reuses_total", "Exchanges run on a lane that had carried one before.", &t.lanes.reused)}
}

// wantUDPBuffer is what quic-go asks for (see its receive-buffer warning).
const wantUDPBuffer = 7 << 20

// checkUDPBuffers raises the socket buffers and says once, at info, when
// the kernel caps them lower than quic-go wants.
func checkUDPBuffers(c *net.UDPConn, log zerolog.Logger) {
	_ = c.SetReadBuffer(wantUDPBuffer)
	_ = c.SetWriteBuffer(wantUDPBuffer)
	udpWarnOnce.Do(func() {
		if rc, err := c.SyscallConn(); err == nil {
			var size int
			_ = rc.Control(func(fd uintptr) { size = sockRcvBuf(fd) })
			if size > 0 && size < wantUDPBuffer {
				log.Info().Int("rcvbuf", size).Msg("UDP receive buffer is small for QUIC; raise it with sysctl -w net.core.rmem_max=7500000 net.core.wmem_max=7500000")
			}
		}
	})
}

var udpWarnOnce sync.Once
