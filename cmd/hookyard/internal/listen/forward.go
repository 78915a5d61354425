package listen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/sign"
)

// Forwarder posts events to a local URL, signed with the Standard
// Webhooks scheme exactly as the dispatcher signs a delivery, with a
// secret of the listen session.
type Forwarder struct {
	URL    string
	Secret []byte
	// Headers are added to every request.
	Headers map[string]string
	HTTP    *http.Client
}

// Result is the outcome of one forward.
type Result struct {
	Status  int
	Latency time.Duration
	Err     error
}

// NewSecret returns a fresh whsec_ secret and its key.
func NewSecret() (string, []byte, error) {
	s, err := sign.NewSecret()
	if err != nil {
		return "", nil, err
	}
	key, err := sign.ParseSecret(s)
	return s, key, err
}

// Forward sends one event.
func (f *Forwarder) Forward(ctx context.Context, ev *dispatcherv1.StreamedEvent) Result {
	body := ev.GetEvent().GetData()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.URL, bytes.NewReader(body))
	if err != nil {
		return Result{Err: err}
	}
	for k, v := range f.Headers {
		req.Header.Set(k, v)
	}
	ct := ev.GetEvent().GetDataContentType()
	if ct == "" {
		ct = "application/json"
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("User-Agent", "Hookyard-CLI/1")
	start := time.Now()
	sign.Headers(req.Header, [][]byte{f.Secret}, ev.GetMessageId(), start, body)
	client := f.HTTP
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return Result{Err: err, Latency: time.Since(start)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return Result{Status: resp.StatusCode, Latency: time.Since(start)}
}

// String is the status part of a listen line.
func (r Result) String() string {
	if r.Err != nil {
		return fmt.Sprintf("failed: %v", r.Err)
	}
	return fmt.Sprintf("[%d] %s (%s)", r.Status, http.StatusText(r.Status), r.Latency.Round(time.Millisecond))
}
