#!/usr/bin/env node
// The installed `flb` runs the compiled build; `npm ci` (prepare) or `npm run build` makes it.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/flb.js', import.meta.url);
if (!existsSync(entry)) {
  console.error("flb: the build is missing (dist/cli/flb.js). Run 'npm run build' or 'npm ci' in the flb-mesh folder.");
  process.exit(1);
}
await import(entry.href);
