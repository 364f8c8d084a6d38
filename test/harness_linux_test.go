package test

import "syscall"

// procAttr makes an agent die with the test binary (Linux: the parent-death
// signal), so a test that panics or hits -timeout leaves no agent behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
