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

	"github.com/quic-go/quic-go"
)

// Stream is one bidirectional streaming call, on a stream of its own or
// an exchange on a lane (lane.go). One goroutine may Send while another
// Recvs; Send and Recv are each not safe for concurrent use with
// themselves.
type Stream struct {
	t      *Transport
	str    *quic.Stream
	method string
	peer   string
	addr   string // dialed address (client side), for errors
	client bool

	hdr  [frameHeaderLen]byte
	wbuf []byte

	stopCtx func() bool // detaches the ctx watcher (client side)
	once    sync.Once
	closed  bool

	// On a lane an exchange ends with frameEnd (or, handler side,
	// frameError) where a plain stream has a FIN.
	lane    *lane // client side: the lane it runs on
	onLane  bool
	got     bool        // Recv returned a frame of this exchange (Recv's own)
	sentEnd atomic.Bool // this side's end is sent
	recvEnd atomic.Bool // the other side's end was read
	broken  atomic.Bool // a read or write failed: the lane cannot be reused
	// Handler side of a lane: a reader the handler left behind (an
	// upload pump) must not read the next exchange's frames, so reads
	// are serialized and the exchange sealed once the handler returned.
	rmu    sync.Mutex
	sealed bool
}

var errExchangeOver = errors.New("transport: read after the end of its exchange")

func newStream(t *Transport, str *quic.Stream, method, peer, addr string) *Stream {
	return &Stream{t: t, str: str, method: method, peer: peer, addr: addr}
}

// Method is the called method.
func (s *Stream) Method() string { return s.method }

// Peer is the CN of the other side's certificate.
func (s *Stream) Peer() string { return s.peer }

// Send writes one message. The message is copied; the caller keeps b.
func (s *Stream) Send(b []byte) error {
	if len(b) > s.t.cfg.MaxFrameSize {
		return fmt.Errorf("send %s: %w: %d bytes > %d", s.method, ErrFrameTooLarge, len(b), s.t.cfg.MaxFrameSize)
	}
	if s.sentEnd.Load() {
		return fmt.Errorf("send %s: after the end of the exchange", s.method)
	}
	bp := getBuf()
	err := writeFrame(s.str, (*bp)[:0], frameData, nil, b)
	putBuf(bp)
	if err != nil {
		s.broken.Store(true)
		return s.wrap("send", err)
	}
	return nil
}

// SendLast writes msgs as consecutive messages and, with closeSend,
// half-closes: in one write when they are small, so a response's header,
// body and end can leave in one packet. The messages are copied.
func (s *Stream) SendLast(closeSend bool, msgs ...[]byte) error {
	n := 0
	for _, b := range msgs {
		if len(b) > s.t.cfg.MaxFrameSize {
			return fmt.Errorf("send %s: %w: %d bytes > %d", s.method, ErrFrameTooLarge, len(b), s.t.cfg.MaxFrameSize)
		}
		n += frameHeaderLen + len(b)
	}
	if s.sentEnd.Load() {
		return fmt.Errorf("send %s: after the end of the exchange", s.method)
	}
	if n <= 32<<10 {
		bp := getBuf()
		buf := (*bp)[:0]
		for _, b := range msgs {
			buf = appendFrame(buf, frameData, b)
		}
		end := closeSend && s.onLane
		if end {
			buf = appendFrame(buf, frameEnd, nil) // in the same write
		}
		_, err := s.str.Write(buf)
		*bp = buf
		putBuf(bp)
		if err != nil {
			s.broken.Store(true)
			return s.wrap("send", err)
		}
		if end {
			s.sentEnd.Store(true)
			return nil
		}
	} else {
		for _, b := range msgs {
			if err := s.Send(b); err != nil {
				return err
			}
		}
	}
	if closeSend {
		return s.CloseSend()
	}
	return nil
}

// SetWriteDeadline bounds the Sends (and, handler side, the final frame)
// made after it: one that cannot complete by t, because the peer stopped
// reading, fails with a timeout. The zero time removes the bound.
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.str.SetWriteDeadline(t) }

// Recv reads the next message; io.EOF once the other side half-closed.
// The returned slice is owned by the caller. An error the handler returned
// arrives as *RemoteError; one that ran out of the caller's deadline also
// matches context.DeadlineExceeded.
func (s *Stream) Recv() ([]byte, error) {
	if s.onLane && !s.client {
		s.rmu.Lock()
		defer s.rmu.Unlock()
		if s.sealed {
			return nil, fmt.Errorf("recv %s: %w", s.method, errExchangeOver)
		}
	}
	return s.recv()
}

func (s *Stream) recv() ([]byte, error) {
	if s.onLane && s.recvEnd.Load() {
		return nil, io.EOF // what follows on the lane is the next exchange's
	}
	typ, p, err := readFrame(s.str, &s.hdr, s.t.cfg.MaxFrameSize, nil)
	if err != nil && s.onLane {
		s.broken.Store(true)
		if err == io.EOF {
			if s.lane != nil && !s.got {
				// The handler side closed the lane before this exchange
				// (idle): none of it was served.
				return nil, fmt.Errorf("recv %s %s: %w: %w: lane closed by the peer", s.method, s.addr,
					ErrUnreachable, ErrNotSent)
			}
			err = io.ErrUnexpectedEOF // a lane ends only between exchanges
		}
	}
	s.got = true
	if err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		if errors.Is(err, ErrFrameTooLarge) {
			s.str.CancelRead(codeProtocol)
			return nil, fmt.Errorf("recv %s: %w", s.method, err)
		}
		return nil, s.wrap("recv", err)
	}
	switch {
	case typ == frameData:
		return p, nil
	case typ == frameEnd && s.onLane:
		s.recvEnd.Store(true)
		return nil, io.EOF
	case typ == frameError && (s.client || !s.onLane):
		s.recvEnd.Store(true)
		re, derr := decodeError(p)
		if derr != nil {
			return nil, fmt.Errorf("recv %s: %w", s.method, derr)
		}
		if re.Code == CodeDeadline {
			// The deadline travelled with the stream and ran out there:
			// the caller's time is up, as if its own ctx had ended.
			return nil, fmt.Errorf("recv %s %s: %w: %w", s.method, s.addr, context.DeadlineExceeded, re)
		}
		return nil, re
	}
	s.broken.Store(true)
	s.str.CancelRead(codeProtocol)
	return nil, fmt.Errorf("recv %s: %w: unexpected frame type %d", s.method, errBadFrame, typ)
}

// CloseSend half-closes: the other side's Recv returns io.EOF.
func (s *Stream) CloseSend() error {
	if s.onLane {
		if s.sentEnd.Load() {
			return nil
		}
		var b [frameHeaderLen]byte
		putFrameHeader(b[:], frameEnd, 0)
		if _, err := s.str.Write(b[:]); err != nil {
			s.broken.Store(true)
			return s.wrap("close", err)
		}
		s.sentEnd.Store(true)
		return nil
	}
	if err := s.str.Close(); err != nil {
		return s.wrap("close", err)
	}
	return nil
}

// Close abandons the stream in both directions (a no-op on a finished one)
// and releases its resources. Always call it (client side). On a lane, an
// exchange that ended on both sides gives the lane back for the next one;
// any other is reset, its lane with it.
func (s *Stream) Close() error {
	s.once.Do(func() {
		stopped := true
		if s.stopCtx != nil {
			stopped = s.stopCtx()
		}
		if s.lane != nil && stopped && s.sentEnd.Load() && s.recvEnd.Load() && !s.broken.Load() {
			s.t.putLane(s.lane)
			return
		}
		s.str.CancelRead(codeDone)
		s.str.CancelWrite(codeDone)
	})
	return nil
}

// endExchange ends the handler side of a lane's exchange, an error frame
// or frameEnd, unless the handler ended it already; false if the lane
// cannot carry another.
func (s *Stream) endExchange(err error) bool {
	if s.sentEnd.Load() {
		return !s.broken.Load()
	}
	bp := getBuf()
	b := (*bp)[:0]
	if err != nil {
		re := toRemote(err)
		b = appendFrame(b, frameError, appendError(nil, re.Code, re.Message))
	} else {
		b = appendFrame(b, frameEnd, nil)
	}
	_, werr := s.str.Write(b)
	*bp = b
	putBuf(bp)
	if werr != nil {
		return false
	}
	s.sentEnd.Store(true)
	return true
}

// finish ends the handler side: an error frame or a clean FIN.
func (s *Stream) finish(err error) {
	if err != nil {
		re := toRemote(err)
		s.wbuf = appendFrame(s.wbuf[:0], frameError, appendError(nil, re.Code, re.Message))
		if _, werr := s.str.Write(s.wbuf); werr != nil {
			s.str.CancelWrite(codeCancel)
			s.str.CancelRead(codeDone)
			return
		}
	}
	_ = s.str.Close()
	s.str.CancelRead(codeDone)
}

// refusedTLS reports whether err is a TLS handshake failure: a crypto
// error of QUIC (a TLS alert, sent or received), as a certificate one side
// does not accept causes. A server that refuses the client's certificate
// does so after the client's handshake is over, so this shows on the first
// call, not only on the dial.
func refusedTLS(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode.IsCryptoError()
}

func (s *Stream) wrap(op string, err error) error {
	return classify(fmt.Sprintf("%s %s %s", op, s.method, s.addr), err)
}

// classify maps a quic-go error to ErrUnreachable (the peer or the
// connection is gone), or returns it wrapped as is.
func classify(what string, err error) error {
	var (
		se   *quic.StreamError
		ae   *quic.ApplicationError
		ite  *quic.IdleTimeoutError
		hte  *quic.HandshakeTimeoutError
		sre  *quic.StatelessResetError
		te   *quic.TransportError
		vnee *quic.VersionNegotiationError
	)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	case refusedTLS(err):
		return fmt.Errorf("%s: %w: %w: %w", what, ErrUnreachable, ErrRefused, err)
	case errors.As(err, &se) && se.Remote && se.ErrorCode == codeShutdown,
		errors.As(err, &se) && !se.Remote && se.ErrorCode == codeCancel,
		errors.As(err, &ae), errors.As(err, &ite), errors.As(err, &hte), errors.As(err, &sre),
		errors.As(err, &te), errors.As(err, &vnee), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, quic.ErrServerClosed), errors.Is(err, net.ErrClosed):
		return fmt.Errorf("%s: %w: %w", what, ErrUnreachable, err)
	case errors.As(err, &se) && se.Remote:
		return fmt.Errorf("%s: %w: stream reset by peer: %w", what, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
