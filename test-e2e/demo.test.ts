import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { testBinary } from './harness/cache.js';
import { waitForNoLeftovers } from './harness/leftovers.js';

const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

describe('npm start (flb demo)', () => {
  it('runs a control plane that kubectl can use, and removes everything on Ctrl-C', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flb-demo-test-'));
    const kubeconfig = join(out, 'kubeconfig');
    const demo = spawn(process.execPath, [flb, 'demo', '--kubeconfig-out', kubeconfig], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    demo.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    demo.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => demo.once('exit', resolve));
    try {
      const deadline = Date.now() + 120_000;
      while (!stdout.includes('Press Ctrl-C') && Date.now() < deadline && demo.exitCode === null) await new Promise((r) => setTimeout(r, 200));
      expect(stdout).toContain(`export KUBECONFIG=${kubeconfig}`);
      const server = /running at (https:\/\/127\.0\.0\.1:\d+)/.exec(stdout)?.[1];
      expect(server).toBeDefined();
      // Progress goes to stderr as JSON log lines.
      expect(stderr).toMatch(/"msg":"starting kube-apiserver"/);

      const kubectl = spawnSync(testBinary('kubectl'), ['get', 'namespaces', '-o', 'name'], {
        encoding: 'utf8',
        env: { ...process.env, KUBECONFIG: kubeconfig },
      });
      expect(kubectl.stderr).toBe('');
      expect(kubectl.stdout.split('\n')).toEqual(expect.arrayContaining(['namespace/default', 'namespace/kube-system']));

      const dir = /"dir":"([^"]+)"/.exec(stderr)?.[1];
      expect(dir).toMatch(/flb-controlplane-/);
      demo.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(await waitForNoLeftovers(dir!, 5000)).toEqual({ processes: [], dirExists: false });
    } finally {
      demo.kill('SIGKILL');
      rmSync(out, { recursive: true, force: true });
    }
  });
});
