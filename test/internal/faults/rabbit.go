package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Rabbit is a RabbitMQ node of the run's own (its own node name, ports
// and data directory), so that it can be restarted without touching the
// broker others use.
type Rabbit struct {
	name       string
	port, dist int
	dir        string
	child      *loadtest.Child
}

// StartRabbit starts rabbitmq-server with its data in dir.
func StartRabbit(ctx context.Context, dir, name string) (*Rabbit, error) {
	if _, err := exec.LookPath("rabbitmq-server"); err != nil {
		return nil, fmt.Errorf("rabbitmq-server not installed: %w", err)
	}
	r := &Rabbit{name: name + "@localhost", dir: dir}
	// The distribution port must be free too; pick both apart.
	for _, p := range []*int{&r.port, &r.dist} {
		addr, err := loadtest.FreeAddr()
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		*p, _ = strconv.Atoi(port)
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	conf := fmt.Sprintf("loopback_users.guest = false\nlisteners.tcp.default = 127.0.0.1:%d\n", r.port)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		return nil, err
	}
	// Started as root, the server runs as the rabbitmq user, which must
	// own its directories.
	if u, err := user.Lookup("rabbitmq"); err == nil && os.Geteuid() == 0 {
		// ... and reach them through the run's private temporary directory.
		if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		_ = filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
	}
	return r, r.Start(ctx)
}

// URL is the node's AMQP URL (default vhost).
func (r *Rabbit) URL() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", r.port) }

// Addr is the node's AMQP listener.
func (r *Rabbit) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// Start starts the node (again) and waits until it accepts connections.
func (r *Rabbit) Start(ctx context.Context) error {
	cmd := exec.Command("rabbitmq-server")
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(),
		"RABBITMQ_NODENAME="+r.name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(r.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(r.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_FEATURE_FLAGS_FILE="+filepath.Join(r.dir, "feature_flags"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(r.dir, "pid"),
	)
	c, err := loadtest.Start("rabbitmq-server", cmd)
	if err != nil {
		return err
	}
	r.child = c
	// A node takes a minute or more to boot on a loaded machine.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("rabbitmq-server %s did not start: %v; output:\n%s", r.name, err, c.Logs())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Restart stops the node cleanly and starts it again with the same data.
func (r *Rabbit) Restart(ctx context.Context) error {
	if err := r.stop(ctx); err != nil {
		return err
	}
	return r.Start(ctx)
}

// Stop ends the node.
func (r *Rabbit) Stop() { _ = r.stop(context.Background()) }

// stop asks the node to stop with rabbitmqctl, as an operator would; the
// server runs under a wrapper (su), so a signal to the child alone may
// not reach it. What is left after two minutes is killed with its
// process group.
func (r *Rabbit) stop(ctx context.Context) error {
	if r.child == nil || r.child.Exited() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_ = exec.CommandContext(sctx, "rabbitmqctl", "-q", "-n", r.name, "stop").Run()
	deadline := time.Now().Add(time.Minute)
	for !r.child.Exited() {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-r.child.PID(), syscall.SIGKILL)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return r.child.Stop(30 * time.Second)
}
