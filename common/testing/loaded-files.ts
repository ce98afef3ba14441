// bin/flb.js run as a process, with every file Node resolved meanwhile: what a command on a pod's
// start path loads is part of what it costs (the sidecar and init container bundles, the
// postStart waiter), and a test says exactly which files those are. A loader hook (it runs on its
// own thread) writes each resolved URL down.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

export interface FlbRun {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Absolute paths of every file module Node resolved, sorted. */
  files: string[];
}

export function runFlbRecordingFiles(args: string[], env: Record<string, string> = {}): FlbRun {
  const work = mkdtempSync(join(tmpdir(), 'flb-loaded-files-'));
  try {
    const loaded = join(work, 'loaded.txt');
    writeFileSync(loaded, '');
    const hooks = join(work, 'hooks.mjs');
    writeFileSync(
      hooks,
      `import { appendFileSync } from 'node:fs';\nexport async function resolve(specifier, context, next) {\n  const result = await next(specifier, context);\n  appendFileSync(${JSON.stringify(loaded)}, result.url + '\\n');\n  return result;\n}\n`,
    );
    const register = join(work, 'register.mjs');
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const result = spawnSync(process.execPath, ['--import', pathToFileURL(register).href, join(repoRoot, 'bin', 'flb.js'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, FLB_LOG_LEVEL: 'silent', ...env },
    });
    const files = new Set(
      readFileSync(loaded, 'utf8')
        .split('\n')
        .filter((url) => url.startsWith('file:'))
        .map((url) => fileURLToPath(url)),
    );
    return { status: result.status, stdout: result.stdout, stderr: result.stderr, files: [...files].sort() };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
