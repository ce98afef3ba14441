#!/usr/bin/env node
// The installed `flb` runs the compiled build; `npm ci` (prepare) or `npm run build` makes it.
import { existsSync } from 'node:fs';

const [command, subcommand] = process.argv.slice(2);
const built = (path) => {
  const url = new URL(`../dist/${path}`, import.meta.url);
  return existsSync(url) ? url.href : undefined;
};

// Commands on a pod's start path load only their own modules: every injected pod runs them once,
// on the cores its sidecar and app are starting on. Each leaves anything it does not parse
// (--help, a bad flag) to the full CLI below, which answers with its usage errors.
let exitCode;
const waiter = command === 'sidecar' && subcommand === 'wait-ready' ? built('sidecar/wait-ready.js') : undefined;
if (waiter) exitCode = await (await import(waiter)).runWaitReady(process.argv.slice(4));

if (exitCode !== undefined) {
  process.exitCode = exitCode;
} else if (command === 'iptables' && built('iptables.bundle.mjs')) {
  // The init container of every injected pod (iptables mode): its bundle alone, for start-up CPU.
  const { runIptablesCommand } = await import(built('iptables.bundle.mjs'));
  process.exitCode = await runIptablesCommand(process.argv);
} else if (command === 'sidecar' && process.env.FLB_SIDECAR_UNBUNDLED !== '1' && built('sidecar.bundle.mjs')) {
  // `flb sidecar` runs next to every app: it loads its bundle alone, not the whole CLI (memory).
  const { runSidecarCommand } = await import(built('sidecar.bundle.mjs'));
  process.exitCode = await runSidecarCommand(process.argv);
} else {
  const entry = built('cli/flb.js');
  if (!entry) {
    console.error("flb: the build is missing (dist/cli/flb.js). Run 'npm run build' or 'npm ci' in the flb-mesh folder.");
    process.exit(1);
  }
  await import(entry);
}
