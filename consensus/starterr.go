package consensus

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// startError says, for an operator, why the Raft node host did not open:
// what happened and what to do, instead of dragonboat's own wording ("hostname
// changed", "not the owner of the data directory"), which names no file,
// address or remedy. dragonboat's sentinels live in an internal package, so
// they are matched by their text; the cause stays wrapped.
func (m *Manager) startError(err error) error {
	dir := m.raftDir()
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.EADDRINUSE) || strings.Contains(msg, "address already in use"):
		// The cause (dragonboat's "listen tcp ...: bind: ...") adds nothing.
		return fmt.Errorf("-raft %s: the Raft address is already in use (TCP) by another process: "+
			"stop it or choose another -raft", m.cfg.RaftBindAddr)
	case strings.Contains(msg, "hostname changed"):
		host, _ := os.Hostname()
		return fmt.Errorf("consensus: the Raft data in %s was written on a host with another name "+
			"(this one is %q) and is not opened under a new one: run the agent with the host name it had "+
			"(in Docker, give the container a fixed hostname) or start from an empty -data-dir: %w",
			dir, host, err)
	case strings.Contains(msg, "not the owner of the data directory"):
		return fmt.Errorf("consensus: the Raft data in %s belongs to another Raft address than %s: "+
			"start with the -raft/-advertise address it was created with, or from an empty -data-dir: %w",
			dir, m.cfg.RaftAdvertiseAddr, err)
	case strings.Contains(msg, "failed to lock data directory"):
		return fmt.Errorf("consensus: the Raft data in %s is locked by another process, most likely "+
			"another agent with the same -data-dir: stop it or give each agent its own -data-dir: %w", dir, err)
	case strings.Contains(msg, "deployment ID changed"), strings.Contains(msg, "logdb type changed"),
		strings.Contains(msg, "incompatible LogDB data format"), strings.Contains(msg, "broken change"):
		return fmt.Errorf("consensus: the Raft data in %s was written by an incompatible build or setup: "+
			"run the version that wrote it, or start from an empty -data-dir: %w", dir, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("consensus: the Raft data in %s cannot be opened (permission denied): "+
			"make -data-dir writable by the agent's user: %w", dir, err)
	}
	return fmt.Errorf("consensus: raft on %s: %w", m.cfg.RaftBindAddr, err)
}
