#!/usr/bin/env bash
# The whole test suite, from a fresh machine: setup (packages, build, test servers), the
# TypeScript compiler, the linter, unit tests in parallel, then end-to-end tests in band
# (each starts real servers), then the native code's tests against its sanitizer builds.
# Usage: scripts/test.sh [--unit|--e2e] [jest args...]
set -uo pipefail

cd "$(dirname "$0")/.."
SCOPE=all
case "${1:-}" in --unit) SCOPE=unit; shift ;; --e2e) SCOPE=e2e; shift ;; esac

bash scripts/setup.sh --for test || exit 1

step() { printf '\n==> %s\n' "$*" >&2; }
started=$SECONDS
step "typecheck (tsc, sources and tests)"
npx --no-install tsc -p tsconfig.json --noEmit || exit 1
step "lint (prettier, eslint)"
npx --no-install prettier --check --log-level warn . || { echo "files above are not formatted: run 'npm run format'" >&2; exit 1; }
npx --no-install eslint --max-warnings 0 . || exit 1

export NODE_OPTIONS="--experimental-vm-modules --no-warnings=ExperimentalWarning ${NODE_OPTIONS:-}"
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
# Fuzz targets (common/testing/fuzz.ts) append their input counts and times here.
export FLB_FUZZ_REPORT="$results/fuzz.jsonl"
status=0
run_jest() {
  local project=$1; shift
  step "$project tests"
  npx --no-install jest --selectProjects "$project" --json --outputFile="$results/$project.json" "$@" || status=1
}
# Unit tests are CPU-light and parallel; e2e tests each start servers that want a core, so one at a time.
[[ $SCOPE == e2e ]] || run_jest unit --maxWorkers=2 "$@"
[[ $SCOPE == unit ]] || run_jest e2e --runInBand "$@"

# The forwarder's, the CNI plugin's and the eBPF loader's tests again, against their
# AddressSanitizer/UBSan builds (setup.sh, build/asan/). Node is not built with ASan, so an addon
# loads only with libasan preloaded, and only into that jest run (and the flb processes it starts);
# the plugin is its own (dynamic) executable. Reports go
# to files: any report fails the suite, even one a test did not notice. Skipped when jest was
# given arguments (a partial run).
sanitizer_logs="$results/sanitizers"
run_sanitized() {
  local name=$1; shift
  step "$name, sanitizer build (AddressSanitizer, UBSan)"
  mkdir -p "$sanitizer_logs"
  env FLB_NATIVE_BUILD=asan \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$sanitizer_logs/asan" \
    UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$sanitizer_logs/ubsan" \
    "$@" --json --outputFile="$results/sanitized-$name.json" || status=1
}
if (($# == 0)); then
  sanitized_started=$SECONDS
  [[ $SCOPE == e2e ]] || run_sanitized forwarder LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    npx --no-install jest --selectProjects unit --testPathPatterns sidecar/proxy/forwarding.test.ts
  [[ $SCOPE == unit ]] || run_sanitized cni npx --no-install jest --selectProjects e2e --runInBand --testPathPatterns test-e2e/cni.test.ts
  [[ $SCOPE == unit ]] || run_sanitized bpf LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
    npx --no-install jest --selectProjects e2e --runInBand --testPathPatterns 'test-e2e/bpf-(redirect|errors).test.ts'
  if compgen -G "$sanitizer_logs/*" >/dev/null; then
    status=1
    for report in "$sanitizer_logs"/*; do printf '\nsanitizer report %s:\n' "$report" >&2; head -60 "$report" >&2; done
  fi
  echo "(sanitizer runs took $((SECONDS - sanitized_started)) s)" >&2
fi

node -e '
  const fs = require("fs"); let passed = 0, failed = 0, suitesFailed = 0;
  for (const f of fs.readdirSync(process.argv[1]).filter((name) => name.endsWith(".json"))) {
    const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; suitesFailed += r.numRuntimeErrorTestSuites;
  }
  if (suitesFailed) console.log(`${suitesFailed} test files could not run`);
  console.log(`tests: ${passed} passed, ${failed + suitesFailed} failed`);
  const fuzzed = process.argv[1] + "/fuzz.jsonl";
  if (fs.existsSync(fuzzed)) {
    console.log("fuzz targets (generated inputs + corpus replayed, time):");
    for (const line of fs.readFileSync(fuzzed, "utf8").trim().split("\n")) {
      const r = JSON.parse(line);
      console.log(`  ${r.target.padEnd(32)} ${String(r.runs).padStart(8)} + ${String(r.replayed).padStart(4)}  ${(r.ms / 1000).toFixed(1)} s`);
    }
  }
' "$results"
echo "(test run took $((SECONDS - started)) s after setup)" >&2
exit $status
