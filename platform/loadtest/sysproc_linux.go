package loadtest

import "syscall"

// childAttrs puts a child in its own process group, so that Ctrl-C in a
// terminal reaches only the benchmark, which then shuts its children down
// in order. It also makes the kernel SIGKILL the child when the benchmark
// dies, so that even a killed benchmark leaves no process holding ports
// and broker connections.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
