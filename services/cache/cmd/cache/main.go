// Command cache runs the Hookyard cache service.
package main

import (
	"github.com/hookyard/hookyard/platform/app"
	"github.com/hookyard/hookyard/services/cache/internal/cache"
)

func main() { app.Main(cache.Service()) }
