package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the benchmark started and must not leave behind.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *tail
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// startChild starts cmd with its output captured (the last part is shown
// if it fails), detached from the terminal's Ctrl-C and bound to this
// process's life (see childAttrs).
func startChild(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, out: &tail{max: 64 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the process to shut down with SIGTERM and kills it if it has
// not exited within grace. It is safe to call more than once.
func (c *child) stop(grace time.Duration) error {
	if c.exited() {
		return nil
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", c.name, grace)
	}
}

// logs returns the end of the process's output, for error messages.
func (c *child) logs() string { return c.out.String() }

// peakRSS returns the process's peak resident set size (VmHWM, the
// high-water mark of VmRSS kept by the kernel), in bytes. Sampling VmRSS
// would miss short spikes between samples; VmHWM cannot.
func (c *child) peakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read peak RSS of %s: %w", c.name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // e.g. ["41236", "kB"]
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("read peak RSS of %s: unexpected VmHWM line %q", c.name, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read peak RSS of %s: %w", c.name, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read peak RSS of %s: %w", c.name, err)
	}
	return 0, fmt.Errorf("read peak RSS of %s: no VmHWM in /proc status", c.name)
}

// waitHTTP polls url until it answers with want, the process exits, or
// timeout passes.
func (c *child) waitHTTP(ctx context.Context, url string, want int, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", c.name, err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if c.exited() {
			return fmt.Errorf("%s exited before it was ready (%v); output:\n%s", c.name, c.err, c.logs())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %v (last: %s); output:\n%s", c.name, url, timeout, last, c.logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", c.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Another process could take it before the child binds it; the child
// then fails to start and the run reports that, which is acceptable for a
// benchmark.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildIngress compiles pkg into dir and returns the binary's path. The
// benchmark builds the binary itself so that it always measures the code in
// the working tree, compiled the way it ships (no race detector, no
// coverage).
func buildIngress(ctx context.Context, dir, pkg string) (string, error) {
	bin := dir + string(os.PathSeparator) + "ingress"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
