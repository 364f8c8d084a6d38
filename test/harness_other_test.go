//go:build !linux

package test

import "syscall"

// procAttr: no parent-death signal outside Linux; t.Cleanup still kills
// every agent.
func procAttr() *syscall.SysProcAttr { return nil }
