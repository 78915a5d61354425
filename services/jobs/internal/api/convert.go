// Package api serves the jobs service's gRPC APIs (and through the gateway
// its REST routes): tasks, workers, schedules and queues. Every call is
// scoped to the caller's tenant; another tenant's task is NotFound.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	jobsv1 "github.com/hookyard/hookyard/gen/hookyard/jobs/v1"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// Limits and defaults of a task.
const (
	MaxArgsBytes      = 1 << 20
	MaxResultBytes    = 1 << 20
	MaxErrorBytes     = 4 << 10
	MaxTimeLimit      = 24 * time.Hour
	MinTimeLimit      = 100 * time.Millisecond
	DefaultSoftLimit  = 5 * time.Minute
	HardLimitMargin   = 30 * time.Second
	DefaultMaxRetries = 3
	MaxMaxRetries     = 100
	DefaultBackoff    = time.Second
	DefaultBackoffMax = 10 * time.Minute
	DefaultQueue      = "default"
)

var (
	idRe    = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	nameRe  = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,200}$`)
	queueRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// ValidQueue checks a queue name.
func ValidQueue(q string) error {
	if !queueRe.MatchString(q) {
		return invalid("queue: %q: use 1 to 64 letters, digits, '-' or '_'", q)
	}
	return nil
}

func duration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid("%s: %v", field, err)
	}
	return d.AsDuration(), nil
}

func timeLimit(field string, d *durationpb.Duration) (time.Duration, error) {
	v, err := duration(field, d)
	if err != nil || d == nil {
		return v, err
	}
	if v < MinTimeLimit || v > MaxTimeLimit {
		return 0, invalid("%s: %s is outside %s..%s", field, v, MinTimeLimit, MaxTimeLimit)
	}
	return v, nil
}

// specOf validates a task given by a client and returns what is stored.
func specOf(t *jobsv1.Task, now time.Time) (store.Spec, error) {
	var s store.Spec
	if t == nil {
		return s, invalid("task: required")
	}
	if !nameRe.MatchString(t.GetName()) {
		return s, invalid("name: %q: required, 1 to 200 letters, digits, '.', '_', ':' or '-'", t.GetName())
	}
	s.Name = t.GetName()
	if t.GetArgs() != nil {
		raw, err := protojson.Marshal(t.GetArgs())
		if err != nil {
			return s, invalid("args: %v", err)
		}
		if len(raw) > MaxArgsBytes {
			return s, invalid("args: %d bytes, at most %d", len(raw), MaxArgsBytes)
		}
		s.Args = raw
	}
	s.Queue = t.GetQueue()
	if s.Queue == "" {
		s.Queue = DefaultQueue
	}
	if err := ValidQueue(s.Queue); err != nil {
		return s, err
	}
	var err error
	if s.SoftLimit, err = timeLimit("softTimeLimit", t.GetSoftTimeLimit()); err != nil {
		return s, err
	}
	if s.HardLimit, err = timeLimit("hardTimeLimit", t.GetHardTimeLimit()); err != nil {
		return s, err
	}
	switch {
	case s.SoftLimit == 0 && s.HardLimit == 0:
		s.SoftLimit, s.HardLimit = DefaultSoftLimit, DefaultSoftLimit+HardLimitMargin
	case s.HardLimit == 0:
		s.HardLimit = min(s.SoftLimit+HardLimitMargin, MaxTimeLimit)
	case s.SoftLimit == 0:
		s.SoftLimit = min(DefaultSoftLimit, s.HardLimit)
	case s.SoftLimit > s.HardLimit:
		return s, invalid("softTimeLimit: %s is longer than hardTimeLimit %s", s.SoftLimit, s.HardLimit)
	}
	switch r := t.GetMaxRetries(); {
	case r == 0:
		s.MaxRetries = DefaultMaxRetries
	case r < 0:
		s.MaxRetries = 0
	case r > MaxMaxRetries:
		return s, invalid("maxRetries: %d, at most %d", r, MaxMaxRetries)
	default:
		s.MaxRetries = int(r)
	}
	if s.Backoff, err = duration("retryBackoff", t.GetRetryBackoff()); err != nil {
		return s, err
	}
	if s.BackoffMax, err = duration("retryBackoffMax", t.GetRetryBackoffMax()); err != nil {
		return s, err
	}
	if s.Backoff == 0 {
		s.Backoff = DefaultBackoff
	}
	if s.BackoffMax == 0 {
		s.BackoffMax = max(DefaultBackoffMax, s.Backoff)
	}
	if s.Backoff < 0 || s.BackoffMax < s.Backoff || s.BackoffMax > 7*24*time.Hour {
		return s, invalid("retryBackoff: must be positive and at most retryBackoffMax (at most 7 days)")
	}
	countdown, err := duration("countdown", t.GetCountdown())
	if err != nil {
		return s, err
	}
	if t.GetEta() != nil {
		if countdown != 0 {
			return s, invalid("eta and countdown: give one of them")
		}
		if err := t.GetEta().CheckValid(); err != nil {
			return s, invalid("eta: %v", err)
		}
		s.ETA = t.GetEta().AsTime()
	} else if countdown < 0 {
		return s, invalid("countdown: %s is negative", countdown)
	} else if countdown > 0 {
		s.ETA = now.Add(countdown)
	}
	if !s.ETA.IsZero() && s.ETA.After(now.Add(366*24*time.Hour)) {
		return s, invalid("eta: more than a year ahead")
	}
	if t.GetExpireTime() != nil {
		if err := t.GetExpireTime().CheckValid(); err != nil {
			return s, invalid("expireTime: %v", err)
		}
		s.Expire = t.GetExpireTime().AsTime()
	}
	s.CallbackURL, s.CallbackSecret = t.GetCallbackUrl(), t.GetCallbackSecret()
	if k := t.GetUniqueKey(); k != "" {
		if len(k) > 256 {
			return s, invalid("uniqueKey: at most 256 bytes")
		}
		s.UniqueKey = k
		if s.UniqueTTL, err = duration("uniqueTtl", t.GetUniqueTtl()); err != nil {
			return s, err
		}
		if s.UniqueTTL == 0 {
			s.UniqueTTL = 24 * time.Hour
		}
		if s.UniqueTTL < time.Second || s.UniqueTTL > 30*24*time.Hour {
			return s, invalid("uniqueTtl: %s is outside 1s..720h", s.UniqueTTL)
		}
	} else if t.GetUniqueTtl() != nil {
		return s, invalid("uniqueTtl: only with uniqueKey")
	}
	return s, nil
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func value(raw json.RawMessage) *structpb.Value {
	if len(raw) == 0 {
		return nil
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(raw, v); err != nil {
		return nil
	}
	return v
}

// specProto renders the settings of a task.
func specProto(id string, s store.Spec) *jobsv1.Task {
	return &jobsv1.Task{
		Id: id, Name: s.Name, Args: value(s.Args), Queue: s.Queue,
		SoftTimeLimit: dur(s.SoftLimit), HardTimeLimit: dur(s.HardLimit),
		MaxRetries: int32(s.MaxRetries), Eta: ts(s.ETA), CallbackUrl: s.CallbackURL,
		ExpireTime: ts(s.Expire), RetryBackoff: dur(s.Backoff), RetryBackoffMax: dur(s.BackoffMax),
		UniqueKey: s.UniqueKey, UniqueTtl: dur(s.UniqueTTL),
	}
}

func taskProto(t *store.Task) *jobsv1.Task {
	p := specProto(t.ID, t.Spec)
	p.State, p.Attempts, p.Result, p.Error = t.State, int32(t.Attempts), value(t.Result), t.Error
	p.CreateTime, p.StartTime, p.FinishTime = ts(t.Created), ts(t.Started), ts(t.Finished)
	p.CancelRequested = t.CancelRequested && t.State == store.Running
	p.CallbackState = t.CallbackState
	for _, a := range t.Log {
		p.AttemptLog = append(p.AttemptLog, &jobsv1.Attempt{
			Number: int32(a.Number), StartTime: ts(time.UnixMilli(a.Start)), EndTime: ts(time.UnixMilli(a.End)),
			Outcome: a.Outcome, Error: a.Error, Worker: a.Worker,
		})
	}
	return p
}

// grpcErr maps store errors to status codes.
func grpcErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "task not found")
	case errors.Is(err, store.ErrLeaseLost):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrTooManyQueues), errors.Is(err, store.ErrTooManyWaiters), errors.Is(err, store.ErrTooManyRateLimits):
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	var u *store.UniqueError
	if errors.As(err, &u) {
		return status.Error(codes.AlreadyExists, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("task store: %v", err))
}
