# TSymbiote. `make` lists the targets. A fresh clone needs only `make test`
# (or `make demo`): both build their tools into ./bin first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

include hack/versions.env

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Go modules tested, linted and built, in dependency order. A module joins
# this list (and go.work) when its tests are real and green.
MODULES := controlplane proto hack/repocheck

GO_TEST_FLAGS ?= -race -count=1
GOLANGCI_LINT := $(BIN)/golangci-lint

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Build the pinned tools and test servers into ./bin (cached by version).
	@hack/tools.sh

.PHONY: generate
generate: tools ## Regenerate the protos' Go code.
	cd proto && $(BIN)/buf generate

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
	@for m in $(MODULES); do echo "lint $$m"; (cd $$m && $(GOLANGCI_LINT) run --timeout 10m ./...); done
	cd proto && $(BIN)/buf lint

.PHONY: build
build: ## Build every module, in the workspace and alone (GOWORK=off).
	@for m in $(MODULES); do echo "build $$m"; (cd $$m && go build ./... && GOWORK=off go build ./...); done

.PHONY: test
test: tools lint check-generate build ## Lint, check generated code, and run every module's tests with -race.
	@for m in $(MODULES); do echo "test $$m"; (cd $$m && go test $(GO_TEST_FLAGS) ./...); done

.PHONY: bench
bench: tools ## Run the benchmarks and print their figures.
	@for m in $(MODULES); do (cd $$m && go test -run='^$$' -bench=. -benchmem ./...); done

.PHONY: clean
clean: ## Remove ./bin and test caches.
	rm -rf $(BIN)
	go clean -testcache
