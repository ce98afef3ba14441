#!/usr/bin/env bash
# Installs everything flb-mesh needs on a fresh Debian machine with Node 20, Go and Maven:
# Debian packages, npm packages, the build, and the test servers built from their Go modules.
# Safe to run again: each step is skipped when its inputs have not changed.
# Usage: scripts/setup.sh [--for start|test]
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PURPOSE=test
if [[ "${1:-}" == "--for" ]]; then PURPOSE=${2:-test}; fi

CACHE=${FLB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flb-mesh}
mkdir -p "$CACHE/bin"
export GOCACHE="$CACHE/go/build" GOMODCACHE="$CACHE/go/mod" GOTOOLCHAIN=local GOFLAGS=-mod=readonly

step() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf '\nsetup failed: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

step "checking tools"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || die "Node.js 20.19 or newer is needed (found $(node --version 2>/dev/null || echo none))"
command -v go >/dev/null || die "Go 1.26 or newer is needed to build the test servers (etcd, kube-apiserver); install it and put it on PATH"
go_version=$(go env GOVERSION)
[[ "$(printf '%s\n' go1.26 "$go_version" | sort -V | head -1)" == go1.26 ]] || die "Go 1.26 or newer is needed (found $go_version)"
info "node $(node --version), $go_version, cache $CACHE"

step "Debian packages"
mapfile -t wanted < <(grep -vE '^\s*(#|$)' scripts/apt-packages.txt)
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  info "installing: ${missing[*]}"
  SUDO=; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} with your package manager"
  $SUDO apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || die "apt-get install ${missing[*]} failed"
else
  info "all present: ${wanted[*]}"
fi

step "npm packages"
lock_hash=$(hash_of package-lock.json package.json)
if [[ -d node_modules && "$(cat node_modules/.flb-lock-hash 2>/dev/null)" == "$lock_hash" ]]; then
  info "node_modules matches package-lock.json"
else
  info "npm ci (also builds the native code and the TypeScript)"
  npm ci --no-audit --no-fund >&2 || die "npm ci failed"
  echo "$lock_hash" > node_modules/.flb-lock-hash
fi

step "test servers (built from their Go modules, cached in $CACHE/bin)"
# build_server NAME FOLDER "BINARIES" "LDFLAGS" GO-PACKAGES...
build_server() {
  local name=$1 dir=$2 binaries=$3 ldflags="-s -w $4"; shift 4
  local stamp="$CACHE/bin/.$name.stamp" want
  want=$(cd "$dir" && hash_of go.mod go.sum $(ls *.go 2>/dev/null) <(echo "$go_version $ldflags $*"))
  local all_there=1
  for bin in $binaries; do [[ -x "$CACHE/bin/$bin" ]] || all_there=0; done
  if [[ $all_there == 1 && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    info "$name: up to date"
    return
  fi
  info "$name: building $binaries (a cold build takes several minutes on 2 cores; progress every 30 s)"
  local started=$SECONDS log="$CACHE/build-$name.log"
  ( cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$CACHE/bin/" "$@" ) >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if (( (SECONDS - started) % 30 < 5 )); then
      info "$name: still building, $((SECONDS - started)) s, Go build cache $(du -sh "$GOCACHE" 2>/dev/null | cut -f1)"
    fi
  done
  wait "$pid" || { tail -30 "$log" >&2; die "building $name failed (full log: $log)"; }
  echo "$want" > "$stamp"
  info "$name: built in $((SECONDS - started)) s"
  BUILT_SOMETHING=1
}
BUILT_SOMETHING=0
build_server etcd test-e2e/servers/etcd "etcd" "" .
# Built from the module, Kubernetes would report v0.0.0-master+$Format:%H$ (its release scripts
# stamp the version from git), which kubectl cannot parse and the injector's native-sidecar
# detection reads as too old: stamp the pinned module's version, as a release build has it.
kube_version=$(cd test-e2e/servers/kube && go mod edit -json | node -e '
  const { Require = [] } = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const kube = Require.find((r) => r.Path === "k8s.io/kubernetes");
  if (!kube || !/^v\d+\.\d+\.\d+$/.test(kube.Version)) process.exit(1);
  console.log(kube.Version);
') || die "test-e2e/servers/kube/go.mod does not require k8s.io/kubernetes at a release version (vX.Y.Z)"
[[ $kube_version =~ ^v([0-9]+)\.([0-9]+)\. ]]
kube_ldflags=""
for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $package.gitVersion=$kube_version -X $package.gitMajor=${BASH_REMATCH[1]} -X $package.gitMinor=${BASH_REMATCH[2]}"
done
# The kubelet is for the real-kubelet end-to-end test (devenv/real-kubelet/), with Debian's containerd.
build_server kubernetes test-e2e/servers/kube "kube-apiserver kube-controller-manager kubectl kubelet" "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet
# helm, for the chart's tests. Stamped as helm's Makefile does: its version, and the Kubernetes
# version of its client-go as what `helm template` and `helm lint` assume without a cluster.
helm_versions=$(cd test-e2e/servers/helm && go mod edit -json | node -e '
  const { Require = [] } = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const version = (path) => Require.find((r) => r.Path === path)?.Version ?? "";
  const helm = version("helm.sh/helm/v3"), clientGo = /^v0\.(\d+)\.\d+$/.exec(version("k8s.io/client-go"));
  if (!/^v3\.\d+\.\d+$/.test(helm) || !clientGo) process.exit(1);
  console.log(helm, clientGo[1]);
') || die "test-e2e/servers/helm/go.mod does not require helm.sh/helm/v3 and k8s.io/client-go at release versions"
read -r helm_version helm_kube_minor <<<"$helm_versions"
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$helm_version"
for package in pkg/lint/rules pkg/chartutil; do
  helm_ldflags+=" -X helm.sh/helm/v3/$package.k8sVersionMajor=1 -X helm.sh/helm/v3/$package.k8sVersionMinor=$helm_kube_minor"
done
build_server helm test-e2e/servers/helm "helm" "$helm_ldflags" helm.sh/helm/v3/cmd/helm

step "Eureka server (Spring Cloud Netflix, built with Maven into $CACHE/eureka)"
# Its Maven repository stays in the cache (about 100 MB), so a rebuild after the first runs offline.
command -v mvn >/dev/null && command -v java >/dev/null || die "Maven and a Java 17 JDK are needed to build the test Eureka server (Debian: apt-get install maven openjdk-17-jdk-headless)"
eureka_dir=test-e2e/servers/eureka eureka_cache="$CACHE/eureka"
eureka_want=$(cd "$eureka_dir" && hash_of pom.xml $(find src -type f | sort) <(java -version 2>&1 | head -1))
if [[ -f "$eureka_cache/eureka-server.jar" && "$(cat "$eureka_cache/.stamp" 2>/dev/null)" == "$eureka_want" ]]; then
  info "eureka: up to date"
else
  started=$SECONDS log="$CACHE/build-eureka.log"
  mvn_eureka() { (cd "$eureka_dir" && mvn -B -ntp -Dmaven.repo.local="$eureka_cache/repository" -Dflb.build.directory="$eureka_cache/build" -DskipTests "$@" package) >"$log" 2>&1; }
  if [[ -d "$eureka_cache/repository" ]] && mvn_eureka -o; then
    info "eureka: built offline from the cached Maven repository"
  else
    info "eureka: resolving from Maven Central and building"
    mvn_eureka || { tail -30 "$log" >&2; die "building the Eureka server failed (full log: $log)"; }
  fi
  mv "$eureka_cache/build/eureka-server.jar" "$eureka_cache/eureka-server.jar" && rm -rf "$eureka_cache/build"
  echo "$eureka_want" > "$eureka_cache/.stamp"
  info "eureka: built in $((SECONDS - started)) s"
fi

# Consul v1.16.1, the last release under the MPL-2.0 (test-e2e/servers/consul/go.mod says why it
# is built from a module of our own). Cold: about 2.2 GB of modules and 7 CPU-minutes.
build_server consul test-e2e/servers/consul "consul" "" .

if [[ $BUILT_SOMETHING == 1 && -z "${FLB_KEEP_GO_CACHE:-}" ]]; then
  # Only the binaries are needed from here on; the Go caches (about 4 GB) would only speed up a
  # rebuild after a version bump. FLB_KEEP_GO_CACHE=1 keeps them.
  info "removing the Go build and module caches ($(du -sh "$CACHE/go" 2>/dev/null | cut -f1)); binaries stay"
  go clean -cache -modcache >/dev/null 2>&1 || true
  rm -rf "$CACHE/go"
fi

step "native code (sidecar/native addon, cni/plugin), with their sanitizer builds for the tests"
# npm ci has built the addon and the plugin (package.json's install script); the same script adds
# the AddressSanitizer/UBSan builds (build/asan/) and the plugin's libFuzzer target.
bash scripts/build-native.sh --sanitizers || exit 1

step "build"
npm run --silent build >&2 || die "the TypeScript build failed"

info "setup done for '$PURPOSE' ($(du -sh "$CACHE" 2>/dev/null | cut -f1) in $CACHE)"
