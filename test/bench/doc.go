// Package bench holds meshgw's side-by-side benchmarks against the peers
// it replaces (etcd, NATS, HAProxy). It is a separate module so their
// client libraries stay out of meshgw's own dependencies.
package bench
