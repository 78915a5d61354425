package runner

import (
	"encoding/json"
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

// A result of <, > and & keeps its size in the completion body: escaped
// as \u003c each would take six bytes, and a result under its 1 MiB cap
// could be refused by the dispatcher as a callback body.
func TestCompletionBodyKeepsTheResultsSize(t *testing.T) {
	result := `"` + strings.Repeat("<>&", 100_000) + `"`
	task := &store.Task{ID: "t1", Result: json.RawMessage(result)}
	body, err := data(store.Ending{ID: "t1", State: store.Succeeded, Attempts: 1}, task)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > len(result)+1024 {
		t.Fatalf("body of %d bytes for a result of %d", len(body), len(result))
	}
	var d EventData
	if err := json.Unmarshal(body, &d); err != nil || string(d.Result) != result {
		t.Fatalf("body does not decode to the result: %v", err)
	}
}
