package trigger

// SetBeforeUnbind makes a run f just before it unbinds a pattern.
func SetBeforeUnbind(a *API, f func()) { a.beforeUnbind.Store(&f) }
