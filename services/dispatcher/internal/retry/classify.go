package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"

	"github.com/hookyard/hookyard/platform/ssrf"
)

// Outcome is what the dispatcher does after one delivery attempt.
type Outcome int

// The zero Outcome is deliberately invalid so a forgotten assignment is
// visible.
const (
	// Delivered: the subscriber answered 2xx; stop.
	Delivered Outcome = iota + 1
	// Retry: a transient failure (5xx, 429, 408, timeouts, connection and
	// TLS errors, redirects); try again on the schedule.
	Retry
	// Gone: the subscriber answered 410; stop and disable the endpoint, as
	// the Standard Webhooks guidance suggests.
	Gone
	// Permanent: another 4xx; the same request will keep failing, so stop
	// without retrying (unless the endpoint opts into retrying them).
	Permanent
	// Blocked: the SSRF policy refused the resolved address. It is
	// retried on the normal schedule like other failures, because the
	// hostname may resolve to a public address later (a DNS fix, a
	// failover) or an operator may allowlist the range; and because it
	// counts as a failure, an endpoint that stays blocked backs off and is
	// eventually disabled through the usual path. It is kept apart from
	// Retry so the attempt log and metrics show it as "blocked".
	Blocked
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Gone:
		return "gone"
	case Permanent:
		return "permanent"
	case Blocked:
		return "blocked"
	default:
		return "unknown"
	}
}

// Retryable reports whether the message should be attempted again (subject
// to the schedule not being exhausted).
func (o Outcome) Retryable() bool {
	return o == Retry || o == Blocked
}

// Classify decides what to do after an attempt that returned status (when
// err is nil) or failed with err. A response with a 3xx status counts as a
// failed, retryable attempt: redirects are not followed (see ssrf.Client)
// and a subscriber is expected to register its final URL. With
// retryClientErrors, 4xx responses other than 410 are retried instead of
// failing permanently, for subscribers known to answer 4xx during
// deployments; 410 always means the endpoint is gone.
func Classify(status int, err error, retryClientErrors bool) Outcome {
	if err != nil {
		var blocked *ssrf.BlockedError
		if errors.As(err, &blocked) {
			return Blocked
		}
		return Retry
	}
	switch {
	case status >= 200 && status <= 299:
		return Delivered
	case status == 410:
		return Gone
	case status == 408, status == 425, status == 429:
		// Request Timeout, Too Early and Too Many Requests are explicitly
		// temporary.
		return Retry
	case status >= 400 && status <= 499:
		if retryClientErrors {
			return Retry
		}
		return Permanent
	default:
		// 3xx, 5xx, and anything malformed (1xx reaching here, status
		// codes outside the registry).
		return Retry
	}
}

// Class labels a failed attempt in the attempt log and in metrics.
type Class string

// Error classes. ClassNone marks a delivered attempt.
const (
	ClassNone     Class = ""
	ClassTimeout  Class = "timeout"
	ClassConnect  Class = "connect"
	ClassBlocked  Class = "blocked"
	ClassStatus   Class = "status"
	ClassRedirect Class = "redirect"
	ClassTLS      Class = "tls"
)

// ErrorClass labels an attempt that returned status (when err is nil) or
// failed with err. Errors are checked in order: refused by the SSRF
// policy, timed out (including a TLS handshake timeout), failed in TLS
// (certificate or protocol), and otherwise a connection-level failure.
// Responses are "redirect" for 3xx, "status" for any other non-2xx, and
// ClassNone for 2xx.
func ErrorClass(status int, err error) Class {
	if err != nil {
		var blocked *ssrf.BlockedError
		switch {
		case errors.As(err, &blocked):
			return ClassBlocked
		case isTimeout(err):
			return ClassTimeout
		case isTLS(err):
			return ClassTLS
		default:
			return ClassConnect
		}
	}
	switch {
	case status >= 200 && status <= 299:
		return ClassNone
	case status >= 300 && status <= 399:
		return ClassRedirect
	default:
		return ClassStatus
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

func isTLS(err error) bool {
	var (
		header      tls.RecordHeaderError
		alert       tls.AlertError
		verify      *tls.CertificateVerificationError
		ech         *tls.ECHRejectionError
		unknownAuth x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalid     x509.CertificateInvalidError
	)
	if errors.As(err, &header) || errors.As(err, &alert) || errors.As(err, &verify) ||
		errors.As(err, &ech) || errors.As(err, &unknownAuth) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) {
		return true
	}
	// An alert sent by the peer surfaces as a *net.OpError around an
	// unexported type whose text starts with "tls: "; there is no exported
	// type to match, so the message is the only signal.
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "remote error" && strings.HasPrefix(opErr.Err.Error(), "tls: ")
}
