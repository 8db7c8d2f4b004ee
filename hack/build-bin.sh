#!/usr/bin/env bash
# build-bin.sh NAME: builds one pinned server binary into ./bin, named with its
# version, from its build module under hack/, unless it is already there.
# ./bin/NAME is a symlink to the versioned file, for people and scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=versions.env
. hack/versions.env
mkdir -p bin

name=$1
case $name in
  headscale)               mod=headscale;  pkg=github.com/juanfont/headscale/cmd/headscale; ver=$HEADSCALE_VERSION ;;
  tailscaled)              mod=tailscale;  pkg=tailscale.com/cmd/tailscaled;  ver=$TAILSCALE_VERSION ;;
  tailscale)               mod=tailscale;  pkg=tailscale.com/cmd/tailscale;   ver=$TAILSCALE_VERSION ;;
  etcd)                    mod=etcd;       pkg=go.etcd.io/etcd/server/v3;     ver=$ETCD_VERSION ;;
  kube-apiserver)          mod=kubernetes; pkg=k8s.io/kubernetes/cmd/kube-apiserver;          ver=$KUBERNETES_VERSION ;;
  kube-controller-manager) mod=kubernetes; pkg=k8s.io/kubernetes/cmd/kube-controller-manager; ver=$KUBERNETES_VERSION ;;
  kube-scheduler|kubelet|kube-proxy|kubectl) mod=kubernetes; pkg=k8s.io/kubernetes/cmd/$name; ver=$KUBERNETES_VERSION ;;
  cni-bridge|cni-ptp|cni-loopback) mod=cni-plugins; pkg=github.com/containernetworking/plugins/plugins/main/${name#cni-}; ver=$CNI_PLUGINS_VERSION ;;
  cni-host-local)          mod=cni-plugins; pkg=github.com/containernetworking/plugins/plugins/ipam/host-local; ver=$CNI_PLUGINS_VERSION ;;
  *) echo "build-bin.sh: unknown binary $name" >&2; exit 2 ;;
esac

out=bin/$name-$ver
if [ ! -x "$out" ]; then
  ldflags="-s -w"
  case $mod in
    # Without this the Kubernetes servers report v0.0.0-master, which clients reject.
    kubernetes) ldflags="$ldflags -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$ver" | cut -d. -f2)" ;;
    tailscale) ldflags="$ldflags -X tailscale.com/version.longStamp=${ver#v} -X tailscale.com/version.shortStamp=${ver#v}" ;;
  esac
  echo "building $out" >&2
  start=$(date +%s)
  (cd "hack/$mod" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "../../$out.tmp" "$pkg")
  mv "$out.tmp" "$out"
  echo "built $out in $(( $(date +%s) - start ))s" >&2
fi
ln -sfn "$name-$ver" "bin/$name"
