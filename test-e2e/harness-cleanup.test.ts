import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { startControlPlane } from '../devenv/controlplane.js';
import { removeStaleNetworks } from '../devenv/pod-network.js';
import { isAlive, processesMentioning, waitForNoLeftovers } from './harness/leftovers.js';
import { requireRoot } from './harness/netns.js';

const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const controlPlaneDirs = () => new Set(readdirSync(tmpdir()).filter((d) => d.startsWith('flb-controlplane-')));

interface Started {
  dir: string;
  pids: number[];
}

describe('the control-plane helper leaves nothing behind', () => {
  it('when the test process is killed with SIGKILL', async () => {
    const holder = spawn(process.execPath, [join(fixtures, 'hold-control-plane.mjs')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const started = await new Promise<Started>((resolve, reject) => {
      let out = '';
      holder.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(JSON.parse(out) as Started);
      });
      holder.once('exit', (code) => reject(new Error(`holder exited early (${code})`)));
    });
    expect(started.pids).toHaveLength(3);
    expect(processesMentioning(started.dir).length).toBeGreaterThanOrEqual(3);

    holder.kill('SIGKILL');
    expect(await waitForNoLeftovers(started.dir)).toEqual({ processes: [], dirExists: false });
    expect(started.pids.filter(isAlive)).toEqual([]);
  });

  it('with pods running on the node simulator, killed with SIGKILL: containers die with it, the next run removes its network', async () => {
    requireRoot('the node simulator');
    const marker = `${600 + Math.random()}`.slice(0, 12);
    const holder = spawn(process.execPath, [join(fixtures, 'hold-dev-environment.mjs'), marker], { stdio: ['ignore', 'pipe', 'inherit'] });
    const started = await new Promise<Started & { planeDir: string; bridge: string }>((resolve, reject) => {
      let out = '';
      holder.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes('\n')) resolve(JSON.parse(out) as Started & { planeDir: string; bridge: string });
      });
      holder.once('exit', (code) => reject(new Error(`holder exited early (${code})`)));
    });
    const netnsOf = async () => (await execa('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`flbp-${holder.pid}-`));
    expect(processesMentioning(`sleep ${marker}`)).toHaveLength(1);
    expect(await netnsOf()).toHaveLength(1);

    holder.kill('SIGKILL');
    expect(await waitForNoLeftovers(started.planeDir)).toEqual({ processes: [], dirExists: false });
    expect(await waitForNoLeftovers(started.dir)).toEqual({ processes: [], dirExists: false });
    expect(processesMentioning(`sleep ${marker}`)).toEqual([]);
    // What the next run does first.
    await removeStaleNetworks();
    expect(await netnsOf()).toEqual([]);
    expect((await execa('ip', ['link', 'show', started.bridge], { reject: false })).exitCode).not.toBe(0);
  });

  it('when a test fails', () => {
    const outDir = mkdtempSync(join(tmpdir(), 'flb-fixture-out-'));
    try {
      const result = spawnSync(
        process.execPath,
        ['node_modules/jest/bin/jest.js', '--config', join(fixtures, 'jest.config.js'), '--runInBand', 'failing.fixture'],
        {
          cwd: repoRoot,
          encoding: 'utf8',
          env: { ...process.env, FLB_FIXTURE_OUT: join(outDir, 'started.json'), NODE_OPTIONS: '--experimental-vm-modules' },
        },
      );
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('fails on purpose');
      expect(result.stderr).toContain('"a different answer"');
      const started = JSON.parse(readFileSync(join(outDir, 'started.json'), 'utf8')) as Started;
      expect(processesMentioning(started.dir)).toEqual([]);
      expect(started.pids.filter(isAlive)).toEqual([]);
      expect(controlPlaneDirs().has(started.dir.split('/').pop()!)).toBe(false);
    } finally {
      rmSync(outDir, { recursive: true, force: true });
    }
  });

  it('when a server fails to start, with its log in the error', async () => {
    const before = controlPlaneDirs();
    await expect(startControlPlane({ apiserverArgs: ['--no-such-flag=1'] })).rejects.toThrow(
      /kube-apiserver exited \(exit code 1\) before it was ready; last lines of .*kube-apiserver\.log:\n[\s\S]*unknown flag: --no-such-flag/,
    );
    const leftDirs = [...controlPlaneDirs()].filter((d) => !before.has(d));
    expect(leftDirs).toEqual([]);
    for (const dir of leftDirs) expect(processesMentioning(dir)).toEqual([]);
    expect(processesMentioning(join(tmpdir(), 'flb-controlplane-')).filter((p) => ![...before].some((d) => p.cmdline.includes(d)))).toEqual([]);
  });
});
