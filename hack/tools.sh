#!/usr/bin/env bash
# tools.sh: builds everything the tests and the demo need into ./bin, from
# pinned versions only, skipping what is already there. A fresh clone needs
# nothing else (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin

# Development tools from hack/tools/go.mod `tool` directives. The stamp is keyed
# by the module's go.mod and go.sum, so a version bump rebuilds and nothing else does.
stamp=bin/.tools-$(cat hack/tools/go.mod hack/tools/go.sum | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "building development tools (buf, protoc-gen-go, protoc-gen-go-grpc, controller-gen, golangci-lint, helm)" >&2
  start=$(date +%s)
  (cd hack/tools && GOWORK=off GOBIN="$PWD/../../bin" go install -trimpath tool)
  rm -f bin/.tools-*
  touch "$stamp"
  echo "built development tools in $(( $(date +%s) - start ))s" >&2
fi

# Real servers the tests run against, each named with its version.
for b in headscale tailscaled tailscale etcd kube-apiserver kube-controller-manager \
         kube-scheduler kubelet kube-proxy kubectl \
         cni-bridge cni-ptp cni-host-local cni-loopback; do
  hack/build-bin.sh "$b"
done
