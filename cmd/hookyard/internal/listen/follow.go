// Package listen follows a tenant's event stream from the dispatcher
// (EventStreamService.StreamEvents), resuming a dropped stream from its
// last cursor, and forwards each event to a local URL signed like a real
// delivery (listen) or prints events and attempts as they come (tail).
package listen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
)

// Follower keeps a stream open: after a drop it reconnects with the last
// cursor, so events sent meanwhile are not lost (within the server's
// resume window).
type Follower struct {
	Client dispatcherv1.EventStreamServiceClient
	// Request is sent on every (re)connect with the cursor filled in.
	Request *dispatcherv1.StreamEventsRequest
	// OnReady is called when a stream opens; resumed is false the first
	// time.
	OnReady func(ready *dispatcherv1.StreamReady, resumed bool)
	// OnItem handles an event or attempt; an error ends Run.
	OnItem func(ctx context.Context, r *dispatcherv1.StreamEventsResponse) error
	// Log receives notes about drops and reconnects.
	Log io.Writer
	// MinBackoff and MaxBackoff bound the pause between reconnects
	// (default 250ms and 10s).
	MinBackoff, MaxBackoff time.Duration
}

// permanent reports whether trying again cannot help.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented, codes.NotFound:
		return true
	}
	return false
}

// Run follows the stream until ctx ends (then it returns nil) or a call
// fails for good. If the first stream never opens, its error is returned:
// a wrong address or key shows at once rather than as endless retries.
func (f *Follower) Run(ctx context.Context) error {
	minB, maxB := f.MinBackoff, f.MaxBackoff
	if minB <= 0 {
		minB = 250 * time.Millisecond
	}
	if maxB <= 0 {
		maxB = 10 * time.Second
	}
	if f.Log == nil {
		f.Log = io.Discard
	}
	var cursor string
	opened := false
	backoff := minB
	for {
		req := f.Request
		if req == nil {
			req = &dispatcherv1.StreamEventsRequest{}
		}
		req.Cursor = cursor
		err := f.once(ctx, req, &cursor, &opened, &backoff, minB)
		if ctx.Err() != nil {
			return nil
		}
		var itemErr itemError
		if errors.As(err, &itemErr) {
			return itemErr.err
		}
		if !opened || permanent(err) {
			return err
		}
		fmt.Fprintf(f.Log, "Stream lost (%s); reconnecting in %s\n", status.Convert(err).Message(), backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxB)
	}
}

type itemError struct{ err error }

func (e itemError) Error() string { return e.err.Error() }

func (f *Follower) once(ctx context.Context, req *dispatcherv1.StreamEventsRequest, cursor *string, opened *bool, backoff *time.Duration, minB time.Duration) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := f.Client.StreamEvents(sctx, req)
	if err != nil {
		return err
	}
	for {
		r, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return status.Error(codes.Unavailable, "stream ended by the server")
			}
			return err
		}
		if r.GetCursor() != "" {
			*cursor = r.GetCursor()
		}
		if ready := r.GetReady(); ready != nil {
			if f.OnReady != nil {
				f.OnReady(ready, *opened)
			}
			*opened = true
			*backoff = minB
			continue
		}
		if f.OnItem != nil {
			if err := f.OnItem(ctx, r); err != nil {
				return itemError{err}
			}
		}
	}
}
