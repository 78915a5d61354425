package worker

// QueuedCompletions is the number of successes waiting for the
// CompleteTasks call out.
func (w *Worker) QueuedCompletions() int { return w.completions.Len() }
