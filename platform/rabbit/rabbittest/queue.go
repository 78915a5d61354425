package rabbittest

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TempQueue declares on ch a queue of its own for the test to read what
// was published, and deletes it when the test ends. The broker also
// deletes it after ten unused minutes (x-expires), so a test killed
// before its cleanup leaves nothing on a shared broker for long. An
// auto-delete queue would not do: one that never had a consumer is never
// deleted.
func TempQueue(t testing.TB, ch *amqp.Channel, kind string) string {
	t.Helper()
	name := UniqueName(t, kind)
	if _, err := ch.QueueDeclare(name, false, false, false, false, amqp.Table{"x-expires": int32(10 * 60 * 1000)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A connection of its own: the test's channel may be closed by now.
		conn, err := amqp.Dial(URL())
		if err != nil {
			return
		}
		defer conn.Close()
		if c, err := conn.Channel(); err == nil {
			_, _ = c.QueueDelete(name, false, false, false)
		}
	})
	return name
}
