package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/config"
)

func service(worker func(context.Context) error) Service {
	return Service{
		Name:  "apptest",
		Ports: config.Ports{HTTP: "127.0.0.1:0", GRPC: "127.0.0.1:0"},
		Build: func(_ context.Context, rt *Runtime) error {
			rt.Go("w", worker)
			return nil
		},
	}
}

// A failing worker stops the service, and Run says which worker failed.
func TestRunStopsWhenAWorkerFails(t *testing.T) {
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), service(func(context.Context) error { return errors.New("boom") }), []string{"-log-level", "error"})
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "worker w: boom") {
			t.Fatalf("Run = %v, want the worker's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its worker failed")
	}
}

// Cancelling the context stops the workers and the server; Run returns nil.
func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, service(func(ctx context.Context) error {
			<-ctx.Done()
			close(stopped)
			return ctx.Err()
		}), []string{"-log-level", "error"})
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	select {
	case <-stopped:
	default:
		t.Fatal("the worker was not stopped")
	}
}
