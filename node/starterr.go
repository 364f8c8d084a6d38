package node

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// listenError says why a listener of the agent did not open, naming the
// flag that sets its address and what to do. A port in use is told in so
// many words, without the wrapped chain of the library that tried (serf's
// "Failed to create memberlist: could not set up network transport: ...").
func listenError(flag, addr, what string, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.EADDRINUSE) || strings.Contains(msg, "address already in use"):
		proto := ""
		switch {
		case strings.Contains(msg, "TCP listener") || strings.Contains(msg, "listen tcp"):
			proto = " (TCP)"
		case strings.Contains(msg, "UDP listener") || strings.Contains(msg, "listen udp"):
			proto = " (UDP)"
		}
		return fmt.Errorf("%s %s: the %s address is already in use%s by another process: "+
			"stop it or choose another %s", flag, addr, what, proto, flag)
	case errors.Is(err, syscall.EADDRNOTAVAIL) || strings.Contains(msg, "cannot assign requested address"):
		return fmt.Errorf("%s %s: no interface of this host has that IP: use one of its addresses, "+
			"or 0.0.0.0 for all", flag, addr)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied (ports below 1024 need privileges): "+
			"choose a port above 1023 or grant CAP_NET_BIND_SERVICE: %w", flag, addr, err)
	}
	return fmt.Errorf("%s %s: the %s listener did not start: %w", flag, addr, what, err)
}
