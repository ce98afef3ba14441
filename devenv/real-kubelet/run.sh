#!/bin/sh
# A real kubelet with containerd and runc as one node of the dev control plane: run.ts (README.md
# beside it), built into dist/ by `npm run build`. Runs until Ctrl-C / SIGTERM.
# Usage (as root, after scripts/setup.sh, `npm run build` and `node dist/devenv/images/main.js`):
#   devenv/real-kubelet/run.sh
root=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$root/dist/devenv/real-kubelet/run.js" ] || { echo "real-kubelet failed: $root/dist/devenv/real-kubelet/run.js is missing: run npm run build" >&2; exit 1; }
exec node "$root/dist/devenv/real-kubelet/run.js" "$@"
