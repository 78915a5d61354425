//go:build !linux

package loadtest

import "syscall"

// childAttrs has no portable equivalent of the Linux settings; elsewhere the
// benchmark relies on its own clean-up alone.
func childAttrs() *syscall.SysProcAttr { return nil }
