import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { testBinary } from '../devenv/cache.js';
import { processesMentioning } from './harness/leftovers.js';
import { requireRoot } from './harness/netns.js';

const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

/** The last table the demo printed (tables are separated by a blank line and start with 'flb-mesh demo'). */
function lastTable(stdout: string): string {
  const at = stdout.lastIndexOf('flb-mesh demo, up');
  return at < 0 ? '' : stdout.slice(at);
}

describe('npm start (flb demo)', () => {
  it('shows a call by name balanced across pods that run, a pod deleted without a failed call, and removes everything on Ctrl-C', async () => {
    requireRoot('flb demo');
    const out = mkdtempSync(join(tmpdir(), 'flb-demo-test-'));
    const kubeconfig = join(out, 'kubeconfig');
    const demo = spawn(process.execPath, [flb, 'demo', '--kubeconfig-out', kubeconfig, '--delete-pod-after', '6s'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    demo.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    demo.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve));
    const waitFor = async (what: string, check: () => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!check()) {
        if (demo.exitCode !== null) throw new Error(`the demo exited (${demo.exitCode}) before ${what}:\n${stderr.slice(-3000)}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${stderr.slice(-3000)}\n${stdout.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    try {
      await waitFor('the mesh up', () => /the mesh is up in \d+ s/.test(stderr), 150_000);
      // Progress is readable lines, not JSON.
      expect(stderr).toMatch(/^\[\s*\d+\.\ds\] starting the registry bridge$/m);
      await waitFor('a pod deleted', () => /deleted pod echo-/.test(stdout), 30_000);
      const deletedAt = stdout.length;
      // The replacement becomes ready and takes calls too; none fails meanwhile. Waited for until
      // three pods have more than 10 calls each: a fast replacement can show four pods sooner.
      const perPod = (table: string) => [...table.matchAll(/^ {2}(echo-\S+)\s+(\d+)/gm)].map((m) => Number(m[2]));
      await waitFor(
        'calls spread over four echo pods since the deletion, three of them past 10',
        () => {
          const table = lastTable(stdout.slice(deletedAt));
          return (table.match(/^ {2}echo-\S+\s+\d+\s+#+$/gm) ?? []).length >= 4 && perPod(lastTable(stdout)).filter((n) => n > 10).length >= 3;
        },
        60_000,
      );
      const table = lastTable(stdout);
      expect(table).toMatch(/client -> http:\/\/echo\/ \(by name, through its sidecar\): \d+ ok, 0 failed/);
      expect(perPod(table).filter((n) => n > 10).length).toBeGreaterThanOrEqual(3);
      expect(table).toMatch(/service echo\.demo in the catalog: VIP 10\.96\.\d+\.\d+ port 80\/http/);
      // Sidecars report the version they applied; the client's catches up with the latest.
      await waitFor(
        'the client sidecar reporting the latest version',
        () => /pod\.demo\.client-\S+\s+Ready\s+applied \S+ \(latest\)/.test(lastTable(stdout)),
        30_000,
      );

      const kubectl = spawnSync(testBinary('kubectl'), ['get', 'pods', '-n', 'demo', '-o', 'name'], {
        encoding: 'utf8',
        env: { ...process.env, KUBECONFIG: kubeconfig },
      });
      expect(kubectl.stdout.split('\n').filter((l) => l.startsWith('pod/echo-')).length).toBeGreaterThanOrEqual(3);

      const dirs = [...stdout.matchAll(/under (\/tmp\/flb-devenv-[^/]+)\//g)].map((m) => m[1]!);
      expect(dirs.length).toBeGreaterThan(0);
      demo.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(stderr).toMatch(/everything removed/);
      for (const dir of new Set(dirs)) {
        expect(existsSync(dir)).toBe(false);
        expect(processesMentioning(dir)).toEqual([]);
      }
      const netns = existsSync('/var/run/netns') ? readdirSync('/var/run/netns') : [];
      expect(netns.filter((n) => n.startsWith(`flbp-${demo.pid}-`))).toEqual([]);
      expect(spawnSync('ip', ['link', 'show', `flbsim${demo.pid}`]).status).not.toBe(0);
    } finally {
      demo.kill('SIGKILL');
      rmSync(out, { recursive: true, force: true });
    }
  });
});
