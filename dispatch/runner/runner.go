package runner

import (
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Sentinel errors.
var (
	// ErrBusy: the executor is at its concurrency limit; try another runner
	// or answer 429/503 with Retry-After.
	ErrBusy = errors.New("runner: busy")
	// ErrInvalid: the request cannot be run (empty command, bad bounds).
	ErrInvalid = errors.New("runner: invalid request")
	// ErrClosed: the executor is closed.
	ErrClosed = errors.New("runner: closed")
)

// Config bounds the executor.
type Config struct {
	// MaxConcurrent is the number of exec processes that may run at once;
	// more fail with ErrBusy. Default 64.
	MaxConcurrent int
	// MaxConcurrentHTTP is the number of proxied HTTP requests in flight at
	// once; more fail with 503. Default 1024.
	MaxConcurrentHTTP int
	// MaxOutput caps captured stdout and stderr, each. Default 1 MiB.
	MaxOutput int
	// MaxInput caps the stdin input. Default 8 MiB.
	MaxInput int
	// KillGrace is the time between SIGTERM and SIGKILL to the process
	// group on timeout or cancellation, and the bound on draining output
	// pipes after the process exits. Default 2s.
	KillGrace time.Duration
	// DefaultPath is PATH for processes whose service declares none.
	// Default "/usr/local/bin:/usr/bin:/bin".
	DefaultPath string
	// DefaultDir is the working directory when a service declares none.
	// Default os.TempDir().
	DefaultDir string
	// DefaultUser, when set, is the user (name or numeric uid) processes
	// run as when their request names none; empty: the runner's own user,
	// who can read the agent's TLS key and keyring.
	DefaultUser string
	// MaxHeaderBytes bounds the headers of a proxied request and of the
	// upstream's response. Default 64 KiB.
	MaxHeaderBytes int
	// UpstreamHeaderTimeout bounds the wait for an upstream's response
	// headers. Default 60s.
	UpstreamHeaderTimeout time.Duration
	// UpstreamDialTimeout bounds connecting to an upstream. Default 5s.
	UpstreamDialTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool size per upstream.
	// Default 64.
	MaxIdleConnsPerHost int
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		MaxConcurrent:         64,
		MaxConcurrentHTTP:     1024,
		MaxOutput:             1 << 20,
		MaxInput:              8 << 20,
		KillGrace:             2 * time.Second,
		DefaultPath:           "/usr/local/bin:/usr/bin:/bin",
		DefaultDir:            os.TempDir(),
		MaxHeaderBytes:        64 << 10,
		UpstreamHeaderTimeout: 60 * time.Second,
		UpstreamDialTimeout:   5 * time.Second,
		MaxIdleConnsPerHost:   64,
	}
}

// Validate checks the bounds.
func (c Config) Validate() error {
	switch {
	case c.MaxConcurrent < 1:
		return fmt.Errorf("runner: MaxConcurrent must be at least 1")
	case c.MaxConcurrentHTTP < 1:
		return fmt.Errorf("runner: MaxConcurrentHTTP must be at least 1")
	case c.MaxOutput < 1:
		return fmt.Errorf("runner: MaxOutput must be positive")
	case c.MaxInput < 1:
		return fmt.Errorf("runner: MaxInput must be positive")
	case c.KillGrace <= 0:
		return fmt.Errorf("runner: KillGrace must be positive")
	case c.DefaultPath == "":
		return fmt.Errorf("runner: DefaultPath must be set")
	case c.DefaultDir == "":
		return fmt.Errorf("runner: DefaultDir must be set")
	case c.MaxHeaderBytes < 1024:
		return fmt.Errorf("runner: MaxHeaderBytes must be at least 1024")
	case c.UpstreamHeaderTimeout <= 0 || c.UpstreamDialTimeout <= 0:
		return fmt.Errorf("runner: upstream timeouts must be positive")
	case c.MaxIdleConnsPerHost < 1:
		return fmt.Errorf("runner: MaxIdleConnsPerHost must be at least 1")
	}
	return nil
}

// Executor runs exec and http work with bounded concurrency. It is safe for
// concurrent use.
type Executor struct {
	cfg Config
	log zerolog.Logger
	// execLimit and execInFlight bound the exec processes running at
	// once; the limit can change at run time (SetMaxConcurrent).
	execLimit, execInFlight atomic.Int64
	httpSem                 chan struct{}
	client                  *http.Transport // https upstreams
	pool                    *upstreamPool   // http upstreams
	// upstreams caches parsed upstream URLs.
	upstreams boundedCache[*url.URL]
	// hostClients are the data plane's upstream clients, by host:port.
	hostClients boundedCache[*fasthttp.HostClient]
	errorLog    *log.Logger
	closed      atomic.Bool
	wg          sync.WaitGroup // running processes
}

// New builds an executor. It starts nothing.
func New(cfg Config, logger zerolog.Logger) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Executor{
		cfg:     cfg,
		log:     logger.With().Str("component", "runner").Logger(),
		httpSem: make(chan struct{}, cfg.MaxConcurrentHTTP),
	}
	e.execLimit.Store(int64(cfg.MaxConcurrent))
	e.upstreams.max = maxCachedUpstreams
	e.hostClients.max = maxCachedUpstreams
	e.hostClients.drop = func(c *fasthttp.HostClient) { c.CloseIdleConnections() }
	e.client = &http.Transport{
		Proxy: nil, // never route through the runner's HTTP_PROXY
		DialContext: (&net.Dialer{
			Timeout:   cfg.UpstreamDialTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:           cfg.MaxIdleConnsPerHost * 4,
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    cfg.UpstreamDialTimeout,
		ResponseHeaderTimeout:  cfg.UpstreamHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: int64(cfg.MaxHeaderBytes),
		ForceAttemptHTTP2:      true,
	}
	e.pool = newUpstreamPool(cfg)
	e.errorLog = log.New(zerologWriter{e.log}, "", 0)
	return e, nil
}

// Config returns the executor's configuration.
func (e *Executor) Config() Config {
	c := e.cfg
	c.MaxConcurrent = int(e.execLimit.Load())
	return c
}

// SetMaxConcurrent changes how many exec processes may run at once (a
// reload). Processes already running go on; new ones are refused with
// ErrBusy until the count is below the new limit.
func (e *Executor) SetMaxConcurrent(n int) error {
	if n < 1 {
		return fmt.Errorf("%w: MaxConcurrent must be at least 1, not %d", ErrInvalid, n)
	}
	e.execLimit.Store(int64(n))
	return nil
}

// InFlight returns the number of exec processes running now.
func (e *Executor) InFlight() int { return int(e.execInFlight.Load()) }

// HTTPInFlight returns the number of proxied HTTP requests in flight now.
func (e *Executor) HTTPInFlight() int { return len(e.httpSem) }

// Close refuses new work, waits for running processes to end (callers
// cancel their contexts to stop them) and closes idle upstream connections.
func (e *Executor) Close() error {
	e.closed.Store(true)
	e.wg.Wait()
	e.client.CloseIdleConnections()
	e.pool.close()
	e.hostClients.clear()
	return nil
}

// zerologWriter routes a std *log.Logger (used by httputil.ReverseProxy)
// into zerolog at warn level.
type zerologWriter struct{ l zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	w.l.Warn().Msg(msg)
	return len(p), nil
}
