package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/auth"
)

// startOpts is start with options of the test's choosing.
func startOpts(t *testing.T, edit func(*Options)) *Server {
	t.Helper()
	keys, err := auth.ParseKeys("acme:acme-key-1")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Keys: keys,
	}
	if edit != nil {
		edit(&o)
	}
	s := New(o)
	jobsv1.RegisterTaskServiceServer(s.GRPC, tasks{})
	s.RegisterGateway(GatewayHandler(jobsv1.RegisterTaskServiceHandlerClient, jobsv1.NewTaskServiceClient))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return s
}

// post sends body (a reader, so that tests can stall it) and returns the
// status, the Retry-After header and the response body.
func post(t *testing.T, url, key string, body io.Reader, size int64) (int, string, string) {
	t.Helper()
	code, retry, b, err := send(url, key, body, size)
	if err != nil {
		t.Fatal(err)
	}
	return code, retry, b
}

// send is post for goroutines, which may not call t.Fatal.
func send(url, key string, body io.Reader, size int64) (int, string, string, error) {
	req, _ := http.NewRequest(http.MethodPost, url, body)
	req.ContentLength = size
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b), nil
}

// jsonBody is a syntactically valid CreateTask body of about n bytes.
func jsonBody(n int) []byte {
	return []byte(`{"name":"` + strings.Repeat("a", n) + `"}`)
}

// A request without a key is refused before its body is read: the client
// gets 401 while it is still sending, so an unauthenticated caller cannot
// make the server buffer anything.
func TestRESTRefusesUnauthenticatedBeforeReadingBody(t *testing.T) {
	s := startOpts(t, nil)
	for _, size := range []int64{25 << 20, -1} { // declared and chunked
		pr, pw := io.Pipe()
		go func() {
			// Send the first bytes, then stall: only a server that answers
			// without reading the body completes this request.
			_, _ = pw.Write([]byte(`{"name":"`))
		}()
		result := make(chan int, 1)
		go func() {
			code, _, _, err := send("http://"+s.HTTPAddr()+"/v1/tasks", "", pr, size)
			if err != nil {
				t.Error(err)
			}
			result <- code
		}()
		select {
		case code := <-result:
			if code != http.StatusUnauthorized {
				t.Errorf("size %d without a key: got %d, want 401", size, code)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("size %d without a key: no answer while the body was still being sent", size)
		}
		pw.Close()
	}
}

// A body over the cap is 413, whether declared or streamed; one under it
// reaches the handler.
func TestRESTBodyCap(t *testing.T) {
	s := startOpts(t, func(o *Options) { o.MaxBodyBytes = 64 << 10 })
	url := "http://" + s.HTTPAddr() + "/v1/tasks"
	big := jsonBody(100 << 10)
	if code, _, body := post(t, url, "acme-key-1", bytes.NewReader(big), int64(len(big))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared %d bytes: got %d %s, want 413", len(big), code, body)
	} else {
		var st struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil || st.Message == "" {
			t.Errorf("413 body is not a status: %s", body)
		}
	}
	if code, _, body := post(t, url, "acme-key-1", io.MultiReader(bytes.NewReader(big)), -1); code != http.StatusRequestEntityTooLarge {
		t.Errorf("streamed %d bytes: got %d %s, want 413", len(big), code, body)
	}
	// Over the gRPC message limit too: still 413, never 429.
	huge := jsonBody(5 << 20)
	if code, _, body := post(t, url, "acme-key-1", bytes.NewReader(huge), int64(len(huge))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("declared %d bytes: got %d %s, want 413", len(huge), code, body)
	}
	// Under the cap the request reaches the (panicking) handler.
	small := jsonBody(1 << 10)
	if code, _, body := post(t, url, "acme-key-1", bytes.NewReader(small), int64(len(small))); code != http.StatusInternalServerError {
		t.Errorf("small body: got %d %s, want the handler's 500", code, body)
	}
}

// The default cap is 1 MiB.
func TestRESTBodyCapDefault(t *testing.T) {
	s := startOpts(t, nil)
	b := jsonBody(1<<20 + 1)
	if code, _, body := post(t, "http://"+s.HTTPAddr()+"/v1/tasks", "acme-key-1", bytes.NewReader(b), int64(len(b))); code != http.StatusRequestEntityTooLarge {
		t.Errorf("got %d %s, want 413", code, body)
	}
}

// Bodies being read share a memory budget: when it is spent, a further
// request is answered 503 with Retry-After instead of being buffered.
func TestRESTBodyMemoryBudget(t *testing.T) {
	const capBytes = 64 << 10
	s := startOpts(t, func(o *Options) {
		o.MaxBodyBytes = capBytes
		o.BodyMemoryBytes = 2 * capBytes
		o.BodyWait = 200 * time.Millisecond
	})
	url := "http://" + s.HTTPAddr() + "/v1/tasks"
	var writers []*io.PipeWriter
	for range 2 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		go func() { _, _ = pw.Write([]byte(`{"name":"`)) }()
		go func() { _, _, _, _ = send(url, "acme-key-1", pr, capBytes) }()
	}
	defer func() {
		for _, pw := range writers {
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}
	}()
	small := jsonBody(10)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, retry, body := post(t, url, "acme-key-1", bytes.NewReader(small), int64(len(small)))
		if code == http.StatusServiceUnavailable {
			if retry == "" {
				t.Errorf("503 without Retry-After: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget spent by two stalled bodies, a third got %d %s, want 503", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Once the stalled bodies end, the budget is back.
	for _, pw := range writers {
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}
	for {
		code, _, body := post(t, url, "acme-key-1", bytes.NewReader(small), int64(len(small)))
		if code == http.StatusInternalServerError { // reached the handler
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget not returned: got %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Bytes that are not UTF-8 in a path or query parameter are the client's
// error (400), not a marshalling failure inside the gateway (500).
func TestRESTInvalidUTF8Is400(t *testing.T) {
	s := startOpts(t, nil)
	base := "http://" + s.HTTPAddr()
	for _, path := range []string{"/v1/tasks?pageToken=%ff", "/v1/tasks/%ff", "/v1/tasks?pageSize=1&pageToken=%c3%28"} {
		code, body := get(t, base+path, "acme-key-1")
		if code != http.StatusBadRequest {
			t.Errorf("%s: got %d %s, want 400", path, code, body)
		}
	}
}

// A client that connects and sends nothing (or half a request's headers)
// is disconnected after the header timeout on HTTP and the handshake
// timeout on gRPC, instead of holding a connection for minutes.
func TestSilentClientsAreDisconnected(t *testing.T) {
	s := startOpts(t, func(o *Options) {
		o.ReadHeaderTimeout = 300 * time.Millisecond
		o.HandshakeTimeout = 300 * time.Millisecond
	})
	for name, c := range map[string]struct{ addr, send string }{
		"http headers":   {s.HTTPAddr(), "GET /healthz HTTP/1.1\r\nHost: x\r\n"},
		"grpc handshake": {s.GRPCAddr(), ""},
	} {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if c.send != "" {
			if _, err := conn.Write([]byte(c.send)); err != nil {
				t.Fatal(err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: still connected after 20s", name)
		}
		conn.Close()
	}
}
