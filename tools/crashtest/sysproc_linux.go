package crashtest

import "syscall"

// sysProcAttr makes the kernel SIGKILL the node if the test process dies
// first (a go test timeout, a crash), so no orphan keeps the ports.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
