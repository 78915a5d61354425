// Package loadtest is the measuring kit the Hookyard load benchmarks share:
// starting the service under test as a child process, reading its memory
// and everyone's CPU from /proc, scraping its Prometheus metrics and
// condensing latencies. Each benchmark keeps its own load and report.
package loadtest
