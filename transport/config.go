package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// NextProto is the ALPN protocol of meshgw's transport.
const NextProto = "meshgw/1"

// Config configures a Transport.
type Config struct {
	// BindAddr is the UDP host:port to listen on and dial from
	// ("127.0.0.1:0" picks a free port).
	BindAddr string
	// TLS is the mutual-TLS config (see tlsutil.NewConfig), used for both
	// listening and dialing. It must hold a certificate, RootCAs and
	// ClientCAs, or be a config that verifies peers itself
	// (tlsutil.Dynamic: VerifyConnection with RequireAnyClientCert). The Transport clones it and sets NextProtos (and ServerName
	// "meshgw" when empty).
	TLS *tls.Config
	// MaxFrameSize bounds one frame's payload (a request or response body
	// plus a small header, or one stream message). Default 8 MiB.
	MaxFrameSize int
	// MaxIncomingStreams bounds concurrent calls per incoming connection.
	// Default 4096.
	MaxIncomingStreams int64
	// HandshakeTimeout bounds a QUIC+TLS handshake. Default 5s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a silent connection; keep-alives are sent every
	// IdleTimeout/3, so only a dead peer goes silent: a peer killed without
	// closing is detected after IdleTimeout. Default 6s.
	IdleTimeout time.Duration
	// Authorize, when set, is asked before every call to a registered
	// method whether peer (the common name of the caller's verified
	// certificate) may call it; an error refuses the call with
	// CodeForbidden and its message. It must not block for long.
	Authorize func(peer, method string) error
	// LanesPerPeer bounds the idle lanes (streams kept for the next
	// exchange, lane.go) kept per peer address for Exchange. 0 turns lanes
	// off, both ways: Exchange opens a stream per call and a lane's open is
	// refused as by a build without lanes. Default 64.
	LanesPerPeer int
	// LaneIdleTimeout: a lane idle this long is not reused, and the handler
	// side closes one idle twice as long. Default 15s.
	LaneIdleTimeout time.Duration
}

// DefaultConfig returns a complete Config except TLS, which the caller sets.
func DefaultConfig() Config {
	return Config{
		BindAddr:           "0.0.0.0:7947",
		MaxFrameSize:       8 << 20,
		MaxIncomingStreams: 4096,
		HandshakeTimeout:   5 * time.Second,
		IdleTimeout:        6 * time.Second,
		LanesPerPeer:       64,
		LaneIdleTimeout:    15 * time.Second,
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("transport: BindAddr %q: %w", c.BindAddr, err)
	}
	if c.TLS == nil {
		return errors.New("transport: TLS config is required")
	}
	if len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil {
		return errors.New("transport: TLS config has no certificate")
	}
	if (c.TLS.RootCAs == nil || c.TLS.ClientCAs == nil) && !verifiesItself(c.TLS) {
		return errors.New("transport: TLS config needs RootCAs and ClientCAs, or VerifyConnection (mutual TLS)")
	}
	if c.MaxFrameSize < 1024 || c.MaxFrameSize > 1<<30 {
		return fmt.Errorf("transport: MaxFrameSize %d out of range [1 KiB, 1 GiB]", c.MaxFrameSize)
	}
	if c.MaxIncomingStreams < 1 || c.MaxIncomingStreams > 1<<20 {
		return fmt.Errorf("transport: MaxIncomingStreams %d out of range [1, 1048576]", c.MaxIncomingStreams)
	}
	if c.HandshakeTimeout <= 0 {
		return fmt.Errorf("transport: HandshakeTimeout %s must be positive", c.HandshakeTimeout)
	}
	if c.IdleTimeout < 30*time.Millisecond {
		return fmt.Errorf("transport: IdleTimeout %s must be at least 30ms", c.IdleTimeout)
	}
	if c.LanesPerPeer < 0 || c.LanesPerPeer > 4096 {
		return fmt.Errorf("transport: LanesPerPeer %d out of range [0, 4096]", c.LanesPerPeer)
	}
	if c.LanesPerPeer > 0 && c.LaneIdleTimeout < 10*time.Millisecond {
		return fmt.Errorf("transport: LaneIdleTimeout %s must be at least 10ms", c.LaneIdleTimeout)
	}
	return nil
}

// verifiesItself reports whether c replaces the standard peer checks with
// its own (tlsutil.Dynamic.Config): it still requires a client certificate
// and checks every handshake in VerifyConnection.
func verifiesItself(c *tls.Config) bool {
	return c.VerifyConnection != nil && c.InsecureSkipVerify && c.ClientAuth == tls.RequireAnyClientCert
}
