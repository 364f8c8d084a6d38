package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// upstreamPool is the proxy's HTTP/1.1 client for plain-http upstreams:
// keep-alive connections used by the handler's own goroutine. Parsing and
// serialising stay net/http's (Request.Write, ReadResponse); what it drops
// is http.Transport's two goroutines per connection and the channel
// hand-offs between them and the caller, which cost a third of the proxy's
// CPU here (ReverseProxy over Transport 11.7k req/s, this 17.2k, same
// upstream and wrk). https upstreams keep http.Transport (TLS, HTTP/2).
type upstreamPool struct {
	dialTimeout   time.Duration
	headerTimeout time.Duration
	maxHeader     int64
	maxIdle       int
	idleTimeout   time.Duration

	mu     sync.Mutex
	idle   map[string][]*upConn // host:port → LIFO of idle connections
	closed bool
}

type upConn struct {
	host     string
	conn     net.Conn
	lim      *limitedReader
	br       *bufio.Reader
	bw       *bufio.Writer
	idleFrom time.Time
	reused   bool
}

// limitedReader bounds what the response headers may read; the body phase
// lifts the bound.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

var errHeaderTooLarge = errors.New("upstream response headers too large")

const upstreamIdleTimeout = 30 * time.Second

func newUpstreamPool(cfg Config) *upstreamPool {
	return &upstreamPool{
		dialTimeout:   cfg.UpstreamDialTimeout,
		headerTimeout: cfg.UpstreamHeaderTimeout,
		maxHeader:     int64(cfg.MaxHeaderBytes),
		maxIdle:       cfg.MaxIdleConnsPerHost,
		idleTimeout:   upstreamIdleTimeout,
		idle:          map[string][]*upConn{},
	}
}

// get returns an idle connection to host or dials one.
func (p *upstreamPool) get(ctx context.Context, host string) (*upConn, error) {
	now := time.Now()
	p.mu.Lock()
	for {
		list := p.idle[host]
		if len(list) == 0 {
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[host] = list[:len(list)-1]
		if now.Sub(c.idleFrom) < p.idleTimeout {
			p.mu.Unlock()
			c.reused = true
			return c, nil
		}
		_ = c.conn.Close() // idle too long: the upstream may have dropped it
	}
	p.mu.Unlock()
	d := net.Dialer{Timeout: p.dialTimeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	lim := &limitedReader{r: conn}
	return &upConn{host: host, conn: conn, lim: lim, br: bufio.NewReaderSize(lim, 4<<10), bw: bufio.NewWriterSize(conn, 4<<10)}, nil
}

// put returns a connection whose exchange completed cleanly. It also
// closes the host's connections idle past idleTimeout (the oldest are at
// the front), so a pool that went quiet does not hold them forever.
func (p *upstreamPool) put(c *upConn) {
	c.idleFrom = time.Now()
	var stale []*upConn
	p.mu.Lock()
	list := p.idle[c.host]
	n := 0
	for n < len(list) && c.idleFrom.Sub(list[n].idleFrom) >= p.idleTimeout {
		n++
	}
	if n > 0 {
		stale = append(stale, list[:n]...)
		list = append(list[:0], list[n:]...)
	}
	if p.closed || len(list) >= p.maxIdle {
		stale = append(stale, c)
	} else {
		list = append(list, c)
	}
	p.idle[c.host] = list
	p.mu.Unlock()
	for _, s := range stale {
		_ = s.conn.Close()
	}
}

// close drops every idle connection; connections in use are closed when
// their exchange ends.
func (p *upstreamPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for h, list := range p.idle {
		for _, c := range list {
			_ = c.conn.Close()
		}
		delete(p.idle, h)
	}
}

// exchange is one request on one connection: the response's body must be
// read (or abandoned) and then finish called exactly once.
type exchange struct {
	p        *upstreamPool
	c        *upConn
	resp     *http.Response
	stop     func() bool // detaches the context watcher
	writeErr chan error  // the request writer's result
}

// sent reports whether the request has been written whole (its body
// writer is done).
func (x *exchange) sent() bool { return len(x.writeErr) > 0 }

// finish returns the connection to the pool when the request was sent
// whole, the response read to its end and both sides allow keep-alive;
// otherwise it closes it (which also ends a body writer still blocked).
func (x *exchange) finish(bodyDone bool) {
	watching := x.stop()
	sent := false
	select {
	case err := <-x.writeErr:
		sent = err == nil
	default:
		// The upstream answered before taking the whole body.
	}
	if bodyDone && watching && sent && !x.resp.Close {
		x.p.put(x.c)
		return
	}
	_ = x.c.conn.Close()
}

// roundTrip sends req and reads the response headers. A request without a
// body that fails on a reused connection before any response byte arrived
// (the upstream closed it while idle) is sent again once on a new one.
func (p *upstreamPool) roundTrip(ctx context.Context, req *http.Request) (*exchange, error) {
	replayable := req.Body == nil || req.Body == http.NoBody
	for attempt := 0; ; attempt++ {
		c, err := p.get(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		x, err := p.try(ctx, c, req)
		if err == nil {
			return x, nil
		}
		_ = c.conn.Close()
		if attempt == 0 && c.reused && replayable && staleConn(err) && ctx.Err() == nil {
			continue
		}
		return nil, err
	}
}

func (p *upstreamPool) try(ctx context.Context, c *upConn, req *http.Request) (*exchange, error) {
	// Cancellation (the client went away) unblocks any read or write on
	// the connection, which is then not reused.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	writeErr := make(chan error, 1)
	x := &exchange{p: p, c: c, stop: stop, writeErr: writeErr}
	if req.Body == nil || req.Body == http.NoBody {
		writeErr <- p.write(c, req)
	} else {
		// The body is written while the response is read: an upstream may
		// answer (413, say) before taking all of it.
		go func() { writeErr <- p.write(c, req) }()
	}
	c.lim.n = p.maxHeader + int64(c.br.Size())
	_ = c.conn.SetReadDeadline(time.Now().Add(p.headerTimeout))
	var resp *http.Response
	var err error
	for {
		select {
		case werr := <-writeErr:
			writeErr <- werr // keep it for the check below
			if werr != nil {
				stop()
				return nil, werr
			}
		default:
		}
		resp, err = http.ReadResponse(c.br, req)
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// 1xx informational responses are not relayed.
	}
	if err == nil && resp.StatusCode == http.StatusSwitchingProtocols {
		err = errors.New("upstream switched protocols: upgrades are not proxied")
	}
	if err != nil {
		stop()
		_ = c.conn.Close() // fails a body writer's next write
		// Do not wait for a body writer: it may be blocked reading a slow
		// client's upload, and ends on its own (its channel is buffered).
		select {
		case werr := <-writeErr:
			if werr != nil && !errors.Is(werr, net.ErrClosed) && ctx.Err() == nil {
				err = fmt.Errorf("%w (sending the request: %v)", err, werr)
			}
		default:
		}
		if errors.Is(err, errHeaderTooLarge) {
			err = errHeaderTooLarge
		}
		return nil, err
	}
	_ = c.conn.SetReadDeadline(time.Time{})
	c.lim.n = math.MaxInt64
	x.resp = resp
	return x, nil
}

func (p *upstreamPool) write(c *upConn, req *http.Request) error {
	if err := req.Write(c.bw); err != nil {
		return err
	}
	return c.bw.Flush()
}

// staleConn: the failure is what a keep-alive connection closed by the
// upstream while idle looks like.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, fasthttp.ErrConnectionClosed) // the data plane's client says it so
}
