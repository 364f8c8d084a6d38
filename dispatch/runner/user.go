package runner

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"
)

// lookupCredential resolves name (a user name or a numeric uid) on this
// host into the uid, primary gid and supplementary groups a process runs
// with. Switching users needs the runner to be root (or CAP_SETUID and
// CAP_SETGID); without it the start fails with EPERM, reported as such.
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, numErr := strconv.ParseUint(name, 10, 32); numErr != nil {
			return nil, fmt.Errorf("no such user on this runner: %w", err)
		}
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("no such uid on this runner: %w", err)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	ids, err := u.GroupIds()
	if err != nil {
		// No group database entry: run with the primary group alone
		// rather than inherit the runner's supplementary groups.
		ids = nil
	}
	for _, g := range ids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			cred.Groups = append(cred.Groups, uint32(n))
		}
	}
	if cred.Groups == nil {
		cred.Groups = []uint32{} // drop the runner's groups
	}
	return cred, nil
}
