package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Lanes. A streaming call costs a QUIC stream of its own: its open, its
// entries in quic-go's stream maps, its flow-control frames, its close on
// both sides. A lane is a stream the caller keeps open after an exchange
// and reuses for the next one to the same peer, one exchange at a time, so
// a hot path of short exchanges (dispatch's gateway hop) opens no stream
// per request. Exchange takes an idle lane of the peer (or opens one);
// Stream.Close gives it back when the exchange ended cleanly on both
// sides, and resets it otherwise, which fails that exchange only: the
// other lanes, and the connection, carry on.
//
// On the wire (frame.go), a lane opens as a stream call of laneMethod that
// the handler side acknowledges with frameEnd; then each exchange is the
// caller's frameOpen (method, timeout), its frameData messages and a
// frameEnd, and the handler's frameData messages ended by frameEnd or
// frameError, where a plain stream has FINs. Either side closes an idle
// lane with a FIN. A peer of an earlier build has no laneMethod and
// refuses the open with CodeNoHandler before anything of an exchange was
// sent: the caller then uses a stream per call with that peer for
// lanelessFor.
//
// Bounds: at most Config.LanesPerPeer idle lanes are kept per peer (the
// lanes in use are bounded by the callers, and by the peer's
// MaxIncomingStreams); one idle for Config.LaneIdleTimeout is not reused,
// and the handler side closes one silent for twice that, so a caller never
// picks a lane the handler side is closing.

// laneMethod opens a lane. No handler may register it: it is the
// transport's own (checkMethod allows it, register refuses it).
const laneMethod = "transport.lane"

// lanelessFor is how long a peer that refused a lane is called with a
// stream per call before lanes are tried again (it may have been upgraded).
const lanelessFor = 10 * time.Minute

// errLaneless: the peer serves no lanes (an earlier build).
var errLaneless = errors.New("transport: peer serves no lanes")

// lane is one caller-side lane: a stream to a peer between exchanges.
type lane struct {
	addr string
	conn *quic.Conn
	str  *quic.Stream
	idle time.Time // when it was last given back
}

// close ends an idle lane cleanly: the handler side sees a FIN.
func (l *lane) close() {
	_ = l.str.Close()
	l.str.CancelRead(codeDone)
}

// kill resets a lane whose exchange did not end cleanly.
func kill(str *quic.Stream) {
	str.CancelRead(codeCancel)
	str.CancelWrite(codeCancel)
}

// lanePool is a Transport's pool of idle lanes.
type lanePool struct {
	mu       sync.Mutex
	idle     map[string][]*lane   // by dialed address; the most recently used last
	laneless map[string]time.Time // peers that refused lanes, until
	opened   atomic.Int64
	reused   atomic.Int64
}

// LaneStats are a Transport's lane counters.
type LaneStats struct {
	Opened int64 // lanes opened (and acknowledged) to peers
	Reused int64 // exchanges run on a lane that had carried one before
	Idle   int   // idle lanes held now, all peers together
}

// LaneStats returns the lane counters.
func (t *Transport) LaneStats() LaneStats {
	t.lanes.mu.Lock()
	n := 0
	for _, q := range t.lanes.idle {
		n += len(q)
	}
	t.lanes.mu.Unlock()
	return LaneStats{Opened: t.lanes.opened.Load(), Reused: t.lanes.reused.Load(), Idle: n}
}

func (t *Transport) laneless(addr string) bool {
	t.lanes.mu.Lock()
	defer t.lanes.mu.Unlock()
	until, ok := t.lanes.laneless[addr]
	if ok && time.Now().After(until) {
		delete(t.lanes.laneless, addr)
		return false
	}
	return ok
}

// Exchange is StreamFirst on a lane: the same exchange (first message,
// half-close with closeSend, then Send, CloseSend, Recv as on any Stream),
// without a stream opened for it when an idle lane to addr is at hand.
// The caller must Close the stream, after the exchange when it can: only
// an exchange that ended on both sides (this side's CloseSend, the other's
// end seen by Recv) gives its lane back; any other Close resets the lane.
// With Config.LanesPerPeer 0, or a peer that serves no lanes, it is
// StreamFirst. Not for an exchange that lasts (an upgraded connection):
// it would hold a lane that others could use.
func (t *Transport) Exchange(ctx context.Context, addr, method string, first []byte,
	closeSend bool) (*Stream, error) {
	if t.cfg.LanesPerPeer == 0 || t.laneless(addr) {
		return t.StreamFirst(ctx, addr, method, first, closeSend)
	}
	if err := checkMethod(method); err != nil {
		return nil, err
	}
	if len(first) > t.cfg.MaxFrameSize {
		return nil, fmt.Errorf("stream %s %s: %w: %d bytes > %d", method, addr, ErrFrameTooLarge,
			len(first), t.cfg.MaxFrameSize)
	}
	for attempt := 0; ; attempt++ {
		l, fresh, err := t.takeLane(ctx, addr)
		if errors.Is(err, errLaneless) {
			return t.StreamFirst(ctx, addr, method, first, closeSend)
		}
		if attempt == 0 {
			t.metrics.calls.Inc()
		}
		if err != nil {
			t.metrics.callErrors.Inc()
			return nil, err
		}
		s := &Stream{t: t, str: l.str, method: method, addr: addr, client: true, lane: l, onLane: true}
		s.stopCtx = watch(ctx, l.str)
		bp := getBuf()
		var fh [frameHeaderLen]byte
		putFrameHeader(fh[:], frameOpen, requestHeaderLen+len(method))
		b := appendRequestHeader(append((*bp)[:0], fh[:]...), method, handlerBudget(ctx))
		if first != nil && len(first) <= 32<<10 {
			b = appendFrame(b, frameData, first)
			first = nil
			if closeSend {
				b = appendFrame(b, frameEnd, nil)
			}
		}
		_, err = l.str.Write(b)
		*bp = b
		putBuf(bp)
		if err != nil {
			s.broken.Store(true)
			s.Close()
			if !fresh && ctx.Err() == nil && attempt < 3 {
				// A pooled lane that broke while idle: none of this
				// exchange reached a handler, take another.
				continue
			}
			t.metrics.callErrors.Inc()
			return nil, s.wrap("open", err)
		}
		if !fresh {
			t.lanes.reused.Add(1)
		}
		if first != nil {
			err = s.Send(first)
			if err == nil && closeSend {
				err = s.CloseSend()
			}
		} else if closeSend {
			s.sentEnd.Store(true) // in the write above
		}
		if err != nil {
			s.Close()
			t.metrics.callErrors.Inc()
			return nil, s.wrap("open", err)
		}
		return s, nil
	}
}

// takeLane pops the most recently used live lane to addr, or opens one
// (fresh).
func (t *Transport) takeLane(ctx context.Context, addr string) (*lane, bool, error) {
	now := time.Now()
	var stale []*lane
	var got *lane
	t.lanes.mu.Lock()
	for q := t.lanes.idle[addr]; len(q) > 0 && got == nil; q = t.lanes.idle[addr] {
		l := q[len(q)-1]
		q[len(q)-1] = nil
		t.lanes.idle[addr] = q[:len(q)-1]
		live := l.conn.Context().Err() == nil && l.str.Context().Err() == nil
		if live && now.Sub(l.idle) < t.cfg.LaneIdleTimeout {
			got = l
		} else {
			stale = append(stale, l)
		}
	}
	t.lanes.mu.Unlock()
	for _, l := range stale {
		l.close()
	}
	if got != nil {
		return got, false, nil
	}
	l, err := t.openLane(ctx, addr)
	return l, true, err
}

// openLane opens a lane to addr and waits for the peer's acknowledgement
// (one round trip, once per lane).
func (t *Transport) openLane(ctx context.Context, addr string) (*lane, error) {
	c, str, err := t.openStream(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	stop := watch(ctx, str)
	var b [frameHeaderLen + requestHeaderLen + len(laneMethod)]byte
	putFrameHeader(b[:], frameOpen, requestHeaderLen+len(laneMethod))
	appendRequestHeader(b[:frameHeaderLen], laneMethod, 0)
	var typ frameType
	var p []byte
	if _, err = str.Write(b[:]); err == nil {
		_ = str.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
		var h [frameHeaderLen]byte
		typ, p, err = readFrame(str, &h, t.cfg.MaxFrameSize, nil)
		_ = str.SetReadDeadline(time.Time{})
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	switch {
	case err == nil && typ == frameEnd:
		t.lanes.opened.Add(1)
		return &lane{addr: addr, conn: c, str: str}, nil
	case err == nil && typ == frameError:
		kill(str)
		re, derr := decodeError(p)
		if derr == nil && re.Code == CodeNoHandler {
			t.lanes.mu.Lock()
			t.lanes.laneless[addr] = time.Now().Add(lanelessFor)
			t.lanes.mu.Unlock()
			t.log.Debug().Str("peer", addr).Msg("peer serves no lanes (an earlier build): a stream per call")
		}
		return nil, errLaneless // the plain stream gets its own answer
	case err == nil:
		err = fmt.Errorf("%w: unexpected frame type %d", errBadFrame, typ)
	}
	kill(str)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: open lane to %s: %w", ErrNotSent, addr, ctx.Err())
	}
	return nil, fmt.Errorf("%w: %w", ErrNotSent, classify("open lane to "+addr, err))
}

// putLane keeps a lane whose exchange ended cleanly, unless the pool is
// full or the transport closing.
func (t *Transport) putLane(l *lane) {
	_ = l.str.SetReadDeadline(time.Time{})
	_ = l.str.SetWriteDeadline(time.Time{})
	l.idle = time.Now()
	t.lanes.mu.Lock()
	q := t.lanes.idle[l.addr]
	if t.closed.Load() || len(q) >= t.cfg.LanesPerPeer {
		t.lanes.mu.Unlock()
		l.close()
		return
	}
	t.lanes.idle[l.addr] = append(q, l)
	t.lanes.mu.Unlock()
}

// dropLanes closes the idle lanes to addr (its connection is going).
func (t *Transport) dropLanes(addr string) {
	t.lanes.mu.Lock()
	q := t.lanes.idle[addr]
	delete(t.lanes.idle, addr)
	t.lanes.mu.Unlock()
	for _, l := range q {
		l.close()
	}
}

// laneIdle is how long the handler side waits for a lane's next exchange.
func (t *Transport) laneIdle() time.Duration { return 2 * t.cfg.LaneIdleTimeout }

// serveLane is the handler side of a lane: it acknowledges the open, then
// serves one exchange after another until the caller closes the lane, it
// stays idle for laneIdle, or an exchange does not end cleanly.
func (t *Transport) serveLane(str *quic.Stream, peer string) {
	if _, err := str.Write(appendFrame(nil, frameEnd, nil)); err != nil {
		kill(str)
		return
	}
	var h [frameHeaderLen]byte
	for {
		_ = str.SetReadDeadline(time.Now().Add(t.laneIdle()))
		typ, p, err := readFrame(str, &h, t.cfg.MaxFrameSize, nil)
		_ = str.SetReadDeadline(time.Time{})
		if err != nil {
			if err == io.EOF || isTimeout(err) {
				// Closed by the caller, or idle: a clean end.
				_ = str.Close()
				str.CancelRead(codeDone)
				return
			}
			kill(str)
			return
		}
		method, timeout, body, err := decodeRequest(p)
		if err != nil || typ != frameOpen || len(body) != 0 {
			str.CancelRead(codeProtocol)
			str.CancelWrite(codeProtocol)
			return
		}
		if !t.serveExchange(str, peer, method, timeout) {
			kill(str)
			return
		}
	}
}

// serveExchange serves one exchange of a lane; false if the lane cannot
// carry another.
func (t *Transport) serveExchange(str *quic.Stream, peer, method string, timeout time.Duration) bool {
	t.metrics.served.Inc()
	s := newStream(t, str, method, peer, "")
	s.onLane = true
	var err error
	h := t.streams[method]
	if h == nil {
		err = &RemoteError{Code: CodeNoHandler, Message: "no stream handler for " + method}
	} else if aerr := t.authorize(peer, method); aerr != nil {
		err = &RemoteError{Code: CodeForbidden, Message: aerr.Error()}
	}
	if err != nil {
		t.metrics.serverErrors.Inc()
	} else {
		ctx, done := t.handlerContext(str, timeout)
		_, err = t.invoke(ctx, method, func() ([]byte, error) { return nil, h(ctx, s) })
		done()
	}
	if !s.endExchange(err) {
		return false
	}
	// The caller's side must be over too before the next exchange: read
	// what the handler left unread of it (an upload it did not need, the
	// end after a request without a body), once no reader it left behind
	// is in a read; later reads of theirs fail.
	_ = str.SetReadDeadline(time.Now().Add(t.laneIdle()))
	s.rmu.Lock()
	s.sealed = true
	for !s.recvEnd.Load() {
		if _, err := s.recv(); err != nil && err != io.EOF {
			s.rmu.Unlock()
			return false
		}
	}
	s.rmu.Unlock()
	_ = str.SetReadDeadline(time.Time{})
	_ = str.SetWriteDeadline(time.Time{})
	return !s.broken.Load()
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
