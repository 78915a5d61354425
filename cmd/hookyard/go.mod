module github.com/hookyard/hookyard/cmd/hookyard

go 1.26.0

require (
	github.com/hookyard/hookyard/gen v0.0.0
	github.com/hookyard/hookyard/platform v0.0.0
	github.com/spf13/cobra v1.10.2
	go.yaml.in/yaml/v3 v3.0.5
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/grpc-ecosystem/grpc-gateway/v2 v2.33.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20261026165753-2ffab32bce7e // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261019180522-ce908d29299b // indirect
)

replace (
	github.com/hookyard/hookyard/gen => ../../gen
	github.com/hookyard/hookyard/platform => ../../platform
	github.com/hookyard/hookyard/services/dispatcher => ../../services/dispatcher
)
