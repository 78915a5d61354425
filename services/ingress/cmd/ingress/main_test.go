package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/hookyard/hookyard/platform/loadtest"
	"github.com/hookyard/hookyard/platform/rabbit/rabbittest"
)

// These tests run the real binary, as an operator would, against the real
// broker (through a proxy the test can cut) and real Redis.

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ingress-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "ingress")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := loadtest.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

type proc struct {
	t        *testing.T
	cmd      *exec.Cmd
	http     string
	grpc     string
	done     chan error
	logs     *bytes.Buffer
	logMu    *sync.Mutex
	exitCode int
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func start(t *testing.T, amqpURL string) *proc {
	t.Helper()
	p := &proc{t: t, http: freePort(t), grpc: freePort(t), done: make(chan error, 1), logs: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	p.cmd = exec.Command(binary)
	p.cmd.Env = append(os.Environ(),
		"HOOKYARD_AMQP_URL="+amqpURL,
		"HOOKYARD_HTTP_ADDR="+p.http,
		"HOOKYARD_GRPC_ADDR="+p.grpc,
		"HOOKYARD_API_KEYS=acme:acme-test-key",
	)
	w := lockedWriter{p.logMu, p.logs}
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.logMu.Lock()
			t.Logf("ingress logs:\n%s", p.logs.String())
			p.logMu.Unlock()
		}
	})
	p.waitReady(200, 20*time.Second)
	return p
}

func (p *proc) readyz() int {
	resp, err := http.Get("http://" + p.http + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (p *proc) waitReady(want int, timeout time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	for p.readyz() != want {
		if time.Since(start) > timeout {
			p.t.Fatalf("/readyz did not become %d within %v", want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func (p *proc) do(method, path, key string, body []byte, hdr map[string]string) (int, []byte) {
	req, _ := http.NewRequest(method, "http://"+p.http+path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

const secret = "whsec_binary_test_secret"

func stripeHeader(body []byte) map[string]string {
	ts := time.Now().Unix()
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.%s", ts, body)
	return map[string]string{"Stripe-Signature": fmt.Sprintf("t=%d,v1=%s", ts, hex.EncodeToString(m.Sum(nil))), "Content-Type": "application/json"}
}

// setup creates a source through the REST API and a queue bound to it.
func setup(t *testing.T, p *proc) (name string, ch *amqp.Channel, queue string) {
	t.Helper()
	name = fmt.Sprintf("bin-%d", time.Now().UnixNano())
	src, _ := json.Marshal(map[string]any{"name": name, "provider": "stripe", "secrets": []string{secret}})
	if code, b := p.do("POST", "/v1/sources", "", src, nil); code != http.StatusUnauthorized {
		t.Fatalf("create without key: %d %s", code, b)
	}
	if code, b := p.do("POST", "/v1/sources", "acme-test-key", src, nil); code != http.StatusOK {
		t.Fatalf("create source: %d %s", code, b)
	}
	t.Cleanup(func() { p.do("DELETE", "/v1/sources/"+name, "acme-test-key", nil, nil) })
	conn, err := amqp.Dial(rabbittest.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	queue = rabbittest.TempQueue(t, ch, "q")
	if err := ch.QueueBind(queue, name+".#", "hookyard.events", false, nil); err != nil {
		t.Fatal(err)
	}
	return name, ch, queue
}

func healthStatus(addr string) healthpb.HealthCheckResponse_ServingStatus {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.GetStatus()
}

// Losing the broker turns readiness off within seconds; its return turns it
// back on without a restart, and a webhook after that is confirmed.
func TestReadinessFollowsBroker(t *testing.T) {
	proxy := rabbittest.NewBrokerProxy(t)
	p := start(t, proxy.URL())
	name, ch, queue := setup(t, p)
	deadline := time.Now().Add(5 * time.Second)
	for healthStatus(p.grpc) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("gRPC health never SERVING")
		}
		time.Sleep(50 * time.Millisecond)
	}

	proxy.Cut()
	took := p.waitReady(http.StatusServiceUnavailable, 5*time.Second)
	t.Logf("/readyz turned 503 %v after the broker went away", took)
	body := []byte(`{"id":"evt_during_outage","type":"invoice.paid"}`)
	if code, b := p.do("POST", "/webhooks/"+name, "", body, stripeHeader(body)); code != http.StatusServiceUnavailable {
		t.Fatalf("webhook during outage: %d %s", code, b)
	}
	proxy.Restore()
	took = p.waitReady(http.StatusOK, 20*time.Second)
	t.Logf("/readyz back to 200 %v after the broker returned", took)
	if code, b := p.do("POST", "/webhooks/"+name, "", body, stripeHeader(body)); code != http.StatusAccepted {
		t.Fatalf("webhook after recovery: %d %s", code, b)
	}
	q, err := ch.QueueDeclarePassive(queue, false, true, false, false, nil)
	if err != nil || q.Messages != 1 {
		t.Fatalf("queue holds %d messages (%v), want 1", q.Messages, err)
	}
}

// SIGTERM under load: the process exits 0 and every event it acknowledged
// is on the bus.
func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	p := start(t, rabbittest.URL())
	name, ch, queue := setup(t, p)

	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("evt_%d_%d", w, i)
				body := []byte(fmt.Sprintf(`{"id":%q,"type":"load.test"}`, id))
				code, _ := p.do("POST", "/webhooks/"+name, "", body, stripeHeader(body))
				if code == http.StatusAccepted || code == http.StatusOK {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
				if code == 0 {
					return // the listener is closed
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d events acknowledged before SIGTERM; the load did not run", len(acked))
	}
	seen := map[string]bool{}
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var ev struct{ ID string }
		_ = json.Unmarshal(d.Body, &ev)
		seen[ev.ID] = true
	}
	var lost []string
	for id := range acked {
		if !seen[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged events are not on the bus, e.g. %s", len(lost), len(acked), strings.Join(lost[:min(5, len(lost))], ","))
	}
	t.Logf("%d events acknowledged, all on the bus; exit status 0", len(acked))
}
