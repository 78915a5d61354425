package faults

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Redis is a redis-server of the run's own, with append-only persistence,
// so that it can be restarted without touching the Redis others use.
type Redis struct {
	port  int
	dir   string
	child *loadtest.Child
}

// StartRedis starts redis-server on a free loopback port, its data in dir.
func StartRedis(ctx context.Context, dir string) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, fmt.Errorf("redis-server not installed: %w", err)
	}
	addr, err := loadtest.FreeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	r := &Redis{dir: dir}
	r.port, _ = strconv.Atoi(port)
	return r, r.Start(ctx)
}

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// Start starts the server (again) and waits until it accepts connections.
func (r *Redis) Start(ctx context.Context) error {
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--dir", r.dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	c, err := loadtest.Start("redis-server", cmd)
	if err != nil {
		return err
	}
	r.child = c
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		if c.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d did not start: %v", r.port, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Restart stops the server with SIGTERM (it writes its append-only file)
// and starts it again on the same port with the same data.
func (r *Redis) Restart(ctx context.Context) error {
	if err := r.child.Stop(60 * time.Second); err != nil {
		return err
	}
	return r.Start(ctx)
}

// Stop ends the server.
func (r *Redis) Stop() {
	if r.child != nil && !r.child.Exited() {
		_ = syscall.Kill(r.child.PID(), syscall.SIGTERM)
		_ = r.child.Stop(30 * time.Second)
	}
}
