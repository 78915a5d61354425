package logtest

import (
	"log/slog"
	"sync"
	"testing"
)

func TestBufferKeepsEveryLineFromConcurrentWriters(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Info("line", "n", i)
		}()
	}
	wg.Wait()
	_, _ = b.Write([]byte("not json\n"))
	lines := b.Lines()
	if len(lines) != 50 {
		t.Fatalf("%d lines, want 50", len(lines))
	}
	seen := map[float64]bool{}
	for _, l := range lines {
		if l["msg"] != "line" {
			t.Fatalf("line %v", l)
		}
		seen[l["n"].(float64)] = true
	}
	if len(seen) != 50 {
		t.Fatalf("%d distinct lines, want 50", len(seen))
	}
}
