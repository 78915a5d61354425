package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookyard/hookyard/platform/config"
	"github.com/hookyard/hookyard/platform/rabbit"
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

// Publishers get a connection of their own, dialled once on first use: a
// broker alarm blocks a connection that publishes, and consumers sharing
// it could not ack the messages whose acks would free the broker.
func TestPublishersHaveTheirOwnConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type conns struct{ consume, publish, again *rabbit.Conn }
	got := make(chan conns, 1)
	checked := make(chan error, 1)
	s := Service{
		Name:  "apptest",
		Ports: config.Ports{HTTP: "127.0.0.1:0", GRPC: "127.0.0.1:0"},
		Build: func(_ context.Context, rt *Runtime) error {
			got <- conns{rt.Rabbit, rt.Publish(), rt.Publish()}
			rt.Go("w", func(ctx context.Context) error {
				wctx, stop := context.WithTimeout(ctx, 20*time.Second)
				defer stop()
				for _, c := range []*rabbit.Conn{rt.Rabbit, rt.Publish()} {
					select {
					case <-c.Connected():
					case <-wctx.Done():
						checked <- errors.New("a connection did not come up")
						<-ctx.Done()
						return nil
					}
				}
				// A queue of the test's own, so that the shared broker
				// keeps nothing.
				ch, err := rt.Rabbit.Channel(wctx)
				if err != nil {
					checked <- err
					<-ctx.Done()
					return nil
				}
				q := fmt.Sprintf("apptest.publish.%d", time.Now().UnixNano())
				if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
					checked <- err
					<-ctx.Done()
					return nil
				}
				checked <- rabbit.NewPublisher(rt.Publish(), rabbit.PublisherConfig{}).Publish(wctx, "", q, amqp.Publishing{Body: []byte("x")})
				_, _ = ch.QueueDelete(q, false, false, false)
				_ = ch.Close()
				<-ctx.Done()
				return nil
			})
			return nil
		},
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, s, []string{"-log-level", "error"}) }()
	c := <-got
	if c.publish == nil || c.publish == c.consume {
		t.Fatal("publishers share the consumers' connection")
	}
	if c.again != c.publish {
		t.Fatal("Publish dialled a second publishing connection")
	}
	select {
	case err := <-checked:
		if err != nil {
			t.Fatalf("publish on the publishers' connection: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no publish within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
