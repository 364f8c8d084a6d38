// Package config builds an agent's runtime configuration.
//
// One builder merges, in this order, the defaults, an optional JSON config
// file (-config FILE), MESHGW_<FLAG> environment variables and command-line
// flags, then validates the result with messages that name the bad field.
// Every option is declared once in the options table below: its flag name is
// also its JSON key and, upper-cased with '-' turned into '_', its
// environment variable.
//
// config imports no other meshgw package; node and cmd import it.
package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshgw/meshgw/dispatch"
)

// Default ports, from the product contract.
const (
	DefaultGossipPort = 7946
	DefaultRPCPort    = 7947
	DefaultRaftPort   = 7948
	DefaultHTTPPort   = 7480
)

// Roles an agent can take.
const (
	RoleGateway = "gateway"
	RoleRunner  = "runner"
)

// Runtime is the validated configuration one agent runs with. It holds plain
// values only; how each was obtained is the builder's business.
type Runtime struct {
	// NodeName is the agent's unique name in the mesh. Defaults to the name
	// kept in the data dir, else the host name.
	NodeName string
	// BindAddr is the gossip host:port (TCP and UDP).
	BindAddr string
	// AdvertiseAddr is the host other nodes use to reach this one. Empty
	// means: the bind host if it is specific, else the first private IP.
	AdvertiseAddr string
	// RPCAddr is the QUIC (UDP) host:port for node-to-node RPC.
	RPCAddr string
	// RaftAddr is the TCP host:port of the Raft transport.
	RaftAddr string
	// HTTPAddr is the client API host:port. Loopback by default.
	HTTPAddr string
	// ProxyAddr, when set, is a data-plane listener serving only /svc/
	// (http services) and /v1/health, on a leaner HTTP/1.1 server than the
	// API's: the address for high-rate proxy traffic. Empty: off.
	ProxyAddr string
	// Join lists gossip seeds to join at start; failing to reach every one is fatal.
	Join []string
	// RetryJoin lists seeds retried in the background until one answers.
	RetryJoin []string
	// Cluster is the cluster ID this agent serves; resources are namespaced by it.
	Cluster string
	// Roles are the agent's roles: gateway (accepts requests), runner (executes).
	Roles []string
	// Tags are user tags gossiped with the member (runner_tags match them).
	Tags map[string]string
	// DataDir keeps the node identity, Raft data, keyring and TLS material.
	DataDir string
	// BootstrapExpect is how many live nodes of the cluster must be seen
	// before its Raft group is created. 0 never bootstraps (wait to be added).
	BootstrapExpect int
	// RaftVoters is the target number of voters per group (autopilot).
	RaftVoters int
	// AutopilotDeadAfter is how long a voter must be failed in gossip before
	// autopilot replaces it.
	AutopilotDeadAfter time.Duration
	// Dev runs a self-contained single node: loopback addresses, a fresh data
	// dir, bootstrap-expect 1, an ephemeral CA.
	Dev bool
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel string
	// LogFormat is console (people) or json (machines).
	LogFormat string
	// GossipProfile tunes failure detection: lan (default), local, wan.
	GossipProfile string
	// RaftRTT is Raft's time unit: a leader heartbeats every RTT and a
	// follower starts an election after 10-20 RTT without one. It should be
	// about the round trip between voters; when not set it follows the
	// gossip profile (DefaultRaftRTT).
	RaftRTT time.Duration
	// CAFile, CertFile, KeyFile are the node-to-node mutual TLS material.
	CAFile, CertFile, KeyFile string
	// Encrypt is the base64 gossip encryption key.
	Encrypt string
	// RequireTLSCA (on by default outside -dev) refuses to start with the
	// built-in shared CA: node-to-node TLS must come from
	// -ca-file/-cert-file/-key-file or from -encrypt. A node whose listeners
	// are all on loopback is exempt unless the option was set explicitly:
	// nothing off its host can reach it.
	RequireTLSCA bool
	// ACL turns on token checks on the HTTP API.
	ACL bool
	// MetricsPublic opens /metrics to scrapers without a token under ACL.
	MetricsPublic bool
	// DNSAddr, when set, serves the DNS interface (UDP and TCP) there.
	DNSAddr string
	// HTTPCertFile and HTTPKeyFile serve the client API over HTTPS.
	HTTPCertFile, HTTPKeyFile string
	// MaxConcurrentExecs caps executions running at once on this runner.
	MaxConcurrentExecs int
	// ExecUser is the user exec services run as on this runner when their
	// definition names none (empty: the agent's own user).
	ExecUser string
	// RetentionCount, RetentionBytes and RetentionAge bound the execution
	// records kept per cluster (RetentionBytes their total encoded size:
	// every voter holds them in memory).
	RetentionCount int
	RetentionBytes int64
	RetentionAge   time.Duration
	// MaxBodyBytes bounds request bodies on the HTTP API.
	MaxBodyBytes int64
	// MaxInputBytes bounds a run's input (larger is 413 before anything
	// is recorded or run). At most 2 MiB: an async run's record keeps its
	// input whole, within the 4 MiB a replicated value may take.
	MaxInputBytes int
	// LeaveTimeout bounds the graceful leave on shutdown.
	LeaveTimeout time.Duration
	// LeaveOnTerminate makes SIGTERM/SIGINT leave the mesh even on a node
	// that holds a Raft replica. Off by default: a voter that leaves is
	// removed from its group by autopilot, so a rolling restart would
	// re-replicate every group (Consul's and Nomad's servers behave alike).
	// A node without a replica always leaves; `meshgw leave` always leaves.
	LeaveOnTerminate bool
	// SecretsKeyFile holds the keys that seal secrets at rest (one base64
	// key a line, the sealing key first); empty: derived from -encrypt.
	SecretsKeyFile string
	// CacheSize bounds the response-cache copies this node holds (bytes).
	CacheSize int64
	// CentralLog and the Log* fields configure the central log
	// (centrallog.go in this package).
	CentralLog        bool
	LogSpoolBytes     int64
	LogRetentionAge   time.Duration
	LogRetentionCount int
	LogRetentionBytes int64
	Syslog            string
	// ThrottleLease is how long a node cut off from the cluster's throttle
	// manager may spend its fallback shares of the services' limits, and
	// how long the manager keeps the share of a node it does not hear from
	// before the others spend it (throttle.go in this package).
	ThrottleLease time.Duration

	// set records which options were given explicitly (file, env or flag).
	set map[string]bool
}

// IsSet reports whether an option was given explicitly rather than defaulted.
func (r *Runtime) IsSet(name string) bool { return r.set[name] }

// HasRole reports whether the agent has role.
func (r *Runtime) HasRole(role string) bool {
	for _, x := range r.Roles {
		if x == role {
			return true
		}
	}
	return false
}

// Default returns the configuration used when nothing is given.
func Default() Runtime {
	host, _ := os.Hostname()
	return Runtime{
		NodeName:           host,
		BindAddr:           fmt.Sprintf("0.0.0.0:%d", DefaultGossipPort),
		RPCAddr:            fmt.Sprintf("0.0.0.0:%d", DefaultRPCPort),
		RaftAddr:           fmt.Sprintf("0.0.0.0:%d", DefaultRaftPort),
		HTTPAddr:           fmt.Sprintf("127.0.0.1:%d", DefaultHTTPPort),
		Cluster:            "default",
		Roles:              []string{RoleGateway, RoleRunner},
		Tags:               map[string]string{},
		BootstrapExpect:    3,
		RaftVoters:         3,
		AutopilotDeadAfter: 30 * time.Second,
		LogLevel:           "info",
		LogFormat:          "console",
		GossipProfile:      "lan",
		RaftRTT:            DefaultRaftRTT("lan"),
		MaxConcurrentExecs: 64,
		RequireTLSCA:       true,
		RetentionCount:     10000,
		RetentionBytes:     256 << 20,
		RetentionAge:       24 * time.Hour,
		MaxBodyBytes:       4 << 20,
		MaxInputBytes:      1 << 20,
		LeaveTimeout:       5 * time.Second,
		CacheSize:          DefaultCacheSize,
		set:                map[string]bool{},
		CentralLog:         true,               // the central log (centrallog.go)
		LogSpoolBytes:      256 << 20,          // the central log's spool bound
		LogRetentionAge:    7 * 24 * time.Hour, // the central log's retention
		LogRetentionCount:  1_000_000,
		LogRetentionBytes:  1 << 30,
		ThrottleLease:      DefaultThrottleLease,
	}
}

// DefaultRaftRTT is the Raft RTT for a gossip profile: 20 ms on one host
// or a LAN (elections after 200-400 ms of silence), 100 ms across a WAN
// (1-2 s), where a shorter election timeout than a round trip would leave
// the group without a leader. 20 rather than 10 ms halves what an idle
// voter spends on heartbeats (3 idle voters: 15% of a core instead of 28%,
// BENCHMARKS.md) for 100-200 ms more before a dead leader is replaced.
func DefaultRaftRTT(profile string) time.Duration {
	if profile == "wan" {
		return 100 * time.Millisecond
	}
	return 20 * time.Millisecond
}

// applyDerived fills the defaults that depend on other options.
func (r *Runtime) applyDerived() {
	if !r.set["raft-rtt"] {
		r.RaftRTT = DefaultRaftRTT(r.GossipProfile)
	}
}

// applyDev fills the -dev defaults for every option not given explicitly.
func (r *Runtime) applyDev() {
	def := func(name string, f func()) {
		if !r.set[name] {
			f()
		}
	}
	def("node", func() {
		if r.NodeName == "" {
			r.NodeName = "dev"
		}
	})
	def("bind", func() { r.BindAddr = fmt.Sprintf("127.0.0.1:%d", DefaultGossipPort) })
	def("rpc", func() { r.RPCAddr = fmt.Sprintf("127.0.0.1:%d", DefaultRPCPort) })
	def("raft", func() { r.RaftAddr = fmt.Sprintf("127.0.0.1:%d", DefaultRaftPort) })
	def("bootstrap-expect", func() { r.BootstrapExpect = 1 })
	def("raft-voters", func() { r.RaftVoters = 1 })
	def("gossip-profile", func() { r.GossipProfile = "local" })
	def("require-tls-ca", func() { r.RequireTLSCA = false })
}

var (
	nameRe    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	clusterRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	tagKeyRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$`)
)

// Validate checks every field and returns the first problem, naming the
// option as the user spells it.
func (r *Runtime) Validate() error {
	if !nameRe.MatchString(r.NodeName) {
		return fieldErr("node", "%q must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit", r.NodeName)
	}
	for _, a := range []struct{ name, v string }{{"bind", r.BindAddr}, {"rpc", r.RPCAddr}, {"raft", r.RaftAddr}, {"http", r.HTTPAddr}} {
		if err := checkHostPort(a.v); err != nil {
			return fieldErr(a.name, "%v", err)
		}
	}
	if r.AdvertiseAddr != "" {
		host := r.AdvertiseAddr
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if net.ParseIP(host) == nil {
			return fieldErr("advertise", "%q is not an IP address", r.AdvertiseAddr)
		}
	}
	if samePort(r.BindAddr, r.RPCAddr) {
		return fieldErr("rpc", "%s uses the same UDP port as -bind %s", r.RPCAddr, r.BindAddr)
	}
	if samePort(r.RaftAddr, r.BindAddr) || samePort(r.RaftAddr, r.HTTPAddr) || samePort(r.BindAddr, r.HTTPAddr) {
		return fieldErr("raft", "-bind, -raft and -http must use different TCP ports (%s, %s, %s)", r.BindAddr, r.RaftAddr, r.HTTPAddr)
	}
	if r.ProxyAddr != "" {
		if err := checkHostPort(r.ProxyAddr); err != nil {
			return fieldErr("proxy", "%v", err)
		}
		if samePort(r.ProxyAddr, r.HTTPAddr) || samePort(r.ProxyAddr, r.BindAddr) || samePort(r.ProxyAddr, r.RaftAddr) {
			return fieldErr("proxy", "%s must use a TCP port of its own, not one of -bind, -raft or -http (%s, %s, %s)", r.ProxyAddr, r.BindAddr, r.RaftAddr, r.HTTPAddr)
		}
	}
	if r.DNSAddr != "" {
		if err := checkHostPort(r.DNSAddr); err != nil {
			return fieldErr("dns", "%v", err)
		}
		for _, o := range []string{r.BindAddr, r.RPCAddr, r.RaftAddr, r.HTTPAddr, r.ProxyAddr} {
			if samePort(r.DNSAddr, o) {
				return fieldErr("dns", "%s must use a port of its own (UDP and TCP), not that of %s", r.DNSAddr, o)
			}
		}
	}
	for _, lst := range []struct {
		name string
		v    []string
	}{{"join", r.Join}, {"retry-join", r.RetryJoin}} {
		for _, a := range lst.v {
			if err := checkHostPort(a); err != nil {
				return fieldErr(lst.name, "%v", err)
			}
		}
	}
	if !clusterRe.MatchString(r.Cluster) {
		return fieldErr("cluster", "%q must be 1-63 characters of letters, digits, '.', '_' or '-'", r.Cluster)
	}
	if len(r.Roles) == 0 {
		return fieldErr("roles", "at least one of gateway, runner is required")
	}
	for _, role := range r.Roles {
		if role != RoleGateway && role != RoleRunner {
			return fieldErr("roles", "unknown role %q (want gateway, runner)", role)
		}
	}
	for k, v := range r.Tags {
		if !tagKeyRe.MatchString(k) {
			return fieldErr("tag", "key %q must be 1-32 characters of letters, digits, '.', '_' or '-'", k)
		}
		if len(v) > 64 {
			return fieldErr("tag", "value of %q is longer than 64 bytes", k)
		}
	}
	if r.DataDir == "" {
		return fieldErr("data-dir", "required")
	}
	if r.BootstrapExpect < 0 || r.BootstrapExpect > 9 {
		return fieldErr("bootstrap-expect", "%d out of range 0-9", r.BootstrapExpect)
	}
	if r.RaftVoters < 1 || r.RaftVoters > 9 || r.RaftVoters%2 == 0 {
		return fieldErr("raft-voters", "%d must be odd, 1-9", r.RaftVoters)
	}
	if r.AutopilotDeadAfter < time.Second {
		return fieldErr("autopilot-dead-after", "%s is below 1s", r.AutopilotDeadAfter)
	}
	switch r.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		return fieldErr("log-level", "%q (want trace, debug, info, warn or error)", r.LogLevel)
	}
	switch r.LogFormat {
	case "console", "json":
	default:
		return fieldErr("log-format", "%q (want console or json)", r.LogFormat)
	}
	switch r.GossipProfile {
	case "lan", "local", "wan":
	default:
		return fieldErr("gossip-profile", "%q (want lan, local or wan)", r.GossipProfile)
	}
	if r.RaftRTT < time.Millisecond || r.RaftRTT > 2*time.Second || r.RaftRTT%time.Millisecond != 0 {
		return fieldErr("raft-rtt", "%s must be whole milliseconds from 1ms to 2s", r.RaftRTT)
	}
	n := 0
	for _, f := range []string{r.CAFile, r.CertFile, r.KeyFile} {
		if f != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		return fieldErr("ca-file", "-ca-file, -cert-file and -key-file go together")
	}
	if (r.HTTPCertFile == "") != (r.HTTPKeyFile == "") {
		return fieldErr("http-cert-file", "-http-cert-file and -http-key-file go together")
	}
	if r.MaxConcurrentExecs < 1 {
		return fieldErr("max-concurrent-execs", "%d must be at least 1", r.MaxConcurrentExecs)
	}
	if r.RetentionCount < 1 {
		return fieldErr("retention-count", "%d must be at least 1", r.RetentionCount)
	}
	if r.RetentionBytes < dispatch.MaxRecordSize {
		return fieldErr("retention-bytes", "%d is below %d, one execution record at its largest",
			r.RetentionBytes, dispatch.MaxRecordSize)
	}
	if r.RetentionAge < time.Minute {
		return fieldErr("retention-age", "%s is below 1m", r.RetentionAge)
	}
	if r.MaxInputBytes < 1 || r.MaxInputBytes > 2<<20 {
		return fieldErr("max-input-bytes", "%d is not between 1 and 2097152 (an async run's record keeps its input whole within the 4 MiB a replicated value may take)", r.MaxInputBytes)
	}
	if r.MaxBodyBytes < 1024 {
		return fieldErr("max-body-bytes", "%d is below 1024", r.MaxBodyBytes)
	}
	if err := r.validateCacheSize(); err != nil {
		return err
	}
	if err := r.validateCentralLog(); err != nil { // centrallog.go
		return err
	}
	if err := r.validateThrottle(); err != nil { // throttle.go
		return err
	}
	return nil
}

// FieldError names the option that failed validation.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return fmt.Sprintf("-%s: %s", e.Field, e.Message) }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("%q: bad host %q", s, host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port %q", s, port)
	}
	return nil
}

var hostRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$`)

func validHostname(h string) bool { return hostRe.MatchString(h) }

// samePort reports whether two host:port strings share a non-zero port on
// overlapping hosts (a wildcard overlaps everything).
func samePort(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb || pa == "0" {
		return false
	}
	wild := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wild(ha) || wild(hb)
}

// DefaultDataDir is where an agent keeps its state when -data-dir is not given.
func DefaultDataDir(node string) string {
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".meshgw", node)
	}
	return filepath.Join(os.TempDir(), "meshgw", node)
}

// SortedTags renders tags as sorted k=v pairs, for logs and tables.
func SortedTags(tags map[string]string) []string {
	out := make([]string, 0, len(tags))
	for k, v := range tags {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
