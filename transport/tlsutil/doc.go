// Package tlsutil owns meshgw's cluster PKI: an ECDSA P-256 cluster CA, node
// certificates signed by it (CN = node name, usable as both TLS server and
// client), and the mutual-TLS *tls.Config used by package transport.
//
// Every node certificate carries the DNS SAN "meshgw" (ServerName) so a node
// is verified against the cluster CA, not against the address it was dialled
// on; the node's identity is the certificate's CN.
//
// It imports only the standard library; transport and cmd import it.
package tlsutil
