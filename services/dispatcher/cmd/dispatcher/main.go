// Command dispatcher delivers events to subscribers' endpoints as signed
// webhooks, with durable retries, dead letters and replay.
package main

import (
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/services/dispatcher/internal/dispatcher"
)

func main() { app.Main(dispatcher.Service()) }
