package api_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// restClientEnv makes TestRESTClientProcess send the benchmark's requests.
const restClientEnv = "HOOKYARD_TEST_REST_CLIENT"

// TestRESTClientProcess is the benchmark's client when started by
// BenchmarkSendMessageREST (and skipped otherwise): it sends
// HOOKYARD_TEST_REST_N POST /v1/messages to the URL in
// HOOKYARD_TEST_REST_CLIENT, 8 at a time, in a process of its own so that
// its CPU is not counted as the dispatcher's.
func TestRESTClientProcess(t *testing.T) {
	url := os.Getenv(restClientEnv)
	if url == "" {
		t.Skip("run by the REST benchmark")
	}
	n, _ := strconv.Atoi(os.Getenv("HOOKYARD_TEST_REST_N"))
	key, source := os.Getenv("HOOKYARD_TEST_REST_KEY"), os.Getenv("HOOKYARD_TEST_REST_SOURCE")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				// A new id each time: every request is published, none
				// answered from the dedupe.
				body := fmt.Sprintf(`{"id":"m-%d-%d","source":%q,"type":"order.created","data":{"order":%d,"currency":"eur"}}`, time.Now().UnixNano(), i, source, i)
				req, _ := http.NewRequest(http.MethodPost, url+"/v1/messages", bytes.NewBufferString(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Store(fmt.Sprintf("%d %s", resp.StatusCode, b))
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
}

// BenchmarkSendMessageREST: POST /v1/messages over real HTTP against the
// dispatcher's REST port (platform server, gateway, interceptors, real
// Redis dedupe and broker publish with confirm). No consumer runs, so
// nothing is delivered: the figure is the API request alone. It reports
// the CPU of this process per request; the client runs in another.
func BenchmarkSendMessageREST(b *testing.B) {
	e := startTB(b)
	run := func(n int) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRESTClientProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), restClientEnv+"="+e.base, "HOOKYARD_TEST_REST_N="+strconv.Itoa(n),
			"HOOKYARD_TEST_REST_KEY="+e.acme.key, "HOOKYARD_TEST_REST_SOURCE="+e.id, "GOMAXPROCS=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("client: %v\n%s", err, out)
		}
	}
	run(200) // warm: connections, pools
	cpu0 := cpuTime()
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/req")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// cpuTime is the CPU (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
