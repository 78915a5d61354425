// Package config reads settings from flags and HOOKYARD_* environment
// variables. Every setting has both; a flag given on the command line wins
// over the environment, which wins over the default, so a deployment can set
// everything by environment and an operator can still override one value.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Loader registers flags whose defaults come from the environment. Errors in
// environment values are collected and reported by Parse, so a bad variable
// is never silently replaced by the default.
type Loader struct {
	FS   *flag.FlagSet
	errs []error
}

// NewLoader returns a Loader for a program called name.
func NewLoader(name string) *Loader {
	return &Loader{FS: flag.NewFlagSet(name, flag.ContinueOnError)}
}

func (l *Loader) env(name string) (string, bool) {
	v, ok := os.LookupEnv(name)
	return v, ok && v != ""
}

func usage(u, env string) string { return fmt.Sprintf("%s (env %s)", u, env) }

// String registers a string setting.
func (l *Loader) String(p *string, flagName, env, def, help string) {
	if v, ok := l.env(env); ok {
		def = v
	}
	l.FS.StringVar(p, flagName, def, usage(help, env))
}

// Duration registers a duration setting ("5s", "2h").
func (l *Loader) Duration(p *time.Duration, flagName, env string, def time.Duration, help string) {
	if v, ok := l.env(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = d
		}
	}
	l.FS.DurationVar(p, flagName, def, usage(help, env))
}

// Int registers an integer setting.
func (l *Loader) Int(p *int, flagName, env string, def int, help string) {
	if v, ok := l.env(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: not an integer: %q", env, v))
		} else {
			def = n
		}
	}
	l.FS.IntVar(p, flagName, def, usage(help, env))
}

// Bool registers a boolean setting.
func (l *Loader) Bool(p *bool, flagName, env string, def bool, help string) {
	if v, ok := l.env(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: not a boolean: %q", env, v))
		} else {
			def = b
		}
	}
	l.FS.BoolVar(p, flagName, def, usage(help, env))
}

// Bytes registers a size setting: a positive number of bytes, optionally
// with a suffix KiB, MiB or GiB ("1MiB", "1048576").
func (l *Loader) Bytes(p *int64, flagName, env string, def int64, help string) {
	if v, ok := l.env(env); ok {
		n, err := parseBytes(v)
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("%s: %w", env, err))
		} else {
			def = n
		}
	}
	*p = def
	l.FS.Func(flagName, usage(fmt.Sprintf("%s (default %s)", help, formatBytes(def)), env), func(s string) error {
		n, err := parseBytes(s)
		if err == nil {
			*p = n
		}
		return err
	})
}

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("not a positive size (bytes, or with KiB, MiB, GiB): %q", s)
	}
	return n * mult, nil
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// Parse parses args and reports any invalid environment value.
func (l *Loader) Parse(args []string) error {
	if err := l.FS.Parse(args); err != nil {
		return err
	}
	if l.FS.NArg() > 0 {
		l.errs = append(l.errs, fmt.Errorf("unexpected arguments: %v", l.FS.Args()))
	}
	return errors.Join(l.errs...)
}

// Common holds the settings every Hookyard service shares. Names and
// defaults are part of the public contract (DESIGN.md).
type Common struct {
	AMQPURL  string
	RedisURL string
	// RedisWaitReplicas ("auto" or a count) and RedisWaitTimeout say what
	// an acknowledgement resting on a Redis write waits for
	// (redisconn.Replicated).
	RedisWaitReplicas string
	RedisWaitTimeout  time.Duration
	HTTPAddr          string
	GRPCAddr          string
	APIKeys           string
	AllowCIDRs        string
	LogLevel          string
	ShutdownTimeout   time.Duration
	// MaxBodyBytes caps REST request bodies; BodyMemoryBytes bounds what
	// all REST bodies in flight may hold together.
	MaxBodyBytes    int64
	BodyMemoryBytes int64
}

// Ports are a service's default listen addresses.
type Ports struct {
	HTTP string
	GRPC string
}

// Register adds the shared settings to l with the service's default ports.
func (c *Common) Register(l *Loader, ports Ports) {
	l.String(&c.AMQPURL, "amqp-url", "HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL; the nodes of a cluster as a comma-separated list, tried in order")
	l.String(&c.RedisURL, "redis-url", "HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (redis+sentinel://sentinel:port/db?master_name=m&addr=sentinel2:port for Sentinel, redis+cluster:// for Cluster)")
	l.String(&c.RedisWaitReplicas, "redis-wait-replicas", "HOOKYARD_REDIS_WAIT_REPLICAS", "auto", "replicas that must have a Redis write before what rests on it is acknowledged: auto (one if the primary reports one online, else none), 0 (never wait) or a count")
	l.Duration(&c.RedisWaitTimeout, "redis-wait-timeout", "HOOKYARD_REDIS_WAIT_TIMEOUT", time.Second, "how long an acknowledgement waits for the replicas before it is refused (must stay below the Redis read timeout)")
	l.String(&c.HTTPAddr, "http-addr", "HOOKYARD_HTTP_ADDR", ports.HTTP, "REST gateway, /healthz, /readyz and /metrics listen address")
	l.String(&c.GRPCAddr, "grpc-addr", "HOOKYARD_GRPC_ADDR", ports.GRPC, "gRPC listen address")
	l.String(&c.APIKeys, "api-keys", "HOOKYARD_API_KEYS", "", "API keys as tenant:key[,tenant:key...]; none refuses every management call")
	l.String(&c.AllowCIDRs, "allow-cidrs", "HOOKYARD_ALLOW_CIDRS", "", "CIDRs outbound HTTP may reach although private (dev and tests)")
	l.String(&c.LogLevel, "log-level", "HOOKYARD_LOG_LEVEL", "info", "debug, info, warn or error")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", "HOOKYARD_SHUTDOWN_TIMEOUT", 25*time.Second, "how long graceful shutdown may take")
	l.Bytes(&c.MaxBodyBytes, "max-body-bytes", "HOOKYARD_MAX_BODY_BYTES", 1<<20, "largest REST request body; a larger one is answered 413")
	l.Bytes(&c.BodyMemoryBytes, "body-memory-bytes", "HOOKYARD_BODY_MEMORY_BYTES", 32<<20, "memory all REST request bodies in flight may hold together; when spent, requests are answered 503 with Retry-After")
}
