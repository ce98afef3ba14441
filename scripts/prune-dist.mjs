// Removes compiled files from dist/ whose TypeScript source is gone (tsc never deletes): a file
// moved or deleted kept working from its stale copy here, and an import of the old path passed on
// this machine and failed on a fresh clone. Run by `npm run build` after tsc. Files are removed one
// by one, never the folder, so a server running from dist/ meanwhile keeps its modules.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dist = join(root, 'dist');
const pruned = [];
function walk(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path);
    else {
      const compiled = /^(.*)\.js(\.map)?$/.exec(relative(dist, path));
      if (compiled && !existsSync(join(root, `${compiled[1]}.ts`))) {
        rmSync(path);
        pruned.push(relative(root, path));
      }
    }
  }
}
if (existsSync(dist)) walk(dist);
if (pruned.length > 0) process.stderr.write(`build: removed ${pruned.length} compiled file(s) whose source is gone: ${pruned.join(', ')}\n`);
