#!/usr/bin/env bash
# Builds the C parts: the sidecar's N-API addon (sidecar/native: original destination, the L4
# forwarder), the CNI plugin (cni/plugin, static so hosts need no Node.js), the eBPF loader's addon
# (bpf/native) and the eBPF programs (bpf/src, clang -target bpf, skipped with a notice without clang
# and libbpf-dev). `npm ci` and `npm install` run it (package.json's install script), so the
# sidecar and the injector need only gcc, never Go; scripts/setup.sh runs it with --sanitizers.
# Plain gcc against the headers Node ships: node-gyp would download them. Each output is
# rebuilt only when one of its sources is newer.
# Usage: scripts/build-native.sh [--sanitizers]
#   --sanitizers  also the AddressSanitizer and UBSan builds (build/asan/) that scripts/test.sh runs
#                 the forwarder's and the CNI tests against, and the plugin's libFuzzer target.
set -euo pipefail

cd "$(dirname "$0")/.."
SANITIZERS=0
case "${1:-}" in
  --sanitizers) SANITIZERS=1 ;;
  '') ;;
  *) printf 'usage: scripts/build-native.sh [--sanitizers]\n' >&2; exit 2 ;;
esac

info() { printf '    %s\n' "$*" >&2; }
die() {
  printf '\nflb-mesh: building the native code failed: %s\n' "$1" >&2
  printf 'The sidecar (flb sidecar) and the CNI plugin need it. Fix the above, then run: bash scripts/build-native.sh\n' >&2
  exit 1
}

command -v gcc >/dev/null || die "gcc is not installed. The sidecar's addon and the CNI plugin are C compiled at install; install gcc and the C library's headers (Debian: apt-get install gcc libc6-dev)"
NODE_INCLUDE=$(node -p "require('path').resolve(process.execPath, '../../include/node')")
# libuv's header ships beside Node's in the nodejs.org builds; Debian's libnode-dev leaves it to
# libuv1-dev in /usr/include, which the compiler searches anyway.
[[ -f "$NODE_INCLUDE/node_api.h" && (-f "$NODE_INCLUDE/uv.h" || -f /usr/include/uv.h) ]] \
  || die "Node's C headers are missing: no $NODE_INCLUDE/node_api.h, or no uv.h beside it or in /usr/include ($(node -p process.execPath)). Install a Node.js that ships them (the nodejs.org builds and nodesource's nodejs do; Debian's nodejs needs libnode-dev and libuv1-dev)"

# stale OUTPUT SOURCES...: OUTPUT is missing or older than one of SOURCES.
stale() {
  local output=$1
  shift
  [[ ! -f $output ]] || [[ -n $(find "$@" -newer "$output" 2>/dev/null) ]]
}
# build OUTPUT WHAT SOURCES -- GCC-ARGS...: runs gcc when OUTPUT is stale.
build() {
  local output=$1 what=$2
  shift 2
  local sources=()
  while [[ $1 != -- ]]; do
    sources+=("$1")
    shift
  done
  shift
  if stale "$output" "${sources[@]}"; then
    mkdir -p "$(dirname "$output")"
    "$@" -o "$output" || die "compiling $what failed (the compiler's message is above)"
    info "built $output"
  else
    info "$output: up to date"
  fi
}

ADDON_SOURCES=(sidecar/native/*.c sidecar/native/*.h)
ADDON_FLAGS=(-Wall -Wextra -Werror -DNAPI_VERSION=8 -shared -fPIC -I"$NODE_INCLUDE")
PLUGIN_SOURCES=(cni/plugin/flb-cni.c)

build sidecar/native/build/flb-sidecar.node "the sidecar's addon (sidecar/native)" "${ADDON_SOURCES[@]}" -- \
  gcc -O2 "${ADDON_FLAGS[@]}" sidecar/native/*.c
build cni/plugin/build/flb-cni "the CNI plugin (cni/plugin; static linking needs libc6-dev)" "${PLUGIN_SOURCES[@]}" -- \
  gcc -O2 -Wall -Wextra -Werror -static cni/plugin/flb-cni.c
# eBPF interception (bpf/) is optional: iptables is the fallback, and `flb bpf check` names what is
# missing. Its programs need clang and libbpf's headers; without them the rest still builds. (Each
# part is built when its folder is there: a copy of only some C sources builds only those.)
if [[ -d bpf/native ]]; then
  build bpf/native/build/flb-bpf.node "the eBPF loader's addon (bpf/native)" bpf/native/*.c -- \
    gcc -O2 "${ADDON_FLAGS[@]}" bpf/native/*.c
fi
if [[ -d bpf/src ]] && command -v clang >/dev/null && [[ -f /usr/include/bpf/bpf_helpers.h ]]; then
  # Debian puts asm/ under the multiarch folder, which clang -target bpf does not search by itself.
  BPF_FLAGS=(-O2 -g -target bpf -Wall -Wextra -Werror -I"/usr/include/$(gcc -print-multiarch)" -c)
  build bpf/build/redirect.bpf.o "the eBPF programs (bpf/src)" bpf/src/*.c -- clang "${BPF_FLAGS[@]}" bpf/src/redirect.bpf.c
  for program in bpf/testing/*.bpf.c; do
    [[ -e $program ]] || continue # no test programs (an image's build context leaves bpf/testing out)
    build "bpf/build/testing/$(basename "$program" .c).o" "an eBPF test program ($program)" "$program" -- clang "${BPF_FLAGS[@]}" "$program"
  done
elif [[ -d bpf/src ]]; then
  info "eBPF programs not built: clang and libbpf's headers are needed (apt-get install clang libbpf-dev); eBPF interception stays unavailable, iptables works"
fi

((SANITIZERS)) || exit 0

SANITIZE=(-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
[[ "$(gcc -print-file-name=libasan.so)" == /* ]] || die "gcc's AddressSanitizer runtime is missing (libasan.so): apt-get install gcc (it brings libasan8)"
build sidecar/native/build/asan/flb-sidecar.node "the addon's sanitizer build" "${ADDON_SOURCES[@]}" -- \
  gcc "${SANITIZE[@]}" "${ADDON_FLAGS[@]}" sidecar/native/*.c
if [[ -d bpf/native ]]; then
  build bpf/native/build/asan/flb-bpf.node "the eBPF loader's addon, sanitizer build" bpf/native/*.c -- \
    gcc "${SANITIZE[@]}" "${ADDON_FLAGS[@]}" bpf/native/*.c
fi
# Dynamic: gcc refuses -static with AddressSanitizer.
build cni/plugin/build/asan/flb-cni "the CNI plugin's sanitizer build" "${PLUGIN_SOURCES[@]}" -- \
  gcc "${SANITIZE[@]}" -Wall -Wextra -Werror cni/plugin/flb-cni.c
command -v clang >/dev/null || die "clang is needed for the CNI plugin's fuzz target: apt-get install clang libclang-rt-14-dev"
build cni/plugin/build/fuzz/flb-cni-fuzz "the CNI plugin's fuzz target (clang -fsanitize=fuzzer needs libFuzzer: apt-get install libclang-rt-14-dev)" \
  "${PLUGIN_SOURCES[@]}" cni/plugin/fuzz/target.c -- \
  clang "${SANITIZE[@]}" -fsanitize=fuzzer -Wall -Wextra -Werror cni/plugin/fuzz/target.c
