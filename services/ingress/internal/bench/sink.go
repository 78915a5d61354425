package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	if err := loopbackAddr(addr); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	if err := serve(ctx, addr, SinkHandler()); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}
