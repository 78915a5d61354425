// Package rabbit is the RabbitMQ plumbing shared by the Hookyard services.
//
// It provides four things on top of github.com/rabbitmq/amqp091-go:
//
//   - Conn, a connection that re-establishes itself after the broker goes
//     away (moving on to the next node when given the nodes of a cluster,
//     see ParseURLs) and reports its state for readiness probes. amqp091-go closes a
//     connection for good on the first network error, so every long-running
//     process needs this loop; having exactly one copy keeps the backoff and
//     readiness semantics the same in every service.
//   - The Hookyard topology (the hookyard.events topic exchange, the
//     unrouted alternate exchange and queue, the dead-letter exchange) and
//     helpers that declare consumer queues with their own DLQ and TTL based
//     delay queues. Everything is declared idempotently, so services may
//     (and should) declare it at every start and after every reconnect.
//   - Publisher, which publishes with publisher confirms. Confirms are
//     pipelined: any number of goroutines may publish at once and each waits
//     only for its own confirm, so throughput is bounded by the broker's
//     fsync batching rather than by one round trip per message. It checks
//     every field before sending (a frame amqp091-go cannot encode would
//     close the connection every publish shares) and publishes mandatory,
//     so a message the broker cannot route is an error, not a confirmed
//     drop. Events go through platform/publish, which adds the event rules
//     and dedupe on top.
//   - Conn.Consume, a manual-ack consumer that re-subscribes after
//     reconnects and shuts down gracefully.
//
// The built-in (experimental) recovery of amqp091-go is deliberately not
// used: it silently replays channel state, which hides the loss of
// unconfirmed publishes and unacknowledged deliveries from the caller, and
// gives no readiness signal. Here a lost connection is always visible: the
// publishes in flight fail, consumers re-subscribe and the broker redelivers.
package rabbit
