// Package proctest runs a service's real binary from a test: build it from
// the working tree, start it with its settings in the environment, wait
// until it is ready, and kill it with SIGKILL as a crash would. State that
// must survive the process lives in RabbitMQ and Redis, and these tests
// prove it does.
package proctest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

var (
	buildMu sync.Mutex
	built   = map[string]string{} // absolute package directory → binary
)

// Build compiles the main package in dir (relative to the test's working
// directory, e.g. "../../cmd/jobs") and returns the binary. A test binary
// builds each package once; the binary stays in a directory the first
// test that asked for it owns, so later tests reuse it only while that
// test runs and otherwise build again (cheap: go caches the compile).
func Build(t testing.TB, dir string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a service binary")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[abs]; ok {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(abs))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := loadtest.Build(ctx, abs, bin); err != nil {
		t.Fatal(err)
	}
	built[abs] = bin
	return bin
}

// Proc is one run of a binary. It is killed when the test ends, and its
// output is logged if the test failed.
type Proc struct {
	t     testing.TB
	child *loadtest.Child
}

// Start runs bin with env ("KEY=value") added to the test's environment.
func Start(t testing.TB, bin string, env ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	child, err := loadtest.Start(filepath.Base(bin), cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !child.Exited() {
			_ = child.Kill()
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(bin), child.Logs())
		}
	})
	return &Proc{t: t, child: child}
}

// WaitReady polls url until it answers 200, failing the test if the
// process exits first or timeout passes.
func (p *Proc) WaitReady(url string, timeout time.Duration) {
	p.t.Helper()
	if err := p.child.WaitHTTP(context.Background(), url, 200, timeout); err != nil {
		p.t.Fatal(err)
	}
}

// Kill ends the process with SIGKILL, giving it no chance to drain, and
// waits until it is gone.
func (p *Proc) Kill() {
	p.t.Helper()
	if err := p.child.Kill(); err != nil {
		p.t.Fatal(err)
	}
}
