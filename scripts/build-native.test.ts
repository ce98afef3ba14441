import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// What `npm ci` runs (package.json's install script), on a copy of package.json and the C sources
// in a folder of their own, so the checkout's builds are never touched.
const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const ADDON = 'sidecar/native/build/flb-sidecar.node';
const PLUGIN = 'cni/plugin/build/flb-cni';

function checkoutOfTheCSources(): string {
  const dir = mkdtempSync(join(tmpdir(), 'flb-build-native-'));
  for (const folder of ['scripts', 'sidecar/native', 'cni/plugin']) mkdirSync(join(dir, folder), { recursive: true });
  copyFileSync(join(repoRoot, 'package.json'), join(dir, 'package.json'));
  copyFileSync(join(repoRoot, 'scripts/build-native.sh'), join(dir, 'scripts/build-native.sh'));
  for (const name of readdirSync(join(repoRoot, 'sidecar/native')).filter((n) => /\.[ch]$/.test(n))) {
    copyFileSync(join(repoRoot, 'sidecar/native', name), join(dir, 'sidecar/native', name));
  }
  copyFileSync(join(repoRoot, 'cni/plugin/flb-cni.c'), join(dir, 'cni/plugin/flb-cni.c'));
  return dir;
}

/** A folder for PATH holding only the named programs (links to the real ones). */
function pathWith(dir: string, programs: Record<string, string>): string {
  const bin = join(dir, 'path');
  mkdirSync(bin, { recursive: true });
  for (const [name, target] of Object.entries(programs)) symlinkSync(target, join(bin, name));
  return bin;
}

const which = (program: string) => spawnSync('bash', ['-c', `command -v ${program}`], { encoding: 'utf8' }).stdout.trim();
const buildNative = (dir: string, env: NodeJS.ProcessEnv = process.env) =>
  spawnSync(which('bash'), [join(dir, 'scripts/build-native.sh')], { cwd: dir, encoding: 'utf8', env });

describe('scripts/build-native.sh (the npm install step)', () => {
  const dirs: string[] = [];
  const fresh = () => {
    const dir = checkoutOfTheCSources();
    dirs.push(dir);
    return dir;
  };
  afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

  describe('with gcc and Node headers', () => {
    let dir: string;
    let first: ReturnType<typeof buildNative>;
    beforeAll(() => {
      dir = fresh();
      first = spawnSync('npm', ['run', 'install'], { cwd: dir, encoding: 'utf8' });
    });

    it('npm install builds an addon that loads into Node and a CNI plugin that runs', () => {
      expect({ status: first.status, stderr: first.stderr }).toEqual({ status: 0, stderr: expect.stringContaining(`built ${ADDON}`) });
      const addon = createRequire(import.meta.url)(join(dir, ADDON)) as Record<string, unknown>;
      expect(typeof addon.originalDestination).toBe('function');
      expect(typeof addon.createForwarder).toBe('function');
      const plugin = spawnSync(join(dir, PLUGIN), { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' });
      expect(plugin.status).toBe(0);
      expect(JSON.parse(plugin.stdout)).toMatchObject({ supportedVersions: expect.arrayContaining(['1.0.0']) });
    });

    it('and builds nothing again while the sources are unchanged', () => {
      const before = statSync(join(dir, ADDON)).mtimeMs;
      const again = buildNative(dir);
      expect(again.status).toBe(0);
      expect(again.stderr).toContain(`${ADDON}: up to date`);
      expect(again.stderr).toContain(`${PLUGIN}: up to date`);
      expect(statSync(join(dir, ADDON)).mtimeMs).toBe(before);
    });
  });

  it('without gcc: fails and says what to install', () => {
    const dir = fresh();
    const result = buildNative(dir, { PATH: pathWith(dir, { dirname: which('dirname'), node: process.execPath }) });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('gcc is not installed');
    expect(result.stderr).toContain('apt-get install gcc libc6-dev');
    expect(result.stderr).toContain('bash scripts/build-native.sh');
    expect(existsSync(join(dir, ADDON))).toBe(false);
  });

  it('with a Node that ships no C headers: fails and names the folder it looked in', () => {
    const dir = fresh();
    // process.execPath is where the binary was run from: a hard link (or copy) of node outside its install.
    const nodeWithoutHeaders = join(dir, 'node-without-headers/bin/node');
    mkdirSync(join(dir, 'node-without-headers/bin'), { recursive: true });
    try {
      linkSync(process.execPath, nodeWithoutHeaders);
    } catch {
      copyFileSync(process.execPath, nodeWithoutHeaders);
    }
    const result = buildNative(dir, { PATH: pathWith(dir, { dirname: which('dirname'), gcc: which('gcc'), node: nodeWithoutHeaders }) });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`Node's C headers are missing: no ${join(dir, 'node-without-headers/include/node')}/node_api.h`);
    expect(existsSync(join(dir, ADDON))).toBe(false);
  });
});
