package dispatch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meshgw/meshgw/dispatch/runner"
	"github.com/meshgw/meshgw/transport"
)

// Protocol switches (WebSocket, any Connection: Upgrade) through a runner:
// the gateway keeps its send side open; the runner answers a 101 header
// frame and from then on the stream carries the raw bytes both ways, a
// half-close (CloseSend) ending each direction.

// Upgrade implements runner.Upgrader on the runner side of MethodHTTP.
func (w *frameResponseWriter) Upgrade(h http.Header, fn func(io.ReadWriteCloser)) error {
	if w.wrote {
		return errors.New("switching protocols: the response has started")
	}
	w.wrote = true
	var b []byte
	if w.json {
		b, _ = json.Marshal(httpRespWire{Status: http.StatusSwitchingProtocols, Header: h})
	} else {
		b = appendResp(nil, http.StatusSwitchingProtocols, h)
	}
	if w.err = w.send(b); w.err != nil {
		return w.err
	}
	_ = w.s.SetWriteDeadline(time.Time{}) // a quiet connection may stay open
	fn(&streamConn{s: w.s})
	return nil
}

// upgradeRemote switches the client's connection after a runner's 101
// and pipes it through s; end releases the exchange when done.
func upgradeRemote(w http.ResponseWriter, h http.Header, s *transport.Stream, end func()) error {
	up := runner.FindUpgrader(w)
	if up == nil {
		end()
		return errors.New("this listener cannot switch protocols (Connection: Upgrade)")
	}
	err := up.Upgrade(h, func(client io.ReadWriteCloser) {
		defer end()
		runner.Pipe(client, &streamConn{s: s})
	})
	if err != nil {
		end()
		return fmt.Errorf("switching protocols: %w", err)
	}
	return nil
}

// streamConn is a switched connection over a stream: each Write a frame,
// Close a half-close.
type streamConn struct {
	s   *transport.Stream
	buf []byte
	err error
}

func (c *streamConn) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		f, err := c.s.Recv()
		if err != nil {
			c.err = err
			continue
		}
		c.buf = f
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *streamConn) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		n := min(len(rest), proxyChunk)
		if err := c.s.Send(rest[:n]); err != nil {
			return len(p) - len(rest), err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

func (c *streamConn) Close() error { return c.s.CloseSend() }
