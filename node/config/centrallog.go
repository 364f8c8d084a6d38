package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// int64Opt parses an int64 option.
func int64Opt(p func(*Runtime) *int64) func(*Runtime, string) error {
	return func(r *Runtime, v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*p(r) = n
		return nil
	}
}

// validateCentralLog checks the central log's options.
func (r *Runtime) validateCentralLog() error {
	switch {
	case r.LogSpoolBytes < 1<<20:
		return fieldErr("log-spool-bytes", "%d is below 1048576", r.LogSpoolBytes)
	case r.LogRetentionAge != 0 && r.LogRetentionAge < time.Minute:
		return fieldErr("log-retention-age", "%s is below 1m (0: no age bound)", r.LogRetentionAge)
	case r.LogRetentionAge < 0:
		return fieldErr("log-retention-age", "%s is negative", r.LogRetentionAge)
	case r.LogRetentionCount < 1:
		return fieldErr("log-retention-count", "%d must be at least 1", r.LogRetentionCount)
	case r.LogRetentionBytes < 1<<20:
		return fieldErr("log-retention-bytes", "%d is below 1048576", r.LogRetentionBytes)
	}
	if r.Syslog != "" {
		u, err := url.Parse(r.Syslog)
		if err != nil || u.Scheme != "tcp" || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return fieldErr("syslog", "%q is not tcp://host:port", r.Syslog)
		}
		if !r.CentralLog {
			return fieldErr("syslog", "needs the central log (-central-log)")
		}
	}
	return nil
}
