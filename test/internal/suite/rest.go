package suite

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Client is the HTTP client the tests use: no proxy from the environment,
// enough idle connections kept for a soak's hundreds of senders,
// a timeout long enough for a loaded machine.
var Client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 512}}

// Do sends a REST call with the API key (none when empty) and a JSON body
// (none when nil; a []byte is sent as is), and returns the status and
// body.
func (v *Service) Do(ctx context.Context, method, path, key string, body any) (int, []byte, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.URL(path), r)
	if err != nil {
		return 0, nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := Client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s %s: %w", v.Name, method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, out, err
}

// JSON sends a REST call that must answer want, and decodes the answer
// into out (unless nil).
func (v *Service) JSON(ctx context.Context, method, path, key string, body any, want int, out any) error {
	code, b, err := v.Do(ctx, method, path, key, body)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("%s %s %s: status %d, want %d: %s", v.Name, method, path, code, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s %s: decode %s: %w", v.Name, method, path, b, err)
		}
	}
	return nil
}

// Healthy reports whether the process runs and /healthz answers 200.
func (v *Service) Healthy(ctx context.Context) error {
	if !v.Alive() {
		return fmt.Errorf("%s is not running; output:\n%s", v.Name, v.Logs())
	}
	code, _, err := v.Do(ctx, http.MethodGet, "/healthz", "", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("%s /healthz: %d", v.Name, code)
	}
	return nil
}

// Eventually calls check until it returns nil or timeout passes, and
// returns its last error then.
func Eventually(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
