#!/usr/bin/env bash
# flb-mesh on a kind cluster, for users with Docker: make the cluster (../../kind-config.yaml: a
# control plane and two workers in two zones), build the two images from images/Dockerfile, load
# them into the nodes, install the chart, and run the smoke test: a labelled namespace's client
# calls the echo Service by name through its sidecar and reaches every echo pod.
# Usage: test-e2e/kind/run.sh [--cni] [--keep]
#   --cni   interception by the CNI node agent instead of an init container
#   --keep  leave the cluster up afterwards (kind delete cluster --name flb-mesh removes it)
# Needs docker, kind, kubectl and helm on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=flb-mesh
INTERCEPTION=iptables
KEEP=0
for arg in "$@"; do
  case $arg in
    --cni) INTERCEPTION=cni ;;
    --keep) KEEP=1 ;;
    *) echo "unknown option $arg (use --cni, --keep)" >&2; exit 2 ;;
  esac
done
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "$tool is not on PATH: this script needs docker, kind, kubectl and helm" >&2; exit 1; }
done
VERSION=$(node -p 'require("./package.json").version' 2>/dev/null || sed -n 's/^ *"version": "\(.*\)",$/\1/p' package.json | head -1)
step() { printf '\n==> %s\n' "$*" >&2; }

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config kind-config.yaml
[[ $KEEP == 1 ]] || trap 'kind delete cluster --name "$CLUSTER"' EXIT
export KUBECONFIG="${TMPDIR:-/tmp}/flb-mesh-kind.kubeconfig"
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

step "images $VERSION (the Dockerfile's Debian trixie bases made with docker instead of mmdebstrap)"
docker build -t flb-mesh-base:kind - <<'DOCKERFILE'
FROM debian:trixie-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs iptables && rm -rf /var/lib/apt/lists/*
DOCKERFILE
docker build -t flb-mesh-build-base:kind - <<'DOCKERFILE'
FROM debian:trixie-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs gcc libc6-dev libnode-dev libuv1-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
DOCKERFILE
for target in sidecar control-plane; do
  image=flomesh/flb-mesh:$VERSION
  [[ $target == control-plane ]] && image=flomesh/flb-mesh-control-plane:$VERSION
  docker build -f images/Dockerfile --target "$target" -t "$image" \
    --build-arg RUNTIME_BASE=flb-mesh-base:kind --build-arg BUILD_BASE=flb-mesh-build-base:kind .
  kind load docker-image --name "$CLUSTER" "$image"
done

step "the chart (interception: $INTERCEPTION)"
helm upgrade --install flb-mesh charts/flb-mesh --namespace flomesh --create-namespace \
  --set mesh.interception.mode="$INTERCEPTION" --set image.pullPolicy=Never --wait --timeout 5m

step "smoke test: a client calls http://echo/ by name through its sidecar"
sed "s/FLB_VERSION/$VERSION/g" test-e2e/kind/smoke.yaml | kubectl apply -f -
kubectl -n flb-smoke rollout status deployment/echo --timeout 3m
kubectl -n flb-smoke rollout status deployment/client --timeout 3m
kubectl -n flb-smoke get pod -l app=client -o jsonpath='{.items[0].spec.initContainers[*].name}' | grep -qw flb-sidecar \
  || { echo "the client pod has no flb-sidecar: was it injected? (kubectl -n flomesh logs deploy/flb-injector)" >&2; exit 1; }
stats() { kubectl -n flb-smoke exec deploy/client -c client -- node -e \
  'fetch("http://127.0.0.1:8081/stats").then((r) => r.text()).then((t) => process.stdout.write(t))'; }
for _ in $(seq 60); do
  # Every echo pod answered, and nothing failed since the counts were reset.
  if stats | node -e '
    const s = JSON.parse(require("fs").readFileSync(0, "utf8"));
    process.exit(Object.keys(s.byPod).length === 3 && s.ok >= 30 && s.failed === 0 ? 0 : 1);'; then
    stats; echo; echo "smoke test passed" >&2; exit 0
  fi
  # The first calls may go out before the sidecar has the catalog: count from now on.
  kubectl -n flb-smoke exec deploy/client -c client -- node -e 'fetch("http://127.0.0.1:8081/reset", { method: "POST" })' >/dev/null
  sleep 5
done
stats; echo "smoke test failed: the client did not reach all three echo pods without failures within 5 minutes" >&2
exit 1
