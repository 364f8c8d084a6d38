package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Wire format (version 1, ALPN "meshgw/1"). Every message on a stream is a
// frame:
//
//	frame   = length:uint32be type:uint8 payload[length]
//
// length counts the payload only and is checked against the receiver's
// MaxFrameSize before anything is allocated (ErrFrameTooLarge otherwise).
//
//	request = timeout_ms:uint32be method_len:uint8 method body   (frameRequest, frameOpen)
//	error   = code_len:uint8 code message                        (frameError)
//
// A unary call is one frameRequest from the caller followed by its FIN, and
// one frameOK (payload = response body) or frameError from the handler
// followed by its FIN. A stream starts with frameOpen (body empty); then
// each side sends frameData frames and half-closes with a FIN; the handler
// side may end with a frameError instead of a clean FIN.
//
// A lane (lane.go) is a stream opened with frameOpen for the method
// "transport.lane", acknowledged by the handler side with a frameEnd
// (payload empty). It then carries one exchange after another, each
// shaped like a stream call with frameEnd in place of each side's FIN:
// the caller's frameOpen (method and timeout of this exchange), frameData
// frames, frameEnd; the handler's frameData frames, then frameEnd or
// frameError. Either side closes an idle lane with a FIN, and resets it to
// abandon an exchange. frameEnd is sent only on lanes, so only to peers
// that acknowledged one.
type frameType uint8

const (
	frameRequest frameType = 1 // unary request: header + body
	frameOpen    frameType = 2 // stream open: header, no body
	frameData    frameType = 3 // one stream message
	frameOK      frameType = 4 // unary response body
	frameError   frameType = 5 // handler error: code + message
	frameEnd     frameType = 6 // end of one side of an exchange on a lane (lane.go)
)

const (
	frameHeaderLen   = 5
	requestHeaderLen = 5 // timeout + method length

	// MaxMethodLen bounds a method name (it travels as one length byte).
	MaxMethodLen = 255
	// maxCodeLen bounds a RemoteError code; maxMessageLen its message.
	maxCodeLen    = 255
	maxMessageLen = 4096
)

var errBadFrame = errors.New("transport: malformed frame")

func (t frameType) valid() bool { return t >= frameRequest && t <= frameEnd }

// putFrameHeader writes the 5-byte header of a frame with an n-byte payload.
func putFrameHeader(b []byte, t frameType, n int) {
	binary.BigEndian.PutUint32(b, uint32(n))
	b[4] = byte(t)
}

// parseFrameHeader validates a frame header against max (the payload bound).
func parseFrameHeader(h *[frameHeaderLen]byte, max int) (frameType, int, error) {
	n := binary.BigEndian.Uint32(h[:4])
	t := frameType(h[4])
	if !t.valid() {
		return 0, 0, fmt.Errorf("%w: unknown type %d", errBadFrame, h[4])
	}
	if uint64(n) > uint64(max) {
		return 0, 0, fmt.Errorf("%w: %d bytes > %d", ErrFrameTooLarge, n, max)
	}
	return t, int(n), nil
}

// readFrame reads one frame from r. The payload is read into buf when it
// fits (buf[:n], so the caller keeps ownership of buf's array), otherwise
// into a fresh slice the caller owns. A clean end before the first header
// byte is io.EOF; a partial frame is io.ErrUnexpectedEOF.
func readFrame(r io.Reader, h *[frameHeaderLen]byte, max int, buf []byte) (frameType, []byte, error) {
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	t, n, err := parseFrameHeader(h, max)
	if err != nil {
		return 0, nil, err
	}
	var p []byte
	if n <= cap(buf) {
		p = buf[:n]
	} else {
		p = make([]byte, n)
	}
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return t, p, nil
}

// appendFrame appends a whole frame to dst.
func appendFrame(dst []byte, t frameType, payload []byte) []byte {
	var h [frameHeaderLen]byte
	putFrameHeader(h[:], t, len(payload))
	return append(append(dst, h[:]...), payload...)
}

func checkMethod(method string) error {
	if method == "" || len(method) > MaxMethodLen {
		return fmt.Errorf("transport: method name must be 1..%d bytes, got %d", MaxMethodLen, len(method))
	}
	return nil
}

// appendRequestHeader appends the request header (not the body).
func appendRequestHeader(dst []byte, method string, timeout time.Duration) []byte {
	var b [requestHeaderLen]byte
	binary.BigEndian.PutUint32(b[:4], timeoutMillis(timeout))
	b[4] = byte(len(method))
	return append(append(dst, b[:]...), method...)
}

// timeoutMillis encodes a remaining time: 0 = none, at least 1 ms otherwise.
func timeoutMillis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(ms)
}

// decodeRequest splits a request payload. body aliases p.
func decodeRequest(p []byte) (method string, timeout time.Duration, body []byte, err error) {
	if len(p) < requestHeaderLen {
		return "", 0, nil, fmt.Errorf("%w: request header of %d bytes", errBadFrame, len(p))
	}
	ms := binary.BigEndian.Uint32(p[:4])
	ml := int(p[4])
	if ml == 0 || len(p) < requestHeaderLen+ml {
		return "", 0, nil, fmt.Errorf("%w: method length %d in %d bytes", errBadFrame, ml, len(p))
	}
	method = string(p[requestHeaderLen : requestHeaderLen+ml])
	return method, time.Duration(ms) * time.Millisecond, p[requestHeaderLen+ml:], nil
}

// appendError appends an error payload; code and message are truncated to
// their bounds.
func appendError(dst []byte, code, message string) []byte {
	if len(code) > maxCodeLen {
		code = code[:maxCodeLen]
	}
	if len(message) > maxMessageLen {
		message = message[:maxMessageLen]
	}
	dst = append(dst, byte(len(code)))
	dst = append(dst, code...)
	return append(dst, message...)
}

func decodeError(p []byte) (*RemoteError, error) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return nil, fmt.Errorf("%w: error payload of %d bytes", errBadFrame, len(p))
	}
	cl := int(p[0])
	return &RemoteError{Code: string(p[1 : 1+cl]), Message: string(p[1+cl:])}, nil
}
