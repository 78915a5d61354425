// Package trigger turns events on hookyard.events into tasks: the service's
// trigger queue is bound with every trigger's pattern, and each event of a
// tenant enqueues the task of each of that tenant's matching triggers, with
// arguments taken from the event. The task id is "<trigger>-<event id>", so
// a redelivered or duplicated event enqueues one task.
package trigger

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/platform/cloudevent"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/redisconn"
	"github.com/hookyard/hookyard/platform/topic"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// ErrNotFound means no such trigger for the tenant.
var ErrNotFound = errors.New("trigger not found")

// Store keeps triggers next to the tasks.
//
//	{p}:tr:<tenant>:<id>  string: the trigger (protojson)
//	{p}:tri:<tenant>      set: the tenant's trigger ids
//	{p}:trp               hash: pattern → triggers using it (for unbinding)
type Store struct {
	rdb   redis.UniversalClient
	tasks *store.Store
}

// NewStore returns a Store under the task store's prefix.
func NewStore(tasks *store.Store) *Store { return &Store{rdb: tasks.Redis(), tasks: tasks} }

func (s *Store) key(tenant, id string) string { return s.tasks.Key("tr", tenant, id) }
func (s *Store) index(tenant string) string   { return s.tasks.Key("tri", tenant) }
func (s *Store) patterns() string             { return s.tasks.Key("trp") }

// Create stores t (validated) and returns it with its id.
func (s *Store) Create(ctx context.Context, tenant string, t *jobsv1.Trigger) (*jobsv1.Trigger, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	t = proto.Clone(t).(*jobsv1.Trigger)
	t.Id, t.CreateTime = "tr"+hex.EncodeToString(b[:]), timestamppb.Now()
	raw, err := protojson.Marshal(t)
	if err != nil {
		return nil, err
	}
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, s.key(tenant, t.Id), raw, 0)
	pipe.SAdd(ctx, s.index(tenant), t.Id)
	pipe.HIncrBy(ctx, s.patterns(), t.EventType, 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("create trigger: %w", err)
	}
	return t, nil
}

// Get reads a trigger.
func (s *Store) Get(ctx context.Context, tenant, id string) (*jobsv1.Trigger, error) {
	raw, err := s.rdb.Get(ctx, s.key(tenant, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get trigger: %w", err)
	}
	t := &jobsv1.Trigger{}
	if err := protojson.Unmarshal(raw, t); err != nil {
		return nil, fmt.Errorf("trigger %s: corrupt: %w", id, err)
	}
	return t, nil
}

// List returns the tenant's triggers.
func (s *Store) List(ctx context.Context, tenant string) ([]*jobsv1.Trigger, error) {
	ids, err := s.rdb.SMembers(ctx, s.index(tenant)).Result()
	if err != nil {
		return nil, fmt.Errorf("list triggers: %w", err)
	}
	var out []*jobsv1.Trigger
	for _, id := range ids {
		t, err := s.Get(ctx, tenant, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// deleteScript removes a trigger and lowers its pattern's count, dropping
// the count at zero. KEYS: trigger, index, patterns. ARGV: id, pattern.
// Returns the count left, or -1 if the trigger was already gone.
var deleteScript = redis.NewScript(`
if redis.call('DEL', KEYS[1]) == 0 then return -1 end
redis.call('SREM', KEYS[2], ARGV[1])
local n = redis.call('HINCRBY', KEYS[3], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]); n = 0 end
return n
`)

// Delete removes a trigger and reports whether its pattern is now unused.
// The caller holds the pattern's lock (Lock), so no create can slip in
// between this and the unbind.
func (s *Store) Delete(ctx context.Context, tenant string, t *jobsv1.Trigger) (unused bool, err error) {
	n, err := deleteScript.Run(ctx, s.rdb, []string{s.key(tenant, t.Id), s.index(tenant), s.patterns()}, t.Id, t.EventType).Int()
	if err != nil {
		return false, fmt.Errorf("delete trigger: %w", err)
	}
	if n < 0 {
		return false, ErrNotFound
	}
	return n == 0, nil
}

// lockTTL bounds how long a crashed replica's pattern lock blocks others.
const lockTTL = 30 * time.Second

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Lock serialises the changes of one pattern's count together with the
// broker's (un)binding, across replicas and tenants: without it, a delete
// that found its pattern unused could unbind it after another tenant's
// create had counted and bound it. It returns the unlock function.
func (s *Store) Lock(ctx context.Context, pattern string) (func(), error) {
	key := s.tasks.Key("trlock", pattern)
	var b [8]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	for {
		ok, err := s.rdb.SetNX(ctx, key, token, lockTTL).Result()
		if err != nil {
			return nil, fmt.Errorf("lock pattern %s: %w", pattern, err)
		}
		if ok {
			return func() { unlockScript.Run(context.WithoutCancel(ctx), s.rdb, []string{key}, token) }, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

var patternRe = regexp.MustCompile(`^([A-Za-z0-9_-]+|\*|#)(\.([A-Za-z0-9_-]+|\*|#))*$`)

// Pointer resolves an RFC 6901 JSON Pointer in doc.
func Pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch v := doc.(type) {
		case map[string]any:
			var ok bool
			if doc, ok = v[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) || (len(tok) > 1 && tok[0] == '0') {
				return nil, false
			}
			doc = v[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// Validate checks a trigger given by a client (its task separately).
func Validate(t *jobsv1.Trigger) error {
	if t == nil {
		return errors.New("trigger: required")
	}
	if len(t.GetEventType()) > 255 || !patternRe.MatchString(t.GetEventType()) {
		return fmt.Errorf("eventType: %q is not an AMQP topic pattern (words of letters, digits, '-', '_', or '*' or '#', separated by '.')", t.GetEventType())
	}
	task := t.GetTask()
	if task == nil {
		return errors.New("task: required")
	}
	if task.GetId() != "" || task.GetEta() != nil || task.GetCountdown() != nil || task.GetExpireTime() != nil {
		return errors.New("task: id, eta, countdown and expireTime must be unset")
	}
	if len(t.GetArgsFrom()) > 0 && task.GetArgs() != nil && task.GetArgs().GetStructValue() == nil {
		return errors.New("task.args: must be an object (or unset) with argsFrom")
	}
	if len(t.GetArgsFrom()) > 64 {
		return errors.New("argsFrom: at most 64")
	}
	for name, ptr := range t.GetArgsFrom() {
		if name == "" || (ptr != "" && !strings.HasPrefix(ptr, "/")) {
			return fmt.Errorf("argsFrom: %q: %q is not a JSON Pointer (\"/a/b\")", name, ptr)
		}
	}
	return nil
}

// Task builds the task a trigger enqueues for an event.
func Task(t *jobsv1.Trigger, ev *eventv1Event) (*jobsv1.Task, error) {
	task := proto.Clone(t.GetTask()).(*jobsv1.Task)
	task.Id = TaskID(t.GetId(), ev.ID)
	var data any
	jsonErr := json.Unmarshal(ev.Data, &data)
	if len(t.GetArgsFrom()) == 0 {
		if task.GetArgs() == nil {
			if jsonErr != nil {
				data = string(ev.Data)
			}
			v, err := structpb.NewValue(data)
			if err != nil {
				return nil, err
			}
			task.Args = v
		}
		return task, nil
	}
	if jsonErr != nil {
		return nil, fmt.Errorf("event %s: data is not JSON: %v", ev.ID, jsonErr)
	}
	args := map[string]any{}
	if s := task.GetArgs().GetStructValue(); s != nil {
		args = s.AsMap()
	}
	for name, ptr := range t.GetArgsFrom() {
		v, ok := Pointer(data, ptr)
		if !ok {
			return nil, fmt.Errorf("event %s: %s not found in the data", ev.ID, ptr)
		}
		args[name] = v
	}
	v, err := structpb.NewValue(args)
	if err != nil {
		return nil, err
	}
	task.Args = v
	return task, nil
}

var idRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,90}$`)

// TaskID is the id of a trigger's task for an event.
func TaskID(trigger, eventID string) string {
	if !idRe.MatchString(eventID) {
		sum := sha256.Sum256([]byte(eventID))
		eventID = hex.EncodeToString(sum[:16])
	}
	return trigger + "-" + eventID
}

// eventv1Event is what a trigger reads of an event.
type eventv1Event struct {
	ID     string
	Tenant string
	Data   []byte
}

// Enqueuer enqueues a task for a tenant.
type Enqueuer func(ctx context.Context, tenant string, t *jobsv1.Task) (*jobsv1.Task, error)

// Consumer consumes the trigger queue.
type Consumer struct {
	Store    *Store
	Conn     *rabbit.Conn
	Queue    string
	Exchange string
	Enqueue  Enqueuer
	Log      *slog.Logger
	// Publisher puts an event back on the queue after a fault.
	Publisher *rabbit.Publisher
	// RetryDelay is the pause before an event is tried again after a
	// fault (default 1s).
	RetryDelay time.Duration

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	at time.Time
	ts []*jobsv1.Trigger
}

// Declare declares the trigger queue (its bindings are added by triggers).
func (c *Consumer) Declare(ch *amqp.Channel) error {
	return rabbit.DeclareQueue(ch, rabbit.QueueSpec{Name: c.Queue, Exchange: c.Exchange})
}

// Bind adds pattern to the queue's bindings.
func (c *Consumer) Bind(ctx context.Context, pattern string, bind bool) error {
	ch, err := c.Conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close()
	if bind {
		return ch.QueueBind(c.Queue, pattern, c.Exchange, false, nil)
	}
	return ch.QueueUnbind(c.Queue, pattern, c.Exchange, nil)
}

// Run consumes until ctx ends.
func (c *Consumer) Run(ctx context.Context) error {
	return c.Conn.ConsumeWithConfig(ctx, c.Queue, rabbit.ConsumeConfig{Prefetch: 32, ShutdownGrace: 10 * time.Second}, c.handle)
}

func (c *Consumer) triggers(ctx context.Context, tenant string) ([]*jobsv1.Trigger, error) {
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]cached{}
	}
	e, ok := c.cache[tenant]
	c.mu.Unlock()
	if ok && time.Since(e.at) < time.Second {
		return e.ts, nil
	}
	ts, err := c.Store.List(ctx, tenant)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.cache[tenant] = cached{time.Now(), ts}
	c.mu.Unlock()
	return ts, nil
}

// Forget drops the cached triggers of tenant after a change.
func (c *Consumer) Forget(tenant string) {
	c.mu.Lock()
	delete(c.cache, tenant)
	c.mu.Unlock()
}

func (c *Consumer) handle(ctx context.Context, d amqp.Delivery) {
	ev, err := cloudevent.FromDelivery(d)
	if err != nil || ev.GetTenant() == "" {
		_ = d.Ack(false) // not an event a tenant's trigger can match
		return
	}
	if ev.GetSource() == publish.OperationalSource && strings.HasPrefix(ev.GetType(), "jobs.") {
		// A task's own completion firing a trigger could enqueue tasks
		// forever; follow-up work is what callbacks are for.
		_ = d.Ack(false)
		return
	}
	key := d.RoutingKey
	if k, ok := d.Headers[routingKeyHeader].(string); ok {
		key = k // an event put back after a fault
	}
	ts, err := c.triggers(ctx, ev.GetTenant())
	if err != nil {
		c.Log.WarnContext(ctx, "triggers", "err", err)
		c.later(ctx, d, key)
		return
	}
	e := &eventv1Event{ID: ev.GetId(), Tenant: ev.GetTenant(), Data: ev.GetData()}
	for _, t := range ts {
		if !topic.Match(t.GetEventType(), key) {
			continue
		}
		task, err := Task(t, e)
		if err == nil {
			_, err = c.Enqueue(ctx, e.Tenant, task)
		}
		if err != nil {
			if code := status.Code(err); code == codes.InvalidArgument || code == codes.AlreadyExists || code == codes.ResourceExhausted || task == nil {
				c.Log.WarnContext(ctx, "trigger skipped an event", "trigger_id", t.GetId(), "event_id", e.ID, "err", err)
				continue
			}
			c.Log.WarnContext(ctx, "trigger", "trigger_id", t.GetId(), "event_id", e.ID, "err", err)
			c.later(ctx, d, key) // tasks already enqueued are idempotent
			return
		}
	}
	if err := redisconn.Replicated(ctx, c.Store.rdb); err != nil {
		c.Log.WarnContext(ctx, "trigger: tasks not yet on a Redis replica", "event_id", e.ID, "err", err)
		c.later(ctx, d, key)
		return
	}
	_ = d.Ack(false)
}

// routingKeyHeader carries an event's routing key when it is put back on
// the trigger queue through the default exchange.
const routingKeyHeader = "x-hookyard-routing-key"

// later tries d again after RetryDelay. A fault such as Redis being down
// is no fault of the event's, so it is put back as a new message rather
// than requeued: a requeue would spend the quorum queue's delivery limit
// and dead-letter a healthy event after a few seconds of outage. Only if
// that publish fails is it requeued.
func (c *Consumer) later(ctx context.Context, d amqp.Delivery, key string) {
	delay := c.RetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	select {
	case <-ctx.Done():
		_ = d.Nack(false, true)
		return
	case <-time.After(delay):
	}
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[routingKeyHeader] = key
	msg := amqp.Publishing{Headers: headers, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, CorrelationId: d.CorrelationId, MessageId: d.MessageId, Timestamp: d.Timestamp,
		Type: d.Type, AppId: d.AppId, Body: d.Body}
	if c.Publisher == nil || c.Publisher.Publish(ctx, "", c.Queue, msg) != nil {
		_ = d.Nack(false, true)
		return
	}
	_ = d.Ack(false)
}
