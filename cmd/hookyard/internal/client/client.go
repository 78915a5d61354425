package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	cachev1 "github.com/hookyard/hookyard/gen/hookyard/cache/v1"
	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	ingressv1 "github.com/hookyard/hookyard/gen/hookyard/ingress/v1"
	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
)

// ErrNoKey is returned when a call needs an API key and none is set.
var ErrNoKey = errors.New("no API key: pass --api-key, set HOOKYARD_API_KEY or add api_key to a profile (hookyard config set-profile)")

// Clients dials each service on first use.
type Clients struct {
	s     Settings
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// New returns Clients for s.
func New(s Settings) *Clients { return &Clients{s: s, conns: map[string]*grpc.ClientConn{}} }

// Settings are the settings the clients use.
func (c *Clients) Settings() Settings { return c.s }

// Close closes every connection.
func (c *Clients) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
}

// key sends the API key with every call.
type key struct {
	value  string
	secure bool
}

func (k key) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + k.value}, nil
}

func (k key) RequireTransportSecurity() bool { return k.secure }

func (c *Clients) conn(addr string) (*grpc.ClientConn, error) {
	if c.s.APIKey == "" {
		return nil, ErrNoKey
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if c.s.TLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	// Reconnects are capped at a few seconds apart (gRPC's default grows
	// to two minutes), so that listen and tail resume soon after an outage.
	cp := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: 10 * time.Second}
	cp.Backoff.BaseDelay, cp.Backoff.MaxDelay = 250*time.Millisecond, 5*time.Second
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds), grpc.WithConnectParams(cp),
		grpc.WithPerRPCCredentials(key{value: c.s.APIKey, secure: c.s.TLS}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// Sources is the ingress SourceService.
func (c *Clients) Sources() (ingressv1.SourceServiceClient, error) {
	cc, err := c.conn(c.s.Ingress)
	if err != nil {
		return nil, err
	}
	return ingressv1.NewSourceServiceClient(cc), nil
}

// Events is the ingress EventService.
func (c *Clients) Events() (ingressv1.EventServiceClient, error) {
	cc, err := c.conn(c.s.Ingress)
	if err != nil {
		return nil, err
	}
	return ingressv1.NewEventServiceClient(cc), nil
}

// Endpoints is the dispatcher EndpointService.
func (c *Clients) Endpoints() (dispatcherv1.EndpointServiceClient, error) {
	cc, err := c.conn(c.s.Dispatcher)
	if err != nil {
		return nil, err
	}
	return dispatcherv1.NewEndpointServiceClient(cc), nil
}

// Messages is the dispatcher MessageService.
func (c *Clients) Messages() (dispatcherv1.MessageServiceClient, error) {
	cc, err := c.conn(c.s.Dispatcher)
	if err != nil {
		return nil, err
	}
	return dispatcherv1.NewMessageServiceClient(cc), nil
}

// Stream is the dispatcher EventStreamService.
func (c *Clients) Stream() (dispatcherv1.EventStreamServiceClient, error) {
	cc, err := c.conn(c.s.Dispatcher)
	if err != nil {
		return nil, err
	}
	return dispatcherv1.NewEventStreamServiceClient(cc), nil
}

// DeliveryQueues is the dispatcher QueueService.
func (c *Clients) DeliveryQueues() (dispatcherv1.QueueServiceClient, error) {
	cc, err := c.conn(c.s.Dispatcher)
	if err != nil {
		return nil, err
	}
	return dispatcherv1.NewQueueServiceClient(cc), nil
}

// Tasks is the jobs TaskService.
func (c *Clients) Tasks() (jobsv1.TaskServiceClient, error) {
	cc, err := c.conn(c.s.Jobs)
	if err != nil {
		return nil, err
	}
	return jobsv1.NewTaskServiceClient(cc), nil
}

// Canvas is the jobs CanvasService (chains and groups).
func (c *Clients) Canvas() (jobsv1.CanvasServiceClient, error) {
	cc, err := c.conn(c.s.Jobs)
	if err != nil {
		return nil, err
	}
	return jobsv1.NewCanvasServiceClient(cc), nil
}

// Schedules is the jobs ScheduleService.
func (c *Clients) Schedules() (jobsv1.ScheduleServiceClient, error) {
	cc, err := c.conn(c.s.Jobs)
	if err != nil {
		return nil, err
	}
	return jobsv1.NewScheduleServiceClient(cc), nil
}

// Queues is the jobs QueueService.
func (c *Clients) Queues() (jobsv1.QueueServiceClient, error) {
	cc, err := c.conn(c.s.Jobs)
	if err != nil {
		return nil, err
	}
	return jobsv1.NewQueueServiceClient(cc), nil
}

// Cache is the cache CacheService.
func (c *Clients) Cache() (cachev1.CacheServiceClient, error) {
	cc, err := c.conn(c.s.Cache)
	if err != nil {
		return nil, err
	}
	return cachev1.NewCacheServiceClient(cc), nil
}
