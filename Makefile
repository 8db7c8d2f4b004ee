# TSymbiote. `make` lists the targets. A fresh clone needs only `make test`
# (or `make demo`): both build their tools into ./bin first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

include hack/versions.env

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Go modules tested, linted and built, in dependency order.
MODULES := proto controlplane testkit adapter cni webui tsymbiote operator hack/demo hack/devcp hack/images hack/cluster hack/repocheck e2e
CHARTS := charts/tailscale-cni charts/tsymbiote-operator
FRONTEND := webui/frontend

# The CNI daemon embeds tailscale: stamp it with the pinned version so that the
# stock CLI talking to a pod's socket does not warn of a mismatch. Without the
# port mapper every pod can share one network monitor (see cni/README.md).
TS_VERSION_LDFLAGS := -X tailscale.com/version.longStamp=$(TAILSCALE_VERSION:v%=%) -X tailscale.com/version.shortStamp=$(TAILSCALE_VERSION:v%=%)

# `tsymbiote version` prints these; without them it reads what the Go
# toolchain recorded (GOFLAGS=-buildvcs=false leaves nothing).
TSYMBIOTE_LDFLAGS := -X tsymbiote.dhouti.dev/tsymbiote.version=$(shell git describe --tags --always --dirty 2>/dev/null || echo devel) -X tsymbiote.dhouti.dev/tsymbiote.revision=$(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD 2>/dev/null || echo +dirty)

GO_TEST_FLAGS ?= -race -count=1 -timeout 45m
GOLANGCI_LINT := $(BIN)/golangci-lint

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_%-]+:.*## / {sub(/%/, "<module>", $$1); printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned tools and test servers into ./bin (cached by version).
	@hack/tools.sh

.PHONY: generate
generate: tools ## Regenerate the protos' Go code, the operator's CRDs, RBAC and webhook manifests, and the WebUI's TypeScript API types.
	cd proto && $(BIN)/buf generate
	operator/hack/generate.sh
	cd webui && go run ./cmd/gen-api-types

.PHONY: check-generate
check-generate: ## Fail if `make generate` changes any file (untracked ones too).
	@before=$$(hack/tree-state.sh); \
	$(MAKE) --no-print-directory generate >/dev/null; \
	after=$$(hack/tree-state.sh); \
	if [ "$$before" != "$$after" ]; then \
	  echo "make generate changed the tree; run it and commit the result:" >&2; \
	  git status --short >&2; git --no-pager diff --stat >&2; exit 1; \
	fi; echo "generated code is up to date"

.PHONY: lint
lint: tools ## Run golangci-lint in every module and buf lint on the protos.
	@for m in $(MODULES); do echo "lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --allow-serial-runners --timeout 10m ./...); done
	cd proto && $(BIN)/buf lint

.PHONY: deps
deps: ## Install the Debian packages the tests use (Chromium for the browser tests; containerd, runc and iptables for the node), if missing.
	@hack/apt.sh chromium iproute2 containerd iptables

.PHONY: frontend
frontend: ## Install the WebUI's npm packages and build it into webui/frontend/dist (embedded by go:embed).
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && npm run build

.PHONY: test-frontend
test-frontend: frontend ## Run the frontend's Vitest unit tests.
	cd $(FRONTEND) && npm test

.PHONY: charts
charts: tools ## helm lint and helm template every chart.
	@for c in $(CHARTS); do \
	  for v in "" $$(ls $$c/ci/*-values.yaml 2>/dev/null); do \
	    $(BIN)/helm lint --strict $$c $${v:+-f $$v} >/dev/null || exit 1; \
	    $(BIN)/helm template test $$c $${v:+-f $$v} >/dev/null || exit 1; \
	    echo "$$c lints and renders$${v:+ with $$v}"; \
	  done; \
	done

.PHONY: build
build: frontend ## Build every module, in the workspace and alone (GOWORK=off).
	@for m in $(MODULES); do echo "build $$m"; (cd $$m && go build ./... && GOWORK=off go build ./...); done

.PHONY: binaries
binaries: frontend ## Build the project's binaries into ./bin.
	go build -o $(BIN)/tsymbiote-adapter ./adapter/cmd/tsymbiote-adapter
	go build -o $(BIN)/tsymbiote-webui ./webui/cmd/tsymbiote-webui
	go build -o $(BIN)/tailscale-cni ./cni/cmd/tailscale-cni
	go build -tags ts_omit_portmapper -ldflags "$(TS_VERSION_LDFLAGS)" -o $(BIN)/tailscale-cni-daemon ./cni/cmd/tailscale-cni-daemon
	go build -o $(BIN)/install-cni ./cni/cmd/install-cni
	go build -o $(BIN)/tsymbiote-operator ./operator/cmd/tsymbiote-operator
	go build -o $(BIN)/tsymbiote-demo ./hack/demo
	go build -ldflags "$(TSYMBIOTE_LDFLAGS)" -o $(BIN)/tsymbiote ./tsymbiote/cmd/tsymbiote
	go build -o $(BIN)/kubectl-tsymbiote ./tsymbiote/cmd/kubectl-tsymbiote
	go build -o $(BIN)/tsymbiote-devcp ./hack/devcp
	go build -o $(BIN)/tsymbiote-cluster ./hack/cluster

# IMAGES names some images (make images IMAGES="operator webui"); empty is all.
# IMAGES_PUSH, a registry prefix, also pushes them there (see hack/images).
IMAGES ?=
IMAGES_PUSH ?=

.PHONY: images
images: tools frontend ## Build the container images (the charts' and the tests') into ./bin/images as tarballs, without Docker.
	go run ./hack/images --out $(BIN)/images $(if $(IMAGES_PUSH),--push $(IMAGES_PUSH)) $(IMAGES)

.PHONY: cluster
cluster: tools deps images ## Run a one-node Kubernetes cluster (root) with the images loaded and a Headscale, until Ctrl-C; prints the kubeconfig.
	go build -o $(BIN)/tsymbiote-cluster ./hack/cluster
	$(BIN)/tsymbiote-cluster --images $(BIN)/images

.PHONY: test
test: tools deps lint check-generate charts test-frontend build images ## Everything CI runs: lint, generated-code check, charts, frontend units, images, every module's tests with -race (the last, e2e, installs the charts on a real node), and a check that they left nothing behind.
	@hack/leftovers.sh snapshot $(BIN)/.before-tests
	@for m in $(MODULES); do echo "test $$m"; (cd $$m && go test $(GO_TEST_FLAGS) ./...); done
	@hack/leftovers.sh check $(BIN)/.before-tests

# The other test tiers (CONTRIBUTING.md says which to run when): unit is fast
# and needs neither root nor ./bin, test-<module> is one module in full, e2e
# is only the tests that need real servers or root.

# UNIT_FLAGS keeps go test's result cache: a unit run after a small change
# reruns only the packages it touches. Add -count=1 to rerun everything.
# unit goes on past a failing module so that one run names every failure.
UNIT_FLAGS ?= -short

.PHONY: unit
unit: frontend-deps ## Fast tier: every module's tests with -short (no root, no servers, no ./bin) and the frontend's Vitest units.
	@failed=; \
	for m in $(MODULES); do echo "unit $$m"; (cd $$m && go test $(UNIT_FLAGS) ./...) || failed="$$failed $$m"; done; \
	echo "unit frontend"; (cd $(FRONTEND) && npm test) || failed="$$failed frontend"; \
	if [ -n "$$failed" ]; then echo "make unit: failed in$$failed" >&2; exit 1; fi

# npm writes node_modules/.package-lock.json on every install, so npm ci runs
# again only when package-lock.json changed since.
$(FRONTEND)/node_modules/.package-lock.json: $(FRONTEND)/package-lock.json
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error

.PHONY: frontend-deps
frontend-deps: $(FRONTEND)/node_modules/.package-lock.json ## Install the WebUI's npm packages if package-lock.json changed (no build).

# test-<module>, one per module, named by the last element of its directory
# (test-cni, test-demo, test-repocheck): its lint, then its full tests with
# -race, then the leftovers check. The WebUI's and the demo's tests drive
# the built frontend in Chromium.
define module_test_rule
.PHONY: test-$(notdir $(1))
test-$(notdir $(1)): tools $(if $(filter webui hack/demo,$(1)),deps frontend) $(if $(filter testkit hack/cluster e2e,$(1)),deps images)
	@echo "lint $(1)"; cd $(1) && $$(GOLANGCI_LINT) run --allow-serial-runners --timeout 10m ./...
	@hack/leftovers.sh snapshot $$(BIN)/.before-tests-$(notdir $(1))
	cd $(1) && go test $$(GO_TEST_FLAGS) ./...
	@hack/leftovers.sh check $$(BIN)/.before-tests-$(notdir $(1))
endef
$(foreach m,$(MODULES),$(eval $(call module_test_rule,$(m))))

# Only names that no module rule above claims reach this one.
test-%: ## One module's lint, full tests with -race and leftovers check: test-cni, test-webui, test-demo, ... (test-frontend: Vitest).
	@echo "make test-$*: no module $*; the modules are: $(notdir $(MODULES))" >&2; exit 2

# e2e runs the packages whose tests depend on testkit (directly, through one
# of its packages or through a helper such as operator/internal/testenv), the
# kit every test that needs a real server, root or a pinned binary goes
# through, in full; go list finds them, so a new one needs no Makefile change.
E2E_PKGS = go list -test -f '{{if .ForTest}}{{.ForTest}}{{range .Deps}} {{.}}{{end}}{{end}}' ./... | awk '/ tsymbiote\.dhouti\.dev\/testkit($$| |\/)/ {print $$1}' | sort -u

.PHONY: e2e
e2e: tools deps frontend images ## Only the integration tests: every package whose tests use testkit (real servers, root), with -race and the leftovers check.
	@hack/leftovers.sh snapshot $(BIN)/.before-tests
	@for m in $(MODULES); do \
	  pkgs=$$(cd $$m && $(E2E_PKGS)); \
	  if [ -n "$$pkgs" ]; then echo "e2e $$m"; (cd $$m && go test $(GO_TEST_FLAGS) $$pkgs); fi; \
	done
	@hack/leftovers.sh check $(BIN)/.before-tests

.PHONY: bench
bench: tools deps frontend ## Run the benchmarks and print their figures (the CNI's are in bench-cni).
	@for m in $(filter-out cni,$(MODULES)); do (cd $$m && go test -run='^$$' -bench=. -benchmem -timeout 60m ./...); done
	cd cni && go test -run='^$$' -bench=. -benchmem $$(go list ./... | grep -v /e2e)

# bench-cni's knobs (or their TSYMBIOTE_BENCH_* environment variables):
# BENCH_BATCHING=short runs Headscale with the shortened batching tests use
# instead of its own (default), BENCH_PODS the pods on the node (default 110),
# BENCH_POOL the daemon's node pool (default 2; 0 turns it off).
BENCH_BATCHING ?= $(TSYMBIOTE_BENCH_BATCHING)
BENCH_PODS ?= $(TSYMBIOTE_BENCH_PODS)
BENCH_POOL ?= $(TSYMBIOTE_BENCH_POOL)

.PHONY: bench-cni
bench-cni: tools ## The CNI benchmark (root): ADD latency, readiness, RSS per pod, idle logs, iperf3 against baselines.
	cd cni && TSYMBIOTE_BENCH_BATCHING=$(BENCH_BATCHING) TSYMBIOTE_BENCH_PODS=$(BENCH_PODS) TSYMBIOTE_BENCH_POOL=$(BENCH_POOL) \
		go test -run='^$$' -bench='BenchmarkCNI|BenchmarkThroughput' -benchtime=1x -timeout 60m -v ./e2e

.PHONY: demo
demo: tools deps binaries ## Start the demo: local Headscale, 4 tailscaled nodes with adapters, WebUI on http://127.0.0.1:3621.
	$(BIN)/tsymbiote-demo --bin $(BIN)

# The dev targets need no credentials: when the environment names no control
# plane, tsymbiote-devcp runs them against a local Headscale on loopback,
# shared by the dev targets running at once and stopped with the first one's
# Ctrl-C. With one (see the README), they run against it.
DEVCP = $(BIN)/tsymbiote-devcp --state $(BIN)/devcp
WEBUI_DEV_PORT ?= 3621

.PHONY: dev-binaries
dev-binaries: frontend-deps
	cd $(FRONTEND) && npm run build
	go build -ldflags "$(TSYMBIOTE_LDFLAGS)" -o $(BIN)/tsymbiote ./tsymbiote/cmd/tsymbiote
	go build -o $(BIN)/tsymbiote-devcp ./hack/devcp
	go build -o $(BIN)/tsymbiote-cluster ./hack/cluster

.PHONY: webui-dev
webui-dev: dev-binaries ## Build the frontend and run the WebUI with --dev on http://127.0.0.1:3621 (WEBUI_DEV_PORT).
	@hack/build-bin.sh headscale
	$(DEVCP) -- $(BIN)/tsymbiote webui --dev --port $(WEBUI_DEV_PORT) \
	  --generate-auth=$$(if [ -n "$${TS_AUTHKEY:-}" ]; then echo false; else echo true; fi)

.PHONY: web-dev
web-dev: frontend-deps ## Vite's dev server with hot reload, /api proxied to a running WebUI (TSYMBIOTE_WEBUI_URL, default http://127.0.0.1:3621).
	cd $(FRONTEND) && npx vite

.PHONY: adapter-dev
adapter-dev: dev-binaries ## Run an adapter for the WebUI: on webui-dev's tailnet, attached to a tailscaled of its own.
	@for b in headscale tailscaled tailscale; do hack/build-bin.sh $$b; done
	$(DEVCP) --tailscaled tsymbiote-dev-node --key-tag tag:tsymbiote-adapter -- \
	  $(BIN)/tsymbiote adapter --socket {socket}

.PHONY: clean
clean: ## Remove ./bin and test caches.
	rm -rf $(BIN)
	go clean -testcache
