# Hookyard build, test and development targets. Run `make help` for a list.
#
# Every target that iterates over Go modules visits all modules of go.work
# (override with MODULES="dir ..."), keeps going after a failing module so
# that one run reports every failure, and fails at the end if any module
# failed.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN := $(CURDIR)/bin

# Modules of the workspace (absolute directories).
MODULES ?= $(shell $(GO) list -m -f '{{.Dir}}' 2>/dev/null)
# Service binaries, each built from services/<name>/cmd/<name>.
SERVICES := ingress dispatcher cache jobs

TEST_TIMEOUT ?= 10m
# buf breaking compares proto/ with this git ref (main: a branch must not
# break what has landed; on main itself it compares with itself).
BREAKING_REF ?= main
BREAKING_AGAINST ?= .git\#branch=$(BREAKING_REF),subdir=proto
TEST_FLAGS ?=
RACE ?= -race
FUZZTIME ?= 10s
BENCH ?= .
BENCHTIME ?= 1s
BENCH_FLAGS ?= -benchmem

# ---------------------------------------------------------------- tools
# Pinned code generators, installed into ./bin with `go install`.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION := v2.33.0

# binary|package|module|version
TOOLS := \
	buf|github.com/bufbuild/buf/cmd/buf|github.com/bufbuild/buf|$(BUF_VERSION) \
	protoc-gen-go|google.golang.org/protobuf/cmd/protoc-gen-go|google.golang.org/protobuf|$(PROTOC_GEN_GO_VERSION) \
	protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc|google.golang.org/grpc/cmd/protoc-gen-go-grpc|$(PROTOC_GEN_GO_GRPC_VERSION) \
	protoc-gen-grpc-gateway|github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway|github.com/grpc-ecosystem/grpc-gateway/v2|$(GRPC_GATEWAY_VERSION) \
	protoc-gen-openapiv2|github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2|github.com/grpc-ecosystem/grpc-gateway/v2|$(GRPC_GATEWAY_VERSION)
TOOLS_HASH := $(shell printf '%s\n' '$(TOOLS)' | sha256sum | cut -c1-12)
TOOLS_STAMP := $(BIN)/.tools-$(TOOLS_HASH)
QUOTED_TOOLS := $(foreach t,$(TOOLS),'$(t)')

# Shell prelude for module loops: `has_pkgs` is false only for a module that
# contains no packages at all (go test/vet/build refuse an empty ./...);
# a module whose packages fail to load still counts, so its error shows.
define PRELUDE
fail=0
has_pkgs() { local out; out=$$($(GO) list ./... 2>/dev/null) || return 0; [[ -n $$out ]]; }
modules=($(MODULES))
(( $${#modules[@]} )) || { echo "no Go modules found (is go.work present?)" >&2; exit 1; }
endef

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-16s %s\n", $$1, $$2 }'

.PHONY: tools
tools: ## Install the pinned buf and protoc plugins into ./bin
	@if [[ -f '$(TOOLS_STAMP)' ]]; then
		ok=1
		for t in $(QUOTED_TOOLS); do [[ -x '$(BIN)'/$${t%%|*} ]] || ok=0; done
		(( ok )) && exit 0
	fi
	mkdir -p '$(BIN)'
	for t in $(QUOTED_TOOLS); do
		IFS='|' read -r name pkg mod ver <<<"$$t"
		have=$$($(GO) version -m '$(BIN)'/"$$name" 2>/dev/null | awk -v m="$$mod" '$$1 == "mod" && $$2 == m { print $$3 }') || true
		if [[ $$have == "$$ver" ]]; then continue; fi
		echo "tools: installing $$name $$ver"
		GOBIN='$(BIN)' GOWORK=off $(GO) install "$$pkg@$$ver"
	done
	rm -f '$(BIN)'/.tools-*
	touch '$(TOOLS_STAMP)'

# ------------------------------------------------------------ generation

.PHONY: gen
gen: tools ## Regenerate gen/hookyard and gen/openapi from proto/
	@rm -rf gen/hookyard gen/openapi
	'$(BIN)'/buf generate

.PHONY: gen-check
gen-check: gen ## Fail if the generated code differs from what is committed
	@if ! git diff --exit-code --stat -- gen; then
		echo "gen-check: generated code is out of date; run 'make gen' and commit gen/" >&2
		exit 1
	fi
	untracked=$$(git status --porcelain --untracked-files=all -- gen)
	if [[ -n $$untracked ]]; then
		printf '%s\n' "$$untracked" >&2
		echo "gen-check: gen/ has uncommitted or untracked files; run 'make gen' and commit gen/" >&2
		exit 1
	fi
	echo "gen-check: gen/ is up to date"

# ------------------------------------------------------------------ lint

.PHONY: lint
lint: tools ## buf lint, buf breaking against BREAKING_AGAINST, go mod tidy, go vet on every module, gofmt on every .go file
	@$(PRELUDE)
	echo "lint: buf lint"
	'$(BIN)'/buf lint || fail=1
	if [[ -n '$(BREAKING_AGAINST)' ]] && git rev-parse --verify -q '$(BREAKING_REF)' >/dev/null; then
		echo "lint: buf breaking against $(BREAKING_AGAINST)"
		'$(BIN)'/buf breaking --against '$(BREAKING_AGAINST)' || fail=1
	else
		echo "lint: buf breaking skipped ($(BREAKING_REF) is not in this clone)"
	fi
	for m in "$${modules[@]}"; do
		( cd "$$m" && has_pkgs ) || continue
		echo "lint: go mod tidy, go vet $${m#$(CURDIR)/}"
		( cd "$$m" && $(GO) mod tidy -diff >/dev/null ) || { echo "  go.mod/go.sum of $${m#$(CURDIR)/} are not tidy; run go mod tidy there" >&2; fail=1; }
		( cd "$$m" && $(GO) vet ./... ) || fail=1
	done
	echo "lint: gofmt"
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		files=()
		while IFS= read -r -d '' f; do [[ -f $$f ]] && files+=("$$f"); done < <(git ls-files -z --cached --others --exclude-standard -- '*.go')
	else
		mapfile -t files < <(find . -name '*.go' -not -path './.git/*' -not -path './bin/*' -not -path './.cache/*')
	fi
	if (( $${#files[@]} )); then
		unformatted=$$(gofmt -l "$${files[@]}")
		if [[ -n $$unformatted ]]; then
			printf '%s\n' "$$unformatted" | sed 's/^/  not gofmt-ed: /' >&2
			fail=1
		fi
	fi
	exit $$fail

# ----------------------------------------------------------------- build

.PHONY: build
build: ## Build every module, bin/<service> for each service, bin/hookyard (the CLI) and bin/console
	@$(PRELUDE)
	for m in "$${modules[@]}"; do
		( cd "$$m" && has_pkgs ) || continue
		( cd "$$m" && $(GO) build ./... ) || fail=1
	done
	for s in $(SERVICES); do
		if ! compgen -G "services/$$s/cmd/$$s/*.go" >/dev/null; then
			echo "build: skipping $$s: services/$$s/cmd/$$s has no Go files yet" >&2
			continue
		fi
		$(GO) build -o '$(BIN)'/$$s ./services/$$s/cmd/$$s || fail=1
	done
	$(GO) build -o '$(BIN)'/hookyard ./cmd/hookyard || fail=1
	$(GO) build -o '$(BIN)'/console ./cmd/console || fail=1
	exit $$fail

# ------------------------------------------------------------------ test

.PHONY: deps
deps: ## Make sure RabbitMQ and Redis are running (deploy/local/deps.sh)
	@deploy/local/deps.sh

.PHONY: test
test: deps ## Every test of every module, with -race, against real RabbitMQ and Redis
	@$(PRELUDE)
	for m in "$${modules[@]}"; do
		( cd "$$m" && has_pkgs ) || continue
		echo "test: $${m#$(CURDIR)/}"
		( cd "$$m" && $(GO) test $(RACE) -count=1 -timeout '$(TEST_TIMEOUT)' $(TEST_FLAGS) ./... ) || fail=1
	done
	(( fail == 0 )) || echo "test: FAILED" >&2
	exit $$fail

.PHONY: fuzz
fuzz: ## Run every Fuzz* target for FUZZTIME (default 10s) each
	@$(PRELUDE)
	n=0
	for m in "$${modules[@]}"; do
		( cd "$$m" && has_pkgs ) || continue
		if ! list=$$(cd "$$m" && $(GO) test -list '^Fuzz' ./...); then
			printf '%s\n' "$$list" >&2
			fail=1
			continue
		fi
		# `go test -list` prints a package's names, then "ok <package> <time>".
		while read -r pkg name; do
			n=$$((n + 1))
			echo "fuzz: $$pkg $$name ($(FUZZTIME))"
			( cd "$$m" && $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime '$(FUZZTIME)' "$$pkg" ) || fail=1
		done < <(printf '%s\n' "$$list" | awk '/^Fuzz/ { names[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, names[i]; n = 0 }')
	done
	echo "fuzz: ran $$n fuzz targets"
	exit $$fail

.PHONY: bench bench-go
bench: bench-go bench-ingress bench-dispatcher ## All benchmarks: Go benchmarks, then the ingress and dispatcher load tests

bench-go: deps ## Go benchmarks of every module (BENCH, BENCHTIME, BENCH_FLAGS)
	@$(PRELUDE)
	for m in "$${modules[@]}"; do
		( cd "$$m" && has_pkgs ) || continue
		( cd "$$m" && $(GO) test -run '^$$' -bench '$(BENCH)' -benchtime='$(BENCHTIME)' $(BENCH_FLAGS) ./... ) || fail=1
	done
	exit $$fail

# The load tests run the real binaries against local RabbitMQ and Redis and
# print their figures next to the ceilings measured in the same run
# (docs/benchmarks.md). Pass flags with INGRESS_BENCH_FLAGS and
# DISPATCHER_BENCH_FLAGS, e.g. INGRESS_BENCH_FLAGS='-n 5000'.
INGRESS_BENCH_FLAGS ?= -n 20000
DISPATCHER_BENCH_FLAGS ?= -n 5000 -c 64 -pending 100000

# The cache benchmark runs two replicas in-process against local Redis and
# RabbitMQ (CACHE_BENCH_FLAGS, e.g. '-n 20000 -origin-delay 50ms'); it fails
# if a stampede of one cold key loads the origin more than once.
CACHE_BENCH_FLAGS ?= -n 5000

.PHONY: bench-cache
bench-cache: deps ## Cache hit, near-cache hit, read-through, stampede and read-heavy mix against raw Redis (CACHE_BENCH_FLAGS)
	@cd services/cache && $(GO) run ./cmd/cache-bench $(CACHE_BENCH_FLAGS)

.PHONY: bench-ingress bench-dispatcher
bench-ingress: deps ## Ingress load test against its ceilings (INGRESS_BENCH_FLAGS)
	@cd services/ingress && $(GO) run ./cmd/ingress-bench $(INGRESS_BENCH_FLAGS)

bench-dispatcher: deps ## Dispatcher load, isolation and memory test (DISPATCHER_BENCH_FLAGS)
	@cd services/dispatcher && $(GO) run ./cmd/dispatcher-bench $(DISPATCHER_BENCH_FLAGS)

# End-to-end runs of the real binaries (test/): the flow, auth and
# hostile-input tests are part of `make test`; these print figures.
FAULTS_FLAGS ?=
BURST_FLAGS ?=
SOAK_FLAGS ?=

.PHONY: test-faults bench-burst soak
test-faults: deps ## Webhooks through the suite while each service is killed, the broker cut and Redis restarted (FAULTS_N, FAULTS_FLAGS)
	@cd test && $(GO) run ./cmd/hookyard-faults $(FAULTS_FLAGS)

bench-burst: deps ## A burst of 50,000 Stripe webhooks through the suite: ingress p99, backlog drain, RSS (BURST_N, BURST_FLAGS)
	@cd test && $(GO) run ./cmd/hookyard-burst $(BURST_FLAGS)

soak: deps ## An hour of Stripe webhooks at a fixed rate through the suite: goroutines, heap, RSS, fds, Redis memory and queues sampled every minute and judged flat (SOAK_FLAGS, e.g. -duration 3m -rate 200 -sample 15s)
	@cd test && $(GO) run ./cmd/hookyard-soak $(SOAK_FLAGS)

# A three-node RabbitMQ cluster and Redis with Sentinel on ports of their
# own (deploy/local/cluster.sh); the shared broker and Redis are not used.
CLUSTER_FLAGS ?=

.PHONY: test-cluster
test-cluster: ## The suite against a RabbitMQ cluster and Redis Sentinel: kill a node and fail Redis over under load (CLUSTER_FLAGS)
	@cd test && $(GO) run ./cmd/hookyard-cluster $(CLUSTER_FLAGS)

# The jobs benchmark compares the service with asynq in one run on the same
# RabbitMQ and Redis (asynq in Redis database 9); it lives in its own module
# (services/jobs/bench, outside go.work) so asynq never reaches the service.
# JOBS_BENCH_FLAGS, e.g. '-n 20000 -scheduled 100000 -c 64'.
JOBS_BENCH_FLAGS ?=
.PHONY: bench-jobs
bench-jobs: deps ## Jobs vs asynq (and the transport floor): no-op tasks/s and CPU per task, enqueue->start latency at 200/s, RSS and Redis memory with 100,000 scheduled tasks (JOBS_BENCH_FLAGS)
	@cd services/jobs/bench && GOWORK=off $(GO) run . $(JOBS_BENCH_FLAGS)

# ---------------------------------------------------------------- deploy

IMAGE_REPO ?= hookyard
IMAGE_TAG ?= dev

.PHONY: images check-rules
images: ## OCI image tarballs of the services in dist/images, no Docker needed (docker load -i dist/images/<service>.tar)
	@cd deploy && $(GO) run ./cmd/images -root '$(CURDIR)' -out '$(CURDIR)/dist/images' -repo '$(IMAGE_REPO)' -tag '$(IMAGE_TAG)' $(SERVICES)

check-rules: ## promtool check rules on deploy/prometheus (skipped if promtool is not installed; the deploy tests check them too)
	@if command -v promtool >/dev/null; then promtool check rules deploy/prometheus/*.yaml
	else echo "check-rules: promtool not installed; 'cd deploy && go test -run Rules .' checks the rules with promtool's own code"; fi

# ------------------------------------------------------------------- dev

.PHONY: dev
# On a terminal the script runs as its own foreground job (bash -m), so
# Ctrl-C reaches the script and the services but not make: make would
# otherwise end itself with SIGINT (status 130) after a clean stop.
dev: ## Run the four services locally (deploy/local/dev.sh)
	@if [ -t 0 ]; then bash -m -c 'deploy/local/dev.sh; exit $$?'; else deploy/local/dev.sh; fi

.PHONY: clean
clean: ## Remove built binaries and local dev state (keeps ./bin tools)
	@rm -f $(addprefix '$(BIN)'/,$(SERVICES) hookyard console)
	rm -rf .dev

.PHONY: distclean
distclean: clean ## Also remove the installed tools in ./bin
	@rm -rf '$(BIN)'
