module github.com/hookyard/hookyard/test

go 1.26.0

replace (
	github.com/hookyard/hookyard/gen => ../gen
	github.com/hookyard/hookyard/platform => ../platform
)

require (
	github.com/hookyard/hookyard/platform v0.0.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/standard-webhooks/standard-webhooks/libraries v0.0.1
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
