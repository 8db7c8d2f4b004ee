#!/usr/bin/env bash
# generate.sh: regenerates the operator's deepcopy code and, from the kubebuilder
# markers, its CRD, RBAC role and webhook manifests under operator/config/; then
# copies the CRD into the Helm chart. `make generate` runs it; the generated
# files are committed, and `make check-generate` fails when they drift.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(cd .. && pwd)
cg=${CONTROLLER_GEN:-$root/bin/controller-gen}
if [ ! -x "$cg" ]; then
  echo "generate.sh: $cg missing: run \`make tools\`" >&2
  exit 1
fi
export GOWORK=off
"$cg" object paths=./api/...
# The access API lives in the shared proto module (the WebUI uses it too);
# its CRDs install with the operator's.
(cd "$root/proto" && "$cg" object paths=./access/... && \
  "$cg" crd paths=./access/... output:crd:artifacts:config="$root/operator/config/crd/bases")
"$cg" crd paths=./api/... output:crd:artifacts:config=config/crd/bases
"$cg" rbac:roleName=tsymbiote-operator paths=./internal/... output:rbac:artifacts:config=config/rbac
"$cg" webhook paths=./internal/webhook/... output:webhook:artifacts:config=config/webhook
mkdir -p "$root/charts/tsymbiote-operator/crds"
cp config/crd/bases/tsymbiote.dhouti.dev_tsymbiotes.yaml \
  config/crd/bases/access.tsymbiote.dhouti.dev_accesstargets.yaml \
  config/crd/bases/access.tsymbiote.dhouti.dev_accessrequests.yaml \
  config/crd/bases/tsymbiote.dhouti.dev_subnetrouters.yaml \
  "$root/charts/tsymbiote-operator/crds/"
