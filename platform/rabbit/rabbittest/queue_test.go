package rabbittest

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestTempQueueIsDeletedAfterTheTest(t *testing.T) {
	conn, err := amqp.Dial(URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	t.Run("inner", func(t *testing.T) {
		name = TempQueue(t, ch, "q")
		if _, err := ch.QueueDeclarePassive(name, false, false, false, false, amqp.Table{"x-expires": int32(10 * 60 * 1000)}); err != nil {
			t.Fatalf("queue not declared: %v", err)
		}
	})
	ch2, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch2.QueueDeclarePassive(name, false, false, false, false, nil); err == nil {
		t.Fatalf("queue %s still on the broker after its test", name)
	}
}
