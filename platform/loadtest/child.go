package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

// Child is a process the benchmark started and must not leave behind.
type Child struct {
	name string
	cmd  *exec.Cmd
	out  *tail
	done chan struct{}
	err  error // Wait's result, valid once done is closed
}

// Start starts cmd with its output captured (the last part is shown if it
// fails), detached from the terminal's Ctrl-C and bound to this process's
// life (see childAttrs). name identifies the process in errors.
func Start(name string, cmd *exec.Cmd) (*Child, error) {
	c := &Child{name: name, cmd: cmd, out: &tail{max: 64 << 10}, done: make(chan struct{})}
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

// PID returns the process id, for sampling its CPU.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Err returns how the process ended (Wait's result), or nil while it runs.
func (c *Child) Err() error {
	if !c.Exited() {
		return nil
	}
	return c.err
}

// Stop asks the process to shut down with SIGTERM and kills it if it has
// not exited within grace. It is safe to call more than once.
func (c *Child) Stop(grace time.Duration) error {
	if c.Exited() {
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

// Kill ends the process with SIGKILL, as a crash would, and waits for it
// to be gone.
func (c *Child) Kill() error {
	if c.Exited() {
		return fmt.Errorf("%s is not running", c.name)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", c.name, err)
	}
	select {
	case <-c.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s still running 30s after SIGKILL", c.name)
	}
}

// Logs returns the end of the process's output, for error messages.
func (c *Child) Logs() string { return c.out.String() }

// Memory returns the peak (VmHWM) and current (VmRSS) resident set size in
// bytes. VmHWM is the kernel's high-water mark of VmRSS, so unlike sampling
// VmRSS it cannot miss a short spike between two samples.
func (c *Child) Memory() (peak, cur int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.PID()))
	if err != nil {
		return 0, 0, fmt.Errorf("read memory of %s: %w", c.name, err)
	}
	if peak, err = parseStatusKB(bytes.NewReader(b), "VmHWM"); err != nil {
		return 0, 0, fmt.Errorf("read memory of %s: %w", c.name, err)
	}
	if cur, err = parseStatusKB(bytes.NewReader(b), "VmRSS"); err != nil {
		return 0, 0, fmt.Errorf("read memory of %s: %w", c.name, err)
	}
	return peak, cur, nil
}

// parseStatusKB returns the value of a "<field>: <n> kB" line of a
// /proc/<pid>/status file in bytes.
func parseStatusKB(r io.Reader, field string) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // e.g. ["41236", "kB"]
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected status line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status line %q: %w", sc.Text(), err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc status: %w", err)
	}
	return 0, fmt.Errorf("no %s line in /proc status", field)
}

// WaitHTTP polls url until it answers with status want, the process exits,
// or timeout passes. The errors carry the process's output, which usually
// says why it did not come up.
func (c *Child) WaitHTTP(ctx context.Context, url string, want int, timeout time.Duration) error {
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
		if c.Exited() {
			return fmt.Errorf("%s exited before it was ready (%v); output:\n%s", c.name, c.err, c.Logs())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %v (last: %s); output:\n%s", c.name, url, timeout, last, c.Logs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", c.name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for a child process to listen on. The port is drawn below the
// kernel's ephemeral range: a port from ":0" lies inside it, and any
// outgoing connection (to Redis, to RabbitMQ) may take it before the child
// binds it, which made suites fail with "address already in use" on a busy
// host. Another process could still take it; the child then fails to
// start and the run reports that.
func FreeAddr() (string, error) {
	lo := ephemeralLow()
	for range 200 {
		port := 10000 + rand.N(lo-10000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default, 32768, where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				return n
			}
		}
	}
	return 32768
}

// Build compiles pkg into the binary bin. A benchmark builds what it
// measures itself so that it always measures the code in the working tree,
// compiled the way it ships (no race detector, no coverage). flags are
// extra go build flags (a benchmark's profiling tag).
func Build(ctx context.Context, pkg, bin string, flags ...string) error {
	args := append([]string{"build", "-o", bin}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return nil
}

// tail keeps the last max bytes written to it: a child's whole output
// could be large, and only its end explains a failure.
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
