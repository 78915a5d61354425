package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/hookyard/hookyard/gen/hookyard/event/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/sign"
)

// broker is the benchmark's own AMQP connection: it publishes the events
// and inspects and removes the dispatcher's queues.
type broker struct {
	conn *rabbit.Conn
	pub  *rabbit.Publisher
}

func dialBroker(ctx context.Context, url string) (*broker, error) {
	conn := rabbit.DialConfig(ctx, url, rabbit.Config{
		Name: "hookyard-dispatcher-bench", Setup: rabbit.DeclareFunc(rabbit.DeclareTopology),
	})
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for conn.Check(wctx) != nil {
		if !sleepCtx(wctx, 50*time.Millisecond) {
			_ = conn.Close()
			return nil, fmt.Errorf("connect to RabbitMQ at %s: %w", url, wctx.Err())
		}
	}
	return &broker{conn: conn, pub: rabbit.NewPublisher(conn, rabbit.PublisherConfig{})}, nil
}

func (b *broker) close() {
	_ = b.pub.Close()
	_ = b.conn.Close()
}

// with runs fn on a fresh channel: a failed operation closes its channel.
func (b *broker) with(ctx context.Context, fn func(*amqp.Channel) error) error {
	ch, err := b.conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}

// depth returns the ready messages of queue by a passive declare, or -1
// if the queue does not exist.
func (b *broker) depth(ctx context.Context, name string) (int, error) {
	n := -1
	err := b.with(ctx, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			var aerr *amqp.Error
			if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
				return nil
			}
			return fmt.Errorf("inspect queue %s: %w", name, err)
		}
		n = q.Messages
		return nil
	})
	return n, err
}

// deleteQueues removes queues, ignoring those that do not exist.
func (b *broker) deleteQueues(ctx context.Context, names []string) error {
	var errs []error
	for _, name := range names {
		err := b.with(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(name, false, false, false)
			return err
		})
		var aerr *amqp.Error
		if err != nil && !(errors.As(err, &aerr) && aerr.Code == amqp.NotFound) {
			errs = append(errs, fmt.Errorf("delete queue %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// events publishes benchmark events as ingress does: binary-mode
// CloudEvents on hookyard.events, persistent, each confirmed.
type events struct {
	b      *broker
	source string
	tenant string
	body   []byte
	// send, if set, sends an event instead of publishing it (the
	// POST /v1/messages path).
	send func(ctx context.Context, id string) error
}

const eventType = "bench.event"

func (e events) publish(ctx context.Context, id string) error {
	if e.send != nil {
		return e.send(ctx, id)
	}
	msg, err := cloudevent.ToPublishing(&eventv1.Event{
		Id: id, Source: e.source, Type: eventType, Tenant: e.tenant, Time: timestamppb.Now(),
		DataContentType: "application/json", Data: e.body,
	})
	if err != nil {
		return err
	}
	return e.b.pub.Publish(ctx, rabbit.EventsExchange, cloudevent.RoutingKey(e.source, eventType), msg)
}

// burst publishes ids with workers publishers as fast as confirms allow,
// calling sent just before each publish.
func (e events) burst(ctx context.Context, ids []string, workers int, sent func(string, time.Time)) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(workers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				if sent != nil {
					sent(ids[i], time.Now())
				}
				if err := e.publish(ctx, ids[i]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("publish: %w", errs[0])
	}
	return ctx.Err()
}

// paced publishes ids at rate per second (open loop: a slow confirm does
// not delay the next publish), calling sent just before each publish, and
// returns how long each successful publish took: to the broker's confirm,
// or through POST /v1/messages to its 202 (which waits for that confirm).
func (e events) paced(ctx context.Context, ids []string, rate float64, sent func(string, time.Time)) (confirms []time.Duration, err error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	confirms = make([]time.Duration, 0, len(ids))
	slots := make(chan struct{}, 256) // bounds publishes waiting for confirms
	start := time.Now()
	for i, id := range ids {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if !sleepCtx(ctx, time.Until(due)) {
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			t := time.Now()
			sent(id, t)
			err := e.publish(ctx, id)
			took := time.Since(t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			confirms = append(confirms, took)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return confirms, fmt.Errorf("publish: %w", errs[0])
	}
	return confirms, ctx.Err()
}

// cleanRedis unlinks every key under prefix and returns how many.
func cleanRedis(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	removed := 0
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	batch := make([]string, 0, 500)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := rdb.Unlink(ctx, batch...).Result()
		removed += int(n)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return removed, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return removed, fmt.Errorf("scan %s:*: %w", prefix, err)
	}
	return removed, flush()
}

// KeyUsage is the memory Redis reports (MEMORY USAGE) for the keys of one
// kind under a prefix: the kind is the key's first segment after it
// ("msg", "att", "n", ...).
type KeyUsage struct {
	Kind  string
	Keys  int
	Bytes int64
}

// redisKeyUsage sums MEMORY USAGE over every key under prefix, by kind,
// largest first. Unlike used_memory it counts only this run's keys, so
// other users of a shared Redis do not show in it.
func redisKeyUsage(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]KeyUsage, error) {
	by := map[string]*KeyUsage{}
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	batch := make([]string, 0, 500)
	flush := func() error {
		pipe := rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("memory usage: %w", err)
		}
		for i, k := range batch {
			kind, _, _ := strings.Cut(strings.TrimPrefix(k, prefix+":"), ":")
			u := by[kind]
			if u == nil {
				u = &KeyUsage{Kind: kind}
				by[kind] = u
			}
			u.Keys++
			u.Bytes += cmds[i].Val()
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("scan %s:*: %w", prefix, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	out := make([]KeyUsage, 0, len(by))
	for _, u := range by {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out, nil
}

// redisUsedMemory returns used_memory from INFO memory.
func redisUsedMemory(ctx context.Context, rdb redis.UniversalClient) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func openRedis(url string) (redis.UniversalClient, error) { return redisconn.Open(url) }

// api calls the dispatcher's REST gateway as a tenant.
type api struct {
	base, key string
	client    *http.Client
}

type endpointJSON struct {
	ID          string   `json:"id,omitempty"`
	URL         string   `json:"url"`
	EventTypes  []string `json:"eventTypes"`
	MaxInFlight int      `json:"maxInFlight,omitempty"`
	RateLimit   int      `json:"rateLimit"`
	Secret      string   `json:"secret,omitempty"`
}

func (a api) createEndpoint(ctx context.Context, ep endpointJSON) (endpointJSON, error) {
	body, _ := json.Marshal(ep)
	var out endpointJSON
	code, msg, err := a.call(ctx, http.MethodPost, "/v1/endpoints", body)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("status %d: %s", code, msg)
	}
	if err == nil {
		err = json.Unmarshal(msg, &out)
	}
	if err == nil && (out.ID == "" || out.Secret == "") {
		err = fmt.Errorf("answer without id or secret: %s", msg)
	}
	if err != nil {
		return out, fmt.Errorf("create endpoint %s: %w", ep.URL, err)
	}
	return out, nil
}

// sendMessage sends a message through POST /v1/messages, the way most
// users send; data carries pad so the body is about as large as an event's.
func (a api) sendMessage(ctx context.Context, source, id, pad string) error {
	body, _ := json.Marshal(map[string]any{"id": id, "source": source, "type": eventType, "data": map[string]string{"pad": pad}})
	code, msg, err := a.call(ctx, http.MethodPost, "/v1/messages", body)
	if err == nil && code/100 != 2 { // the API answers 200, the POST floor 202
		err = fmt.Errorf("status %d: %s", code, msg)
	}
	if err != nil {
		return fmt.Errorf("send message %s: %w", id, err)
	}
	return nil
}

func (a api) deleteEndpoint(ctx context.Context, id string) error {
	code, msg, err := a.call(ctx, http.MethodDelete, "/v1/endpoints/"+url.PathEscape(id), nil)
	if err == nil && code != http.StatusOK && code != http.StatusNotFound {
		err = fmt.Errorf("status %d: %s", code, msg)
	}
	if err != nil {
		return fmt.Errorf("delete endpoint %s: %w", id, err)
	}
	return nil
}

func (a api) call(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, bytes.TrimSpace(msg), err
}

// newClient returns a keep-alive HTTP client for loopback with up to conns
// connections per host and no proxy.
func newClient(conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
	}}
}

// ceiling posts n signed webhooks of body to url with workers goroutines
// over keep-alive connections: the most a delivery loop could do against
// this sink on this machine, with nothing but signing and HTTP.
func ceiling(ctx context.Context, client *http.Client, url, secret string, body []byte, ids []string, workers int, sent func(string, time.Time)) error {
	key, err := sign.ParseSecret(secret)
	if err != nil {
		return err
	}
	keys := [][]byte{key}
	var (
		next, failed atomic.Int64
		wg           sync.WaitGroup
		once         sync.Once
		firstErr     error
	)
	for range min(workers, len(ids)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ids) || ctx.Err() != nil {
					return
				}
				now := time.Now()
				sent(ids[i], now)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
				if err == nil {
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("User-Agent", "Hookyard-Dispatcher/1")
					sign.Headers(req.Header, keys, ids[i], now, body)
					var resp *http.Response
					if resp, err = client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
				}
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d ceiling requests failed; first: %w", n, firstErr)
	}
	return ctx.Err()
}

// payload returns a JSON body of about size bytes.
func payload(size int) []byte {
	b := []byte(`{"type":"bench.event","data":{"pad":"`)
	for len(b) < size-4 {
		b = append(b, 'x')
	}
	return append(b, `"}}`...)
}

// sleepCtx sleeps for d and reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
