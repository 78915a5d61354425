package listen

import (
	"context"
	"testing"

	"github.com/hookyard/hookyard/services/dispatcher/internal/message"
)

// BenchmarkEventNotListened is what the fan-out pays per event of a tenant
// nobody listens to: a map lookup, no Redis call (the Hub has no Redis
// here; a call would panic).
func BenchmarkEventNotListened(b *testing.B) {
	h := New(nil, "bench", nil, Config{}, nil)
	for i := range 1000 {
		h.local[string(rune('a'+i%26))+"-listened"] = 1
	}
	m := &message.Message{ID: "evt-1", RoutingKey: "stripe.invoice.paid"}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.Event(ctx, "quiet-tenant", m)
		}
	})
}
