package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// option is one configuration knob: a flag, a JSON key and an env variable.
type option struct {
	name   string
	usage  string
	list   bool // repeatable: each source replaces the previous source's list
	isBool bool
	set    func(r *Runtime, v string) error
	reset  func(r *Runtime) // for lists: clear before the first value of a source
}

func str(p func(*Runtime) *string) func(*Runtime, string) error {
	return func(r *Runtime, v string) error { *p(r) = v; return nil }
}

func integer(p func(*Runtime) *int) func(*Runtime, string) error {
	return func(r *Runtime, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*p(r) = n
		return nil
	}
}

func boolean(p func(*Runtime) *bool) func(*Runtime, string) error {
	return func(r *Runtime, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a boolean", v)
		}
		*p(r) = b
		return nil
	}
}

func duration(p func(*Runtime) *time.Duration) func(*Runtime, string) error {
	return func(r *Runtime, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", v)
		}
		*p(r) = d
		return nil
	}
}

var options = []option{
	{name: "node", usage: "unique node name (default: the name kept in the data dir, else the host name)", set: str(func(r *Runtime) *string { return &r.NodeName })},
	{name: "bind", usage: "gossip bind host:port, TCP and UDP", set: str(func(r *Runtime) *string { return &r.BindAddr })},
	{name: "advertise", usage: "IP address other nodes use to reach this one", set: str(func(r *Runtime) *string { return &r.AdvertiseAddr })},
	{name: "rpc", usage: "node-to-node RPC (QUIC, UDP) host:port", set: str(func(r *Runtime) *string { return &r.RPCAddr })},
	{name: "raft", usage: "Raft transport (TCP) host:port", set: str(func(r *Runtime) *string { return &r.RaftAddr })},
	{name: "http", usage: "HTTP API host:port", set: str(func(r *Runtime) *string { return &r.HTTPAddr })},
	{name: "proxy", usage: "data-plane host:port serving only /svc/ (http services) on a faster HTTP/1.1 server; off when empty", set: str(func(r *Runtime) *string { return &r.ProxyAddr })},
	{name: "join", usage: "gossip seed host:port to join at start (repeatable)", list: true,
		set:   func(r *Runtime, v string) error { r.Join = append(r.Join, splitList(v)...); return nil },
		reset: func(r *Runtime) { r.Join = nil }},
	{name: "retry-join", usage: "gossip seed host:port retried until it answers (repeatable)", list: true,
		set:   func(r *Runtime, v string) error { r.RetryJoin = append(r.RetryJoin, splitList(v)...); return nil },
		reset: func(r *Runtime) { r.RetryJoin = nil }},
	{name: "cluster", usage: "cluster ID this agent serves", set: str(func(r *Runtime) *string { return &r.Cluster })},
	{name: "roles", usage: "comma-separated roles: gateway, runner",
		set: func(r *Runtime, v string) error { r.Roles = splitList(v); return nil }},
	{name: "tag", usage: "user tag k=v gossiped with this member (repeatable)", list: true,
		set: func(r *Runtime, v string) error {
			k, val, ok := strings.Cut(v, "=")
			if !ok || k == "" {
				return fmt.Errorf("%q is not k=v", v)
			}
			r.Tags[k] = val
			return nil
		},
		reset: func(r *Runtime) { r.Tags = map[string]string{} }},
	{name: "data-dir", usage: "directory for node identity, Raft data, keyring and TLS material (default ~/.meshgw/NODE; -dev: a fresh temporary dir)", set: str(func(r *Runtime) *string { return &r.DataDir })},
	{name: "bootstrap-expect", usage: "live nodes of the cluster to wait for before creating its Raft group (0: never bootstrap, wait to be added)", set: integer(func(r *Runtime) *int { return &r.BootstrapExpect })},
	{name: "raft-voters", usage: "target number of Raft voters per cluster (odd)", set: integer(func(r *Runtime) *int { return &r.RaftVoters })},
	{name: "autopilot-dead-after", usage: "how long a voter must be failed before it is replaced", set: duration(func(r *Runtime) *time.Duration { return &r.AutopilotDeadAfter })},
	{name: "dev", usage: "run a self-contained single node on loopback with a fresh data dir", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.Dev })},
	{name: "log-level", usage: "trace, debug, info, warn or error", set: str(func(r *Runtime) *string { return &r.LogLevel })},
	{name: "log-format", usage: "console (people) or json (machines)", set: str(func(r *Runtime) *string { return &r.LogFormat })},
	{name: "gossip-profile", usage: "failure-detection timings: lan, local or wan", set: str(func(r *Runtime) *string { return &r.GossipProfile })},
	{name: "raft-rtt", usage: "Raft's time unit, about the round trip between voters: heartbeats every RTT, elections after 10-20 RTT (default 20ms; 100ms with -gossip-profile wan)", set: duration(func(r *Runtime) *time.Duration { return &r.RaftRTT })},
	{name: "ca-file", usage: "PEM CA certificate for node-to-node mutual TLS", set: str(func(r *Runtime) *string { return &r.CAFile })},
	{name: "cert-file", usage: "PEM node certificate signed by -ca-file", set: str(func(r *Runtime) *string { return &r.CertFile })},
	{name: "key-file", usage: "PEM private key of -cert-file", set: str(func(r *Runtime) *string { return &r.KeyFile })},
	{name: "encrypt", usage: "base64 gossip encryption key (meshgw keygen)", set: str(func(r *Runtime) *string { return &r.Encrypt })},
	{name: "require-tls-ca", usage: "refuse the built-in shared CA: node-to-node TLS must come from -ca-file... or -encrypt (default on outside -dev; loopback-only nodes are exempt unless it is set)", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.RequireTLSCA })},
	{name: "acl", usage: "require tokens on the HTTP API", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.ACL })},
	{name: "metrics-public", usage: "when ACLs are on, serve /metrics without a token (for scrapers; it shows counts, never secrets)", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.MetricsPublic })},
	{name: "dns", usage: "DNS interface host:port (UDP and TCP) answering gateway.meshgw., CLUSTER.gateway.meshgw. and CLUSTER.runner.meshgw. with live nodes; off when empty", set: str(func(r *Runtime) *string { return &r.DNSAddr })},
	{name: "http-cert-file", usage: "PEM certificate to serve the HTTP API over HTTPS", set: str(func(r *Runtime) *string { return &r.HTTPCertFile })},
	{name: "http-key-file", usage: "PEM private key of -http-cert-file", set: str(func(r *Runtime) *string { return &r.HTTPKeyFile })},
	{name: "max-concurrent-execs", usage: "executions running at once on this runner; more get 429", set: integer(func(r *Runtime) *int { return &r.MaxConcurrentExecs })},
	{name: "exec-user", usage: "user (name or uid) exec services run as when their definition names none; empty: the agent's own user, which can read its TLS key and keyring", set: str(func(r *Runtime) *string { return &r.ExecUser })},
	{name: "retention-count", usage: "execution records kept per cluster", set: integer(func(r *Runtime) *int { return &r.RetentionCount })},
	{name: "retention-bytes", usage: "total size of the execution records kept per cluster (at least 4194304)",
		set: func(r *Runtime, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			r.RetentionBytes = n
			return nil
		}},
	{name: "retention-age", usage: "age after which execution records are deleted", set: duration(func(r *Runtime) *time.Duration { return &r.RetentionAge })},
	{name: "max-body-bytes", usage: "largest request body the HTTP API accepts",
		set: func(r *Runtime, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not an integer", v)
			}
			r.MaxBodyBytes = n
			return nil
		}},
	{name: "max-input-bytes", usage: "largest input a run takes (at most 2097152); larger is 413", set: integer(func(r *Runtime) *int { return &r.MaxInputBytes })},
	{name: "leave-timeout", usage: "how long a graceful leave may take on shutdown", set: duration(func(r *Runtime) *time.Duration { return &r.LeaveTimeout })},
	{name: "leave-on-terminate", usage: "leave the mesh on SIGTERM/SIGINT even when this node holds a Raft replica (default: a voter stops without leaving, so a restart keeps its place in the group)", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.LeaveOnTerminate })},
	{name: "secrets-key-file", usage: "file of keys that encrypt secrets at rest, one base64 key a line, the current first (meshgw secrets keygen); the same file on every node; default: derived from -encrypt", set: str(func(r *Runtime) *string { return &r.SecretsKeyFile })},
	{name: "cache-size", usage: "bytes of response-cache entries this node holds (4194304 to 1099511627776)", set: setCacheSize}, // response cache (cache.go)
	// The central log (centrallog.go).
	{name: "central-log", usage: "record every /svc/ request, run and service, token or key change in the cluster's central log (GET /v1/logs)", isBool: true, set: boolean(func(r *Runtime) *bool { return &r.CentralLog })},
	{name: "log-spool-bytes", usage: "bound of the central log entries waiting on this node to be stored (at least 1048576); past it entries are dropped and counted", set: int64Opt(func(r *Runtime) *int64 { return &r.LogSpoolBytes })},
	{name: "log-retention-age", usage: "age after which central log entries are deleted (0: no age bound)", set: duration(func(r *Runtime) *time.Duration { return &r.LogRetentionAge })},
	{name: "log-retention-count", usage: "central log entries kept per cluster", set: integer(func(r *Runtime) *int { return &r.LogRetentionCount })},
	{name: "log-retention-bytes", usage: "total size of the central log entries kept per cluster (at least 1048576)", set: int64Opt(func(r *Runtime) *int64 { return &r.LogRetentionBytes })},
	{name: "syslog", usage: "tcp://host:port: the active central logger forwards every entry there as RFC 5424 syslog (octet counting); off when empty", set: str(func(r *Runtime) *string { return &r.Syslog })},
	{name: "throttle-lease", usage: throttleLeaseUsage, set: duration(func(r *Runtime) *time.Duration { return &r.ThrottleLease })}, // throttle.go
}

// EnvName is the environment variable of option name.
func EnvName(name string) string {
	return "MESHGW_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Options lists every option as (flag name, env name, usage), for help and docs.
func Options() [][3]string {
	out := make([][3]string, 0, len(options)+1)
	out = append(out, [3]string{"config", EnvName("config"), "JSON config file whose keys are the flag names"})
	for _, o := range options {
		out = append(out, [3]string{o.name, EnvName(o.name), o.usage})
	}
	return out
}

// Builder merges the sources of configuration. Zero value is not usable:
// use NewBuilder.
type Builder struct {
	Args     []string // command-line arguments after "agent"
	Env      func(string) string
	ReadFile func(string) ([]byte, error)
	Output   io.Writer // where -h usage goes
}

// NewBuilder returns a builder reading the process environment and files.
func NewBuilder(args []string) *Builder {
	return &Builder{Args: args, Env: os.Getenv, ReadFile: os.ReadFile, Output: os.Stderr}
}

// ErrHelp is returned when -h or -help was asked for.
var ErrHelp = flag.ErrHelp

// Build returns the validated runtime configuration.
func (b *Builder) Build() (Runtime, error) {
	r := Default()

	// Flags are parsed first (into a staging list) so -config is known, but
	// they are applied last.
	type kv struct{ name, val string }
	var flagVals []kv
	fs := flag.NewFlagSet("meshgw agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configFile := fs.String("config", "", "JSON config file")
	for i := range options {
		o := &options[i]
		if o.isBool {
			fs.BoolFunc(o.name, o.usage, func(v string) error {
				flagVals = append(flagVals, kv{o.name, v})
				return nil
			})
			continue
		}
		fs.Func(o.name, o.usage, func(v string) error {
			flagVals = append(flagVals, kv{o.name, v})
			return nil
		})
	}
	if err := fs.Parse(b.Args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			b.usage(fs)
			return r, ErrHelp
		}
		return r, err
	}
	if fs.NArg() > 0 {
		return r, fmt.Errorf("unexpected argument %q (flags start with '-')", fs.Arg(0))
	}

	// 1. file
	path := *configFile
	if path == "" {
		path = b.Env(EnvName("config"))
	}
	if path != "" {
		if err := b.applyFile(&r, path); err != nil {
			return r, err
		}
	}
	// 2. env
	for i := range options {
		o := &options[i]
		if v, ok := b.lookupEnv(EnvName(o.name)); ok {
			if err := apply(&r, o, []string{v}, "env "+EnvName(o.name)); err != nil {
				return r, err
			}
		}
	}
	// 3. flags, grouped per option so a repeated list flag accumulates.
	grouped := map[string][]string{}
	var order []string
	for _, f := range flagVals {
		if _, ok := grouped[f.name]; !ok {
			order = append(order, f.name)
		}
		grouped[f.name] = append(grouped[f.name], f.val)
	}
	for _, name := range order {
		if err := apply(&r, find(name), grouped[name], "flag -"+name); err != nil {
			return r, err
		}
	}

	if r.Dev {
		r.applyDev()
	}
	r.applyDerived()
	if err := r.resolveDataDir(); err != nil {
		return r, err
	}
	if err := r.Validate(); err != nil {
		return r, err
	}
	return r, nil
}

func (b *Builder) lookupEnv(name string) (string, bool) {
	v := b.Env(name)
	return v, v != ""
}

func find(name string) *option {
	for i := range options {
		if options[i].name == name {
			return &options[i]
		}
	}
	return nil
}

func apply(r *Runtime, o *option, vals []string, source string) error {
	if o.list && o.reset != nil {
		o.reset(r)
	}
	for _, v := range vals {
		if err := o.set(r, v); err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
	}
	r.set[o.name] = true
	return nil
}

// applyFile reads a JSON object whose keys are option names. Values may be
// strings, numbers, booleans, or arrays of those for repeatable options.
func (b *Builder) applyFile(r *Runtime, path string) error {
	data, err := b.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	if len(data) > 1<<20 {
		return fmt.Errorf("config file %s: larger than 1 MiB", path)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o := find(k)
		if o == nil {
			return fmt.Errorf("config file %s: unknown key %q", path, k)
		}
		var vals []string
		switch v := raw[k].(type) {
		case []any:
			if !o.list {
				return fmt.Errorf("config file %s: %q takes one value, not a list", path, k)
			}
			for _, e := range v {
				s, err := scalar(e)
				if err != nil {
					return fmt.Errorf("config file %s: %q: %w", path, k, err)
				}
				vals = append(vals, s)
			}
		case map[string]any:
			if k != "tag" {
				return fmt.Errorf("config file %s: %q takes a value, not an object", path, k)
			}
			tk := make([]string, 0, len(v))
			for tkey := range v {
				tk = append(tk, tkey)
			}
			sort.Strings(tk)
			for _, tkey := range tk {
				s, err := scalar(v[tkey])
				if err != nil {
					return fmt.Errorf("config file %s: tag %q: %w", path, tkey, err)
				}
				vals = append(vals, tkey+"="+s)
			}
		default:
			s, err := scalar(v)
			if err != nil {
				return fmt.Errorf("config file %s: %q: %w", path, k, err)
			}
			vals = []string{s}
		}
		if err := apply(r, o, vals, "config file "+path); err != nil {
			return err
		}
	}
	return nil
}

func scalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	default:
		return "", fmt.Errorf("unsupported value %v", v)
	}
}

func (b *Builder) usage(fs *flag.FlagSet) {
	w := b.Output
	if w == nil {
		return
	}
	fmt.Fprintln(w, "Usage: meshgw agent [flags]")
	WriteFlagHelp(w)
}

// WriteFlagHelp prints every option with its default and its environment
// variable, for -h.
func WriteFlagHelp(w io.Writer) {
	fmt.Fprintln(w, "Every flag is also MESHGW_<FLAG> (upper case, '-' → '_') and a key of the -config JSON file.")
	defs := defaultValues()
	for _, o := range Options() {
		def := ""
		if v := defs[o[0]]; v != "" {
			def = " (default " + v + ")"
		}
		fmt.Fprintf(w, "  -%-22s %s%s (%s)\n", o[0], o[2], def, o[1])
	}
}

// defaultValues are the defaults shown by -h, from Default() so they cannot
// drift; options whose default is empty or derived are left out (their
// usage says what happens).
func defaultValues() map[string]string {
	r := Default()
	return map[string]string{
		"bind":                 r.BindAddr,
		"rpc":                  r.RPCAddr,
		"raft":                 r.RaftAddr,
		"http":                 r.HTTPAddr,
		"cluster":              r.Cluster,
		"roles":                strings.Join(r.Roles, ","),
		"bootstrap-expect":     strconv.Itoa(r.BootstrapExpect),
		"raft-voters":          strconv.Itoa(r.RaftVoters),
		"autopilot-dead-after": r.AutopilotDeadAfter.String(),
		"log-level":            r.LogLevel,
		"log-format":           r.LogFormat,
		"gossip-profile":       r.GossipProfile,
		"max-concurrent-execs": strconv.Itoa(r.MaxConcurrentExecs),
		"retention-count":      strconv.Itoa(r.RetentionCount),
		"retention-bytes":      strconv.FormatInt(r.RetentionBytes, 10),
		"retention-age":        r.RetentionAge.String(),
		"max-body-bytes":       strconv.FormatInt(r.MaxBodyBytes, 10),
		"max-input-bytes":      strconv.Itoa(r.MaxInputBytes),
		"leave-timeout":        r.LeaveTimeout.String(),
		"dev":                  "false",
		"acl":                  "false",
		"leave-on-terminate":   "false",
		"cache-size":           strconv.FormatInt(r.CacheSize, 10),
		"central-log":          "true", // centrallog.go
		"log-spool-bytes":      strconv.FormatInt(r.LogSpoolBytes, 10),
		"log-retention-age":    r.LogRetentionAge.String(),
		"log-retention-count":  strconv.Itoa(r.LogRetentionCount),
		"log-retention-bytes":  strconv.FormatInt(r.LogRetentionBytes, 10),
		"throttle-lease":       r.ThrottleLease.String(),
	}
}
