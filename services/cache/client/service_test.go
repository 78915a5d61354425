package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/hookyard/hookyard/platform/auth"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/server"
	"github.com/hookyard/hookyard/services/cache/internal/cache"
	"github.com/hookyard/hookyard/services/cache/internal/testenv"
)

// cleanups run after every test and example of the package.
var cleanups []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.Exit(code)
}

// service is a cache service on the real Redis, under a key prefix of its
// own, in front of an origin answering "user <key>".
type service struct {
	GRPCAddr, APIKey, Channel, Origin, RedisURL string
}

func redisURL() string {
	if u := os.Getenv("HOOKYARD_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func startService() service {
	prefix := "hookyard:test:cache:" + testenv.ID()
	rdb, err := redisconn.Open(redisURL())
	if err != nil {
		panic(err)
	}
	cleanups = append(cleanups, func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/users/{key}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "user %s", r.PathValue("key")) })
	origin := httptest.NewServer(mux)
	cleanups = append(cleanups, origin.Close)
	c, err := cache.New(cache.Config{KeyPrefix: prefix}, cache.Deps{Redis: rdb, AllowCIDRs: "127.0.0.0/8"})
	if err != nil {
		panic(err)
	}
	keys, err := auth.ParseKeys("acme:acme-example-key")
	if err != nil {
		panic(err)
	}
	srv := server.New(server.Options{Name: "cache", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Keys: keys, Log: slog.New(slog.DiscardHandler)})
	c.Register(srv)
	if err := srv.Listen(); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Run(ctx); done <- struct{}{} }()
	go func() { _ = c.Near.Run(ctx); done <- struct{}{} }()
	cleanups = append(cleanups, func() { cancel(); <-done; <-done; _ = c.Close() })
	// The server answers once Run has started serving.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + srv.HTTPAddr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			panic("the cache service did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return service{GRPCAddr: srv.GRPCAddr(), APIKey: "acme-example-key", Channel: prefix + ":near", Origin: origin.URL, RedisURL: redisURL()}
}
