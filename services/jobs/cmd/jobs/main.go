// Command jobs runs the Hookyard jobs service.
package main

import (
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/services/jobs/internal/jobs"
)

func main() { app.Main(jobs.Service()) }
