// Package suite runs the four Hookyard binaries as a test sees them from
// outside: built from the working tree, started as processes with their
// own RabbitMQ virtual host, Redis key prefixes and loopback ports, and
// reached only through their public HTTP and gRPC interfaces.
package suite

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hookyard/hookyard/platform/loadtest"
)

// Names of the four services, each built from services/<name>/cmd/<name>.
var Names = []string{"ingress", "dispatcher", "cache", "jobs"}

// ReadyTimeout is how long a service may take to answer /readyz. The
// test machines are slow and shared, so it is generous.
const ReadyTimeout = 90 * time.Second

// Options say how to run the suite.
type Options struct {
	// ID names the run (NewID); tenants named with it have their ingress
	// keys removed by Close. Empty picks a fresh one.
	ID string
	// Keys are the API keys, tenant → key.
	Keys map[string]string
	// AMQPURL is the broker the services use, virtual host included. When
	// empty a fresh virtual host is created on the broker of
	// HOOKYARD_AMQP_URL (or the local default) and deleted by Close.
	AMQPURL string
	// RedisURL defaults to HOOKYARD_REDIS_URL or the local default.
	RedisURL string
	// Env is added to every service's environment; ServiceEnv to one's.
	Env        map[string]string
	ServiceEnv map[string]map[string]string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Stack is a running suite.
type Stack struct {
	// ID is unique to this run; it prefixes every Redis key the services
	// write under a configurable prefix, and names the virtual host.
	ID       string
	AMQPURL  string
	RedisURL string
	Services map[string]*Service

	vhost   string // created here, deleted by Close; "" when given
	tenants []string
	logf    func(string, ...any)
}

// Service is one running binary.
type Service struct {
	Name     string
	HTTPAddr string
	GRPCAddr string

	bin string
	env []string

	mu    sync.Mutex
	child *loadtest.Child
}

// Start builds the binaries into dir (a temporary directory the caller
// owns), creates the virtual host unless one was given and starts the
// four services, returning once each answers /readyz.
func Start(ctx context.Context, dir string, o Options) (_ *Stack, err error) {
	if o.ID == "" {
		o.ID = NewID()
	}
	s := &Stack{ID: o.ID, AMQPURL: o.AMQPURL, RedisURL: o.RedisURL, Services: map[string]*Service{}, logf: o.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	for t := range o.Keys {
		s.tenants = append(s.tenants, t)
	}
	sort.Strings(s.tenants)
	if s.RedisURL == "" {
		s.RedisURL = envOr("HOOKYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
	}
	if err := Build(ctx, dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.AMQPURL == "" {
		s.vhost = s.ID
		if err := AddVHost(ctx, s.vhost); err != nil {
			s.vhost = ""
			return nil, err
		}
		s.AMQPURL = VHostURL(envOr("HOOKYARD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), s.vhost)
	}
	keys := make([]string, 0, len(o.Keys))
	for _, t := range s.tenants {
		keys = append(keys, t+":"+o.Keys[t])
	}
	common := map[string]string{
		"HOOKYARD_AMQP_URL":                  s.AMQPURL,
		"HOOKYARD_REDIS_URL":                 s.RedisURL,
		"HOOKYARD_API_KEYS":                  strings.Join(keys, ","),
		"HOOKYARD_ALLOW_CIDRS":               "127.0.0.0/8",
		"HOOKYARD_LOG_LEVEL":                 "warn",
		"HOOKYARD_SHUTDOWN_TIMEOUT":          "10s",
		"HOOKYARD_EVENT_ID_RETENTION":        "2h",
		"HOOKYARD_DISPATCHER_RETENTION":      "2h",
		"HOOKYARD_RETRY_SCHEDULE":            "1s,2s,4s,8s",
		"HOOKYARD_DISPATCHER_KEY_PREFIX":     s.ID + ":dispatcher",
		"HOOKYARD_DISPATCHER_SHUTDOWN_GRACE": "20s",
		"HOOKYARD_CACHE_KEY_PREFIX":          s.ID + ":cache",
		"HOOKYARD_JOBS_KEY_PREFIX":           s.ID + ":jobs",
		"HOOKYARD_JOBS_HEARTBEAT":            "2s",
		// The jobs service hands its completion callbacks to the
		// dispatcher (HOOKYARD_DISPATCHER_ADDR is set below).
		"HOOKYARD_SERVICE_KEY": "svc-" + RandHex(16),
	}
	for k, v := range o.Env {
		common[k] = v
	}
	addrs := map[string][2]string{}
	for _, name := range Names {
		var a [2]string
		if a[0], err = loadtest.FreeAddr(); err != nil {
			return nil, err
		}
		if a[1], err = loadtest.FreeAddr(); err != nil {
			return nil, err
		}
		addrs[name] = a
	}
	if _, set := o.ServiceEnv["jobs"]["HOOKYARD_DISPATCHER_ADDR"]; !set {
		if o.ServiceEnv == nil {
			o.ServiceEnv = map[string]map[string]string{}
		}
		jobsEnv := map[string]string{"HOOKYARD_DISPATCHER_ADDR": addrs["dispatcher"][1]}
		for k, v := range o.ServiceEnv["jobs"] {
			jobsEnv[k] = v
		}
		o.ServiceEnv["jobs"] = jobsEnv
	}
	for _, name := range Names {
		env := map[string]string{}
		for k, v := range common {
			env[k] = v
		}
		for k, v := range o.ServiceEnv[name] {
			env[k] = v
		}
		svc := &Service{Name: name, bin: filepath.Join(dir, name)}
		svc.HTTPAddr, svc.GRPCAddr = addrs[name][0], addrs[name][1]
		env["HOOKYARD_HTTP_ADDR"] = svc.HTTPAddr
		env["HOOKYARD_GRPC_ADDR"] = svc.GRPCAddr
		svc.env = environ(env)
		s.Services[name] = svc
	}
	// Start them together and wait for each: on two cores, one at a time
	// would spend most of the time waiting.
	errs := make(chan error, len(Names))
	for _, name := range Names {
		go func() { errs <- s.Services[name].Start(ctx) }()
	}
	for range Names {
		if e := <-errs; e != nil {
			err = errors.Join(err, e)
		}
	}
	if err != nil {
		return nil, err
	}
	s.logf("suite %s: ingress http://%s dispatcher http://%s cache http://%s jobs http://%s", s.ID,
		s.Ingress().HTTPAddr, s.Dispatcher().HTTPAddr, s.Cache().HTTPAddr, s.Jobs().HTTPAddr)
	return s, nil
}

// Ingress, Dispatcher, Cache and Jobs return one service each.
func (s *Stack) Ingress() *Service    { return s.Services["ingress"] }
func (s *Stack) Dispatcher() *Service { return s.Services["dispatcher"] }
func (s *Stack) Cache() *Service      { return s.Services["cache"] }
func (s *Stack) Jobs() *Service       { return s.Services["jobs"] }

// Close stops every service, deletes the virtual host it created and the
// Redis keys of this run. It is safe to call more than once.
func (s *Stack) Close() {
	var wg sync.WaitGroup
	for _, svc := range s.Services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := svc.Stop(30 * time.Second); err != nil {
				s.logf("%v", err)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.vhost != "" {
		if err := DeleteVHost(ctx, s.vhost); err != nil {
			s.logf("%v", err)
		}
		s.vhost = ""
	}
	if n, err := CleanRedis(ctx, s.RedisURL, s.ID); err != nil {
		s.logf("clean Redis: %v", err)
	} else {
		s.logf("suite %s: removed %d Redis keys", s.ID, n)
	}
}

// Logs returns the end of every service's output, for a failed test.
func (s *Stack) Logs() string {
	var b strings.Builder
	for _, name := range Names {
		if svc := s.Services[name]; svc != nil {
			fmt.Fprintf(&b, "----- %s -----\n%s\n", name, svc.Logs())
		}
	}
	return b.String()
}

// URL is the service's HTTP base URL followed by path.
func (v *Service) URL(path string) string { return "http://" + v.HTTPAddr + path }

// Start starts the binary and waits until /readyz answers 200.
func (v *Service) Start(ctx context.Context) error {
	v.mu.Lock()
	if v.child != nil && !v.child.Exited() {
		v.mu.Unlock()
		return fmt.Errorf("%s is already running", v.Name)
	}
	cmd := exec.Command(v.bin)
	cmd.Env = v.env
	child, err := loadtest.Start(v.Name, cmd)
	if err != nil {
		v.mu.Unlock()
		return err
	}
	v.child = child
	v.mu.Unlock()
	return child.WaitHTTP(ctx, v.URL("/readyz"), 200, ReadyTimeout)
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it.
func (v *Service) Kill() error {
	c := v.current()
	if c == nil {
		return fmt.Errorf("%s is not running", v.Name)
	}
	return c.Kill()
}

// Stop shuts the process down with SIGTERM (SIGKILL after grace).
func (v *Service) Stop(grace time.Duration) error {
	if c := v.current(); c != nil {
		return c.Stop(grace)
	}
	return nil
}

// Alive reports whether the process runs.
func (v *Service) Alive() bool {
	c := v.current()
	return c != nil && !c.Exited()
}

// PID is the process id, 0 when not running.
func (v *Service) PID() int {
	if c := v.current(); c != nil && !c.Exited() {
		return c.PID()
	}
	return 0
}

// Memory returns the process's peak and current resident set size.
func (v *Service) Memory() (peak, cur int64, err error) {
	c := v.current()
	if c == nil {
		return 0, 0, fmt.Errorf("%s is not running", v.Name)
	}
	return c.Memory()
}

// Logs returns the end of the process's output.
func (v *Service) Logs() string {
	if c := v.current(); c != nil {
		return c.Logs()
	}
	return ""
}

func (v *Service) current() *loadtest.Child {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.child
}

var (
	buildMu   sync.Mutex
	buildDirs = map[string]bool{}
)

// Build compiles the four binaries into dir with one `go build` from the
// repository root, the way they ship (no race detector). With
// HOOKYARD_E2E_BIN set, the binaries already in that directory are used
// instead (built by the caller from the same tree).
func Build(ctx context.Context, dir string) error {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDirs[dir] {
		return nil
	}
	if pre := os.Getenv("HOOKYARD_E2E_BIN"); pre != "" {
		for _, name := range Names {
			if err := os.Symlink(filepath.Join(pre, name), filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("HOOKYARD_E2E_BIN: %w", err)
			}
		}
		buildDirs[dir] = true
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, name := range Names {
		args = append(args, "./services/"+name+"/cmd/"+name)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	buildDirs[dir] = true
	return nil
}

// RepoRoot is the directory holding go.work, found from the working
// directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// VHostURL returns base (an AMQP URL) with its virtual host set to vhost.
func VHostURL(base, vhost string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + vhost
	u.RawPath = "/" + url.PathEscape(vhost)
	return u.String()
}

func environ(env map[string]string) []string {
	out := make([]string, 0, len(os.Environ())+len(env))
	for _, kv := range os.Environ() {
		// The parent's own Hookyard settings must not leak into a suite
		// that chose its own.
		if !strings.HasPrefix(kv, "HOOKYARD_") {
			out = append(out, kv)
		}
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewID returns a fresh run id: lower-case letters and digits, usable in
// tenant, source, vhost and key names.
func NewID() string { return "e2e" + randHex(5) }

// RandHex returns 2n random hex digits, for names unique to a run.
func RandHex(n int) string { return randHex(n) }
