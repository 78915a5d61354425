module github.com/hookyard/hookyard/cmd/console

go 1.26.0

require github.com/hookyard/hookyard/platform v0.0.0

replace github.com/hookyard/hookyard/platform => ../../platform
