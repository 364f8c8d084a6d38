// Package test holds meshgw's process-level suites: a harness that builds
// the real binary once and starts several agents as processes on 127.0.0.1
// with free ports and their own data dirs, and the integration and chaos
// tests that kill (-9), pause (SIGSTOP) and stop (SIGTERM) them. The
// partition suite (Linux, root) puts each agent in its own network namespace
// behind a bridge and cuts links with firewall rules (netns_linux_test.go).
//
// Nothing imports test.
package test
