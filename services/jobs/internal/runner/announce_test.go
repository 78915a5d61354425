package runner

import (
	"strings"
	"testing"

	"github.com/hookyard/hookyard/platform/publish"
	"github.com/hookyard/hookyard/services/jobs/internal/store"
)

// A task id at its 128-byte cap must still give a publishable event id,
// or the task's completion event could never leave the outbox.
func TestEventIDAlwaysPublishable(t *testing.T) {
	for _, id := range []string{"t1", strings.Repeat("a", 128)} {
		e := store.Ending{ID: id, State: "succeeded", Attempts: 12}
		got := EventID(e)
		if err := publish.ValidID(got); err != nil {
			t.Errorf("task id of %d bytes: event id %q: %v", len(id), got, err)
		}
		if got != EventID(e) {
			t.Errorf("event id is not stable")
		}
	}
	short := EventID(store.Ending{ID: "t1", State: "failed", Attempts: 2})
	if short != "t1.failed.2" {
		t.Errorf("short id = %q", short)
	}
}
