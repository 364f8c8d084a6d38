package config

import (
	"reflect"
	"sort"
	"strings"
	"unicode"
)

// reloadable are the options SIGHUP applies to a running agent.
var reloadable = map[string]bool{"log-level": true, "tag": true, "max-concurrent-execs": true}

// fieldOption names the option behind a Runtime field where the field's
// name does not spell it.
var fieldOption = map[string]string{
	"NodeName": "node", "BindAddr": "bind", "AdvertiseAddr": "advertise", "RPCAddr": "rpc",
	"RaftAddr": "raft", "HTTPAddr": "http", "ProxyAddr": "proxy", "Tags": "tag",
	"RaftVoters": "raft-voters", "CAFile": "ca-file", "HTTPCertFile": "http-cert-file",
	"HTTPKeyFile": "http-key-file", "RaftRTT": "raft-rtt", "RequireTLSCA": "require-tls-ca",
	"ACL": "acl", "DNSAddr": "dns",
	"ACLDownPolicy": "acl-down-policy",
}

// Reloadable compares the running configuration with a freshly built one
// and returns the options that changed, split into those a running agent
// applies (log-level, tag, max-concurrent-execs) and those that take a restart.
func Reloadable(cur, next Runtime) (applied, restart []string) {
	cv, nv := reflect.ValueOf(cur), reflect.ValueOf(next)
	t := cv.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		name := fieldOption[f.Name]
		if name == "" {
			name = kebab(f.Name)
		}
		if reloadable[name] {
			applied = append(applied, name)
		} else {
			restart = append(restart, name)
		}
	}
	sort.Strings(applied)
	sort.Strings(restart)
	return applied, restart
}

// kebab turns a Go field name into its option spelling (LogLevel ->
// log-level, MaxBodyBytes -> max-body-bytes).
func kebab(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
