package console

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestServeAndHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := HealthCheck(context.Background(), addr); err == nil {
		t.Fatal("healthcheck passed with nothing listening")
	}
	up := "http://127.0.0.1:1"
	c := Config{HTTPAddr: addr, LogLevel: "error", ShutdownTimeout: 5 * time.Second,
		Upstreams: map[string]*string{"dispatcher": &up}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, c) }()
	deadline := time.Now().Add(30 * time.Second)
	for HealthCheck(context.Background(), addr) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the console never answered /healthz")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}
