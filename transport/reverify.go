package transport

import (
	"crypto/x509"
	"sort"

	"github.com/quic-go/quic-go"
)

// connUntrusted closes a connection whose peer's certificate the trust set
// no longer accepts (Reverify).
const connUntrusted quic.ApplicationErrorCode = 2

// Reverify checks again the certificate chain every connected peer sent
// at its handshake, on accepted and pooled outbound connections alike,
// with verify (the check the TLS config makes now, e.g. a
// tlsutil.Dynamic's), and closes each connection it refuses. A handshake
// reads the trust set of its moment; without this a connection made
// before a CA left the set would outlive the removal. Calls in flight on a
// closed connection fail (ErrUnreachable); the next call to that peer
// redials and is checked then. It returns the names (certificate common
// names) of the peers whose connections it closed, sorted.
func (t *Transport) Reverify(verify func(chain []*x509.Certificate) error) []string {
	type victim struct {
		conn *quic.Conn
		addr string // outbound only
	}
	var check []victim
	t.mu.Lock()
	for c := range t.inbound {
		check = append(check, victim{conn: c})
	}
	for addr, pc := range t.conns {
		select {
		case <-pc.ready:
			if pc.conn != nil {
				check = append(check, victim{conn: pc.conn, addr: addr})
			}
		default: // still dialing: its handshake reads the trust set of now
		}
	}
	t.mu.Unlock()
	seen := map[string]bool{}
	var closed []string
	for _, v := range check {
		chain := v.conn.ConnectionState().TLS.PeerCertificates
		if verify(chain) == nil {
			continue
		}
		peer := peerName(v.conn)
		if v.addr != "" {
			t.forget(v.addr, v.conn)
		}
		_ = v.conn.CloseWithError(connUntrusted, "certificate no longer trusted")
		if !seen[peer] {
			seen[peer] = true
			closed = append(closed, peer)
		}
	}
	sort.Strings(closed)
	return closed
}
