#!/usr/bin/env node
// The installed `flb` runs the compiled build; `npm ci` (prepare) or `npm run build` makes it.
import { existsSync } from 'node:fs';

// `flb sidecar` runs next to every app: it loads its bundle alone, not the whole CLI (memory).
const sidecarBundle = new URL('../dist/sidecar.bundle.mjs', import.meta.url);
if (process.argv[2] === 'sidecar' && process.env.FLB_SIDECAR_UNBUNDLED !== '1' && existsSync(sidecarBundle)) {
  const { runSidecarCommand } = await import(sidecarBundle.href);
  process.exitCode = await runSidecarCommand(process.argv);
} else {
  const entry = new URL('../dist/cli/flb.js', import.meta.url);
  if (!existsSync(entry)) {
    console.error("flb: the build is missing (dist/cli/flb.js). Run 'npm run build' or 'npm ci' in the flb-mesh folder.");
    process.exit(1);
  }
  await import(entry.href);
}
