package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispatcherv1 "github.com/hookyard/hookyard/gen/hookyard/dispatcher/v1"
	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/platform/rabbit"
	"github.com/hookyard/hookyard/platform/sign"
	"github.com/hookyard/hookyard/platform/ssrf"
	"github.com/hookyard/hookyard/platform/trace"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// EventSource is the source of the jobs service's events, the one Hookyard
// reserves for its own events so that no tenant can forge them: their
// routing keys are hookyard.jobs.task.succeeded, .failed and .cancelled.
const EventSource = publish.OperationalSource

// CallbackTries is how often a completion callback is tried; with the
// backoff below the last try is about 20 minutes after the first.
const CallbackTries = 9

// Announcer publishes a completion event for every task that ends and
// delivers the task's callback. Ends are queued in Redis by the same
// script that ends the task, so none is lost when a replica dies; an event
// may be published twice (same event id), never not at all.
//
// With Dispatcher set, a callback is handed over to the dispatcher
// (CallbackService.SendCallback), which delivers it with its retry
// schedule and dead letters; the end stays queued here until the
// dispatcher has accepted it, so an outage of the dispatcher delays the
// hand-over, never loses it, and a hand-over repeated after a crash is
// one message (the call is idempotent on the event id). Without it the
// announcer posts the callback itself (CallbackTries tries).
type Announcer struct {
	Store      *store.Store
	Publisher  *rabbit.Publisher
	Exchange   string
	Policy     ssrf.Policy
	Log        *slog.Logger
	Interval   time.Duration // default 100ms
	Dispatcher dispatcherv1.CallbackServiceClient

	client *http.Client
}

// EventData is the data of a completion event and the body of a callback.
type EventData struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Queue      string          `json:"queue"`
	State      string          `json:"state"`
	Attempts   int             `json:"attempts"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	CreateTime time.Time       `json:"createTime"`
	FinishTime time.Time       `json:"finishTime,omitzero"`
}

// EventID is the stable id of the event of one end of a task.
func EventID(e store.Ending) string {
	id := fmt.Sprintf("%s.%s.%d", e.ID, e.State, e.Attempts)
	if len(id) > publish.MaxIDLen {
		// A task id near its 128-byte cap leaves no room for the suffix;
		// a digest keeps the event id stable and within the rule set.
		sum := sha256.Sum256([]byte(id))
		id = "t" + hex.EncodeToString(sum[:20])
	}
	return id
}

func data(e store.Ending, t *store.Task) ([]byte, error) {
	d := EventData{ID: t.ID, Name: t.Spec.Name, Queue: t.Spec.Queue, State: e.State, Attempts: e.Attempts,
		Error: t.Error, CreateTime: t.Created, FinishTime: t.Finished}
	if e.State == store.Succeeded {
		d.Result, d.Error = t.Result, ""
	}
	// Without HTML escaping: json.Marshal writes each <, > and & of the
	// result as six bytes, which could take a result under its 1 MiB cap
	// past the dispatcher's limit for a callback body.
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Run announces until ctx ends.
func (a *Announcer) Run(ctx context.Context) error {
	if a.Interval <= 0 {
		a.Interval = 100 * time.Millisecond
	}
	a.client = a.Policy.Client(ssrf.ClientOptions{})
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := a.events(ctx); err != nil && ctx.Err() == nil {
			a.Log.WarnContext(ctx, "completion events", "err", err)
		}
		if err := a.callbacks(ctx); err != nil && ctx.Err() == nil {
			a.Log.WarnContext(ctx, "completion callbacks", "err", err)
		}
	}
}

func (a *Announcer) events(ctx context.Context) error {
	es, err := a.Store.ClaimEndings(ctx, 256, 30*time.Second)
	if err != nil || len(es) == 0 {
		return err
	}
	// One round trip reads the tasks and one records what was published.
	ts, errs, err := a.Store.EndedTasks(ctx, es)
	if err != nil {
		return err
	}
	done := make([]bool, len(es))
	var wg sync.WaitGroup
	for i, e := range es {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := errs[i]
			if err == nil {
				err = a.announce(ctx, e, ts[i])
			}
			if err != nil {
				if ctx.Err() == nil {
					a.Log.WarnContext(ctx, "completion event", "task_id", e.ID, "err", err)
				}
				return
			}
			done[i] = true
		}()
	}
	wg.Wait()
	return a.Store.AnnouncedAll(ctx, es, ts, done)
}

// announce publishes the event of e; t is nil when the task is gone.
func (a *Announcer) announce(ctx context.Context, e store.Ending, t *store.Task) error {
	if t == nil {
		return nil
	}
	ctx = trace.Resume(ctx, t.Spec.Trace)
	body, err := data(e, t)
	if err != nil {
		return err
	}
	key, msg, err := publish.Encode(publish.Event{
		Tenant: e.Tenant, Source: EventSource, ID: EventID(e), Type: "jobs.task." + e.State, Subject: e.ID,
		Time: t.Finished, ContentType: "application/json", Body: body,
	})
	if err != nil {
		return err
	}
	if err := a.Publisher.Publish(ctx, a.Exchange, key, msg); err != nil {
		return err
	}
	// With the task's trace, so the line joins the request that
	// enqueued it. Checked first: the arguments allocate.
	if a.Log.Enabled(ctx, slog.LevelDebug) {
		a.Log.DebugContext(ctx, "task ended", "tenant", e.Tenant, "task_id", e.ID, "name", t.Spec.Name, "queue", t.Spec.Queue,
			"state", e.State, "attempts", e.Attempts, "event_id", EventID(e))
	}
	return nil
}

func (a *Announcer) callbacks(ctx context.Context) error {
	es, err := a.Store.ClaimCallbacks(ctx, 64, time.Minute)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.deliver(ctx, e)
		}()
	}
	wg.Wait()
	return nil
}

func (a *Announcer) deliver(ctx context.Context, e store.Ending) {
	t, err := a.Store.Get(ctx, e.Tenant, e.ID)
	if errors.Is(err, store.ErrNotFound) {
		_ = a.Store.CallbackDone(ctx, e, "", time.Time{})
		return
	}
	if err != nil {
		return // claimed: it comes back after the rearm
	}
	ctx = trace.Resume(ctx, t.Spec.Trace)
	if a.Dispatcher != nil {
		a.handOver(ctx, e, t)
		return
	}
	err = a.post(ctx, e, t)
	switch {
	case err == nil:
		_ = a.Store.CallbackDone(ctx, e, "delivered", time.Time{})
	case e.Try+1 >= CallbackTries:
		a.Log.WarnContext(ctx, "completion callback given up", "task_id", e.ID, "tries", e.Try+1, "err", err)
		_ = a.Store.CallbackDone(ctx, e, "failed: "+err.Error(), time.Time{})
	default:
		// 5s, 10s, 20s ... with full jitter on the upper half.
		d := 5 * time.Second << e.Try
		d = d/2 + rand.N(d/2+1)
		_ = a.Store.CallbackDone(ctx, e, fmt.Sprintf("retrying: %v", err), time.Now().Add(d))
	}
}

// HandOverTimeout bounds one SendCallback call; well below the minute a
// claimed callback stays claimed.
const HandOverTimeout = 10 * time.Second

// handOver gives the callback of e to the dispatcher. Until the dispatcher
// answers, the end stays queued, tried again with a backoff capped at a
// minute; only an answer that trying again cannot change (the dispatcher
// refuses the request itself) ends it without a hand-over.
func (a *Announcer) handOver(ctx context.Context, e store.Ending, t *store.Task) {
	body, err := data(e, t)
	if err != nil {
		_ = a.Store.CallbackDone(ctx, e, "failed: "+err.Error(), time.Time{})
		return
	}
	cctx, cancel := context.WithTimeout(ctx, HandOverTimeout)
	defer cancel()
	res, err := a.Dispatcher.SendCallback(cctx, &dispatcherv1.SendCallbackRequest{
		Tenant: e.Tenant, Url: t.Spec.CallbackURL, Secret: t.Spec.CallbackSecret,
		MessageId: EventID(e), Source: EventSource, Type: "jobs.task." + e.State,
		Data: body, ContentType: "application/json", EventTime: timestamppb.New(t.Finished),
	})
	switch code := status.Code(err); {
	case err == nil:
		a.Log.DebugContext(ctx, "completion callback handed to the dispatcher", "task_id", e.ID, "message_id", res.GetMessageId())
		_ = a.Store.CallbackDone(ctx, e, "handed to dispatcher as message "+res.GetMessageId(), time.Time{})
	case code == codes.InvalidArgument || code == codes.FailedPrecondition:
		a.Log.WarnContext(ctx, "completion callback refused by the dispatcher", "task_id", e.ID, "err", err)
		_ = a.Store.CallbackDone(ctx, e, "refused by dispatcher: "+status.Convert(err).Message(), time.Time{})
	default:
		if ctx.Err() != nil {
			return // shutting down: claimed, it comes back after the rearm
		}
		d := min(time.Second<<min(e.Try, 6), time.Minute)
		d = d/2 + rand.N(d/2+1)
		a.Log.WarnContext(ctx, "completion callback hand-over failed; retrying", "task_id", e.ID, "tries", e.Try+1, "in", d, "err", err)
		_ = a.Store.CallbackDone(ctx, e, fmt.Sprintf("handing to dispatcher, retrying: %v", err), time.Now().Add(d))
	}
}

func (a *Announcer) post(ctx context.Context, e store.Ending, t *store.Task) error {
	body, err := data(e, t)
	if err != nil {
		return err
	}
	secret, err := sign.ParseSecret(t.Spec.CallbackSecret)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.Spec.CallbackURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hookyard-jobs")
	sign.Headers(req.Header, [][]byte{secret}, EventID(e), time.Now(), body)
	trace.InjectHTTP(ctx, req.Header)
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
