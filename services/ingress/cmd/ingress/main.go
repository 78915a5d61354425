// Command ingress receives third-party webhooks, verifies them and publishes
// them durably to RabbitMQ.
package main

import (
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/services/ingress/internal/ingress"
)

func main() { app.Main(ingress.Service()) }
