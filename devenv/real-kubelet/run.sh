#!/usr/bin/env bash
# A real kubelet (v1.36, built from the pinned k8s.io/kubernetes module) with Debian's containerd
# 1.6 and runc, against the dev environment's control plane and flb-mesh's control plane (repo,
# bridge, injector), as one node named rk-node. No registry: every image is made or exported here
# and imported into containerd. Runs until Ctrl-C / SIGTERM, then deletes its pods and stops.
# Usage (as root, after scripts/setup.sh, `npm run build` and `node dist/devenv/images/main.js`):
#   devenv/real-kubelet/run.sh
# See README.md beside it for what each step is for and what this machine needed.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CACHE=${FLB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flb-mesh}
WORK=${FLB_REAL_KUBELET_DIR:-/tmp/flb-real-kubelet}
RUN=/run/flb-real-kubelet
NODE_NAME=rk-node
BRIDGE=rk0
GATEWAY=10.88.7.1
SUBNET=10.88.7.0/24
VERSION=$(node -p 'require("./package.json").version')
STORE=(--root "$CACHE/containers/storage" --runroot "/run/flb-mesh-containers-$(printf %s "$CACHE/containers/storage" | sha256sum | cut -c1-8)")
SOCKET=$RUN/containerd.sock

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '\nreal-kubelet failed: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (containerd, runc, the bridge)"

# What a run killed outright (SIGKILL: no trap) left: containerd's shims and the pods' processes
# (they outlive containerd by design), their mounts and network namespaces, the bridge.
remove_leftovers() {
  local pid
  for pid in $(grep -lsE "$WORK/|$RUN/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [[ $pid != "$$" ]] && kill -KILL "$pid" 2>/dev/null || true
  done
  # The pods' processes, in the kubelet's cgroups (cgroupfs driver; one such kubelet per machine).
  cat /sys/fs/cgroup/pids/kubepods*/**/cgroup.procs /sys/fs/cgroup/pids/kubepods*/cgroup.procs 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
  findmnt -rn -o TARGET | grep -E "^($WORK|$RUN)/" | sort -r | xargs -r umount -l 2>/dev/null || true
  local netns
  for netns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    ip -n "$netns" -4 addr 2>/dev/null | grep -q "inet ${GATEWAY%.*}\." && ip netns delete "$netns" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$WORK/state.json" "$WORK/kubelet" "$WORK/containerd" "$WORK"/mesh-* "$WORK/cni/ipam" "$RUN/containerd" "$SOCKET" "$SOCKET.ttrpc"
}
shopt -s globstar
remove_leftovers
mkdir -p "$WORK" "$RUN" "$CACHE/bin"

step "kubelet (built from test-e2e/servers/kube's pinned k8s.io/kubernetes, as setup.sh builds the apiserver)"
kube_version=$(cd test-e2e/servers/kube && go mod edit -json | node -e '
  const { Require = [] } = JSON.parse(require("fs").readFileSync(0, "utf8"));
  console.log(Require.find((r) => r.Path === "k8s.io/kubernetes").Version);')
if [[ "$("$CACHE/bin/kubelet" --version 2>/dev/null)" != "Kubernetes $kube_version" ]]; then
  [[ $kube_version =~ ^v([0-9]+)\.([0-9]+)\. ]] || die "k8s.io/kubernetes is not at a release version ($kube_version)"
  ldflags="-s -w"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $package.gitVersion=$kube_version -X $package.gitMajor=${BASH_REMATCH[1]} -X $package.gitMinor=${BASH_REMATCH[2]}"
  done
  # The kubelet needs two modules the apiserver does not (their go.sum lines are missing), so it is
  # built from a copy of the module that may add them.
  rm -rf "$WORK/kube-module" && mkdir -p "$WORK/kube-module" && cp test-e2e/servers/kube/{go.mod,go.sum,*.go} "$WORK/kube-module/"
  echo "    building (cold: about 13 min on 2 busy cores, at nice 19)" >&2
  (cd "$WORK/kube-module" && GOCACHE="$CACHE/go/build" GOMODCACHE="$CACHE/go/mod" GOTOOLCHAIN=local GOFLAGS="-mod=mod -p=2" \
    nice -n 19 go build -trimpath -ldflags="$ldflags" -o "$CACHE/bin/" k8s.io/kubernetes/cmd/kubelet)
fi
"$CACHE/bin/kubelet" --version >&2

step "containerd (Debian's 1.6) and runc"
command -v containerd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd >&2
command -v runc >/dev/null || die "runc is missing (scripts/apt-packages.txt installs it)"
containerd --version >&2

step "images: a pause image, the demo image, and flb-mesh's two images from the builder's store"
mkdir -p "$WORK/images"
if [[ ! -f "$WORK/images/pause.tar" ]]; then
  cat >"$WORK/images/pause.c" <<'EOF'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
EOF
  gcc -Os -static -s -o "$WORK/images/pause" "$WORK/images/pause.c"
  own=(--root "$WORK/buildah/storage" --runroot "$RUN/buildah")
  c=$(buildah "${own[@]}" from scratch)
  buildah "${own[@]}" copy "$c" "$WORK/images/pause" /pause >/dev/null
  buildah "${own[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah "${own[@]}" commit -q "$c" localhost/flb-pause:local >/dev/null
  buildah "${own[@]}" push -q localhost/flb-pause:local "docker-archive:$WORK/images/pause.tar:localhost/flb-pause:local"
fi
for image in flb-mesh flb-mesh-control-plane; do
  buildah "${STORE[@]}" inspect --type image "docker.io/flomesh/$image:$VERSION" >/dev/null 2>&1 \
    || die "docker.io/flomesh/$image:$VERSION is not in $CACHE/containers: run node dist/devenv/images/main.js first"
  rm -f "$WORK/images/$image.tar"
  buildah "${STORE[@]}" push -q "docker.io/flomesh/$image:$VERSION" "docker-archive:$WORK/images/$image.tar:docker.io/flomesh/$image:$VERSION"
done
# The demo apps are in the sidecar image (dist/devenv/apps); the demo image is that with their
# entrypoint, as nobody: the sidecar image's user is the proxy UID (1500), whose traffic the mesh never
# redirects, so a client running as it would bypass its sidecar (DNS included).
own=(--root "$WORK/buildah/storage" --runroot "$RUN/buildah")
c=$(buildah "${own[@]}" from -q "docker-archive:$WORK/images/flb-mesh.tar")
buildah "${own[@]}" config --entrypoint '["node","/opt/flb-mesh/dist/devenv/apps/demo.js"]' --cmd '[]' --user 65534:65534 "$c" 2>/dev/null
buildah "${own[@]}" commit -q --rm "$c" "docker.io/flomesh/flb-demo:$VERSION" >/dev/null
rm -f "$WORK/images/flb-demo.tar"
buildah "${own[@]}" push -q "docker.io/flomesh/flb-demo:$VERSION" "docker-archive:$WORK/images/flb-demo.tar:docker.io/flomesh/flb-demo:$VERSION"

step "pod network: bridge $BRIDGE ($GATEWAY) with Debian's bridge and host-local CNI plugins"
mkdir -p "$WORK/cni/net.d"
cat >"$WORK/cni/net.d/10-$BRIDGE.conflist" <<EOF
{ "cniVersion": "1.0.0", "name": "$BRIDGE", "plugins": [
  { "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
    "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$SUBNET" }]], "routes": [{ "dst": "0.0.0.0/0" }], "dataDir": "$WORK/cni/ipam" } } ] }
EOF
# Made before the first pod so that the repo can listen on the gateway address.
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr show dev "$BRIDGE" | grep -q "inet $GATEWAY/" || ip addr add "$GATEWAY/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

pids=()
cleanup() {
  trap - EXIT INT TERM
  if [[ -n "${kubelet_pid:-}" ]] && kill -0 "$kubelet_pid" 2>/dev/null; then
    echo "    deleting the pods (the kubelet stops their containers and tears down their network)" >&2
    "$CACHE/bin/kubectl" --kubeconfig "$KUBECONFIG" delete pods --all --all-namespaces --wait --timeout=60s >&2 || true
    kill "$kubelet_pid" && wait "$kubelet_pid" 2>/dev/null || true
  fi
  if [[ -S $SOCKET ]]; then
    # What the kubelet had no time to garbage-collect: tasks (their shims) and containers (their rootfs mounts).
    for task in $(ctr -a "$SOCKET" -n k8s.io tasks ls -q 2>/dev/null); do ctr -a "$SOCKET" -n k8s.io tasks rm -f "$task" >/dev/null 2>&1 || true; done
    for container in $(ctr -a "$SOCKET" -n k8s.io containers ls -q 2>/dev/null); do ctr -a "$SOCKET" -n k8s.io containers rm "$container" >/dev/null 2>&1 || true; done
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  findmnt -rn -o TARGET | grep -E "^($WORK|$RUN)/" | sort -r | xargs -r umount -l 2>/dev/null || true
  remove_leftovers
}
trap cleanup EXIT INT TERM

step "containerd on $SOCKET (runc, cgroupfs, sandbox image localhost/flb-pause:local)"
rm -rf "$WORK/containerd" && mkdir -p "$WORK/containerd"
cat >"$WORK/containerd/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$SOCKET"
[ttrpc]
  address = "$SOCKET.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/flb-pause:local"
  # These machines' bounding set has no CAP_SYS_RESOURCE: a negative oom_score_adj (the kubelet
  # asks -998 for every sandbox) fails runc with "can't get final child's PID from pipe: EOF".
  # This clamps it to containerd's own (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni/net.d"
EOF
setpriv --pdeathsig KILL -- containerd --config "$WORK/containerd/config.toml" >"$WORK/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do ctr -a "$SOCKET" version >/dev/null 2>&1 && break; kill -0 "${pids[-1]}" 2>/dev/null || die "containerd stopped (log: $WORK/containerd.log)"; sleep 0.2; done
for tar in pause flb-mesh flb-mesh-control-plane flb-demo; do
  ctr -a "$SOCKET" -n k8s.io images import "$WORK/images/$tar.tar" >/dev/null
done
ctr -a "$SOCKET" -n k8s.io images ls -q | grep -v '^sha256:' >&2

step "control plane (devenv/controlplane.ts) and flb-mesh's repo, bridge and injector (devenv/mesh.ts)"
rm -f "$WORK/state.json"
# pdeathsig TERM: if this script is killed outright, the plane and the mesh still stop in order.
GATEWAY=$GATEWAY WORK=$WORK ROOT=$ROOT setpriv --pdeathsig TERM -- node --input-type=module -e '
  const { startControlPlane } = await import(`${process.env.ROOT}/dist/devenv/controlplane.js`);
  const { startMeshComponents } = await import(`${process.env.ROOT}/dist/devenv/mesh.js`);
  const { mkdtempSync, writeFileSync } = await import("node:fs");
  const gateway = process.env.GATEWAY;
  const progress = (m) => console.error(`    ${m}`);
  const plane = await startControlPlane({ onProgress: progress, extraServingAddresses: [gateway] });
  // startMeshComponents reads only the plane, the gateway and a folder from the environment.
  const dir = mkdtempSync(`${process.env.WORK}/mesh-`);
  const mesh = await startMeshComponents({ plane, network: { gateway }, dir }, { onProgress: progress });
  writeFileSync(`${process.env.WORK}/state.json`, JSON.stringify({ kubeconfig: plane.kubeconfigPath, caFile: `${plane.dir}/ca.crt`, repoUrl: mesh.repoUrl }));
  const stop = async () => { await mesh.stop(); await plane.stop(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  setInterval(() => {}, 1 << 30);
' &
pids+=($!)
for _ in $(seq 600); do [[ -f $WORK/state.json ]] && break; kill -0 "${pids[-1]}" 2>/dev/null || die "the control plane did not start"; sleep 0.5; done
[[ -f $WORK/state.json ]] || die "the control plane did not start within 5 min"
KUBECONFIG=$(node -p "require('$WORK/state.json').kubeconfig")
ca_file=$(node -p "require('$WORK/state.json').caFile")

step "kubelet as node $NODE_NAME"
mkdir -p "$WORK/kubelet"
cat >"$WORK/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines mount cgroup v1 (v2 only at /sys/fs/cgroup/unified); 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCKET
address: 127.0.0.1
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: $ca_file }
authorization: { mode: AlwaysAllow }
resolvConf: /etc/resolv.conf
podLogsDir: $WORK/kubelet/pod-logs
# The disk is shared and may be nearly full; nothing here may be evicted or garbage-collected.
evictionHard: { memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
# The admin kubeconfig (system:masters) stands in for a node credential.
setpriv --pdeathsig KILL -- "$CACHE/bin/kubelet" --config="$WORK/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" --hostname-override="$NODE_NAME" \
  --root-dir="$WORK/kubelet/root" --cert-dir="$WORK/kubelet/pki" --v=2 >"$WORK/kubelet.log" 2>&1 &
kubelet_pid=$!
pids+=($kubelet_pid)
# kubectl wait fails at once on a Node that does not exist yet: wait for the registration first.
for _ in $(seq 120); do
  "$CACHE/bin/kubectl" --kubeconfig "$KUBECONFIG" get node "$NODE_NAME" >/dev/null 2>&1 && break
  kill -0 "$kubelet_pid" 2>/dev/null || break
  sleep 0.5
done
"$CACHE/bin/kubectl" --kubeconfig "$KUBECONFIG" wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >&2 \
  || { grep -E '^[EF][0-9]{4}' "$WORK/kubelet.log" | tail -20 >&2; die "node $NODE_NAME did not become Ready (log: $WORK/kubelet.log)"; }
cat >&2 <<EOF

Ready. In another shell:
  export KUBECONFIG=$KUBECONFIG
  $CACHE/bin/kubectl get nodes -o wide
Pods need spec.nodeName: $NODE_NAME (there is no scheduler) and local images (imagePullPolicy
IfNotPresent or Never): flomesh/flb-demo:$VERSION, flomesh/flb-mesh:$VERSION, flomesh/flb-mesh-control-plane:$VERSION.
Logs: $WORK/kubelet.log, $WORK/containerd.log, pod logs in $WORK/kubelet/pod-logs. Ctrl-C stops it all.
EOF
echo "KUBECONFIG=$KUBECONFIG"
wait "$kubelet_pid"
