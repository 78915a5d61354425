package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// SinkFlag is the hidden command-line flag that turns the benchmark binary
// into the bare HTTP sink. The sink runs as a separate process, like
// ingress, so that the ceiling it measures includes the same loopback,
// scheduling and cross-process costs and shares the two processes' CPU the
// same way.
const SinkFlag = "sink"

// SinkHandler is the least an HTTP webhook receiver can do: read the whole
// body and answer 202. Its throughput is the ceiling any receiver written
// with net/http can reach on this machine with this load generator.
func SinkHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
}

// Sink serves SinkHandler on addr until ctx ends. addr must be a loopback
// address: the sink is a measuring device, never a listener for others.
func Sink(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("sink address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("sink address %q: only loopback addresses are allowed", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	srv := &http.Server{Handler: SinkHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}
