//go:build !linux

package crashtest

import "syscall"

// sysProcAttr: only Linux can tie the child's life to ours; elsewhere the
// test's cleanup kills it.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
