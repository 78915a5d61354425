package server

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// RetryAfter is the delay suggested to clients when a backing service is
// unavailable.
const RetryAfter = 5 * time.Second

// edgeError is a status for the client carrying a cause that is only
// logged: gRPC sends the status (GRPCStatus), the log interceptor writes
// the cause (Unwrap).
type edgeError struct {
	st    *status.Status
	cause error
}

func (e *edgeError) Error() string              { return e.st.Message() }
func (e *edgeError) GRPCStatus() *status.Status { return e.st }
func (e *edgeError) Unwrap() error              { return e.cause }

// Unavailable is the error for a backing service (Redis, RabbitMQ) that
// failed while serving a call. The client is told what was unavailable,
// with an ErrorInfo (reason UNAVAILABLE in domain) and a RetryInfo; the
// cause's text, which names hosts, keys and server internals, is logged,
// never sent.
func Unavailable(domain, what string, cause error) error {
	return UnavailableBecause(domain, "UNAVAILABLE", what+" is temporarily unavailable; retry later", fmt.Errorf("%s: %w", what, cause))
}

// UnavailableBecause is Unavailable for a failure the client may be told
// about (an origin it configured answered 502): message is sent as it is,
// with an ErrorInfo of reason (UPPER_SNAKE_CASE) in domain and a
// RetryInfo; cause, which may be nil, is logged only.
func UnavailableBecause(domain, reason, message string, cause error) error {
	st := status.New(codes.Unavailable, message)
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: reason, Domain: domain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(RetryAfter)},
	); err == nil {
		st = d
	}
	return &edgeError{st: st, cause: cause}
}

// InvalidArgument is the error for a field of the request that is wrong:
// the message names the field, and a BadRequest detail carries it for
// programs.
func InvalidArgument(domain, field, description string) error {
	st := status.New(codes.InvalidArgument, field+": "+description)
	if d, err := st.WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: domain, Metadata: map[string]string{"field": field}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: description}}},
	); err == nil {
		st = d
	}
	return st.Err()
}

// cause returns the logged-only cause of an error made by Unavailable or
// UnavailableBecause.
func cause(err error) error {
	var e *edgeError
	if errors.As(err, &e) {
		return e.cause
	}
	return nil
}

// BadRequest is InvalidArgument for a validation error that may join
// several (errors.Join), each worded "<field>: <what is wrong>" or
// "<field> <value>: …": the message is err's text, and every part becomes
// a field violation naming its field.
func BadRequest(domain string, err error) error {
	parts := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	}
	br := &errdetails.BadRequest{}
	for _, p := range parts {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field: fieldOf(p.Error()), Description: p.Error(),
		})
	}
	st := status.New(codes.InvalidArgument, err.Error())
	if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: "INVALID_ARGUMENT", Domain: domain}, br); derr == nil {
		st = d
	}
	return st.Err()
}

// fieldOf returns the field path a validation message starts with
// ("retry_schedule[2]: …", "name \"x\": …"), or "" if it names none.
func fieldOf(msg string) string {
	i := 0
	for i < len(msg) {
		c := msg[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '[' || c == ']' {
			i++
			continue
		}
		break
	}
	if i == 0 || i == len(msg) {
		return ""
	}
	if msg[i] == ':' || msg[i] == ' ' && i+1 < len(msg) && msg[i+1] == '"' {
		return msg[:i]
	}
	return ""
}
