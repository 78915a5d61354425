package bench

import "syscall"

// childAttrs puts a child in its own process group, so that Ctrl-C in a
// terminal reaches only the benchmark, which then stops its children in
// order, and makes the kernel SIGKILL the child if the benchmark dies.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
