import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { startReplicaSync } from './runner.js';

// The installed executable, as users run it (built by `npm ci` / scripts/test.sh).
const flb = fileURLToPath(new URL('../bin/flb.js', import.meta.url));
const env = { ...process.env, FLB_LOG_FORMAT: 'json', FLB_LOG_LEVEL: 'info' };
const cleanup: (() => void)[] = [];
afterEach(() => cleanup.splice(0).forEach((undo) => undo()));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'flb-repo-cli-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function listening(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

/** Starts `flb repo`; resolves with the port it prints once serving. */
function startRepo(args: string[]): Promise<{ child: ChildProcess; port: number; stderr: () => string }> {
  const child = spawn(process.execPath, [flb, 'repo', '--listen', '127.0.0.1:0', ...args], { env });
  cleanup.push(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve({ child, port: Number(d.toString().trim()), stderr: () => stderr }));
    child.once('exit', (code) => reject(new Error(`flb repo exited ${code}: ${stderr}`)));
  });
}

describe('flb repo', () => {
  it('on a busy port names itself, how to find the other listener, and --listen (was: a bare EADDRINUSE)', async () => {
    const port = await listening(createServer());
    const result = spawnSync(process.execPath, [flb, 'repo', '--data-dir', tempDir(), '--listen', `127.0.0.1:${port}`], { env, encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(
      `flb: the repo cannot listen on 127.0.0.1:${port}: another process is listening there\n` +
        `hint: stop that process (see who: ss -ltunp 'sport = :${port}'), or move the repo with --listen HOST:PORT\n`,
    );
  });

  it("a malformed --listen is shown the repo's own default, not the webhook's port", () => {
    const result = spawnSync(process.execPath, [flb, 'repo', '--data-dir', tempDir(), '--listen', 'localhost'], { env, encoding: 'utf8' });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('--listen "localhost" is not HOST:PORT (e.g. 127.0.0.1:6060; IPv6 in brackets, e.g. [::1]:6060)');
    expect(result.stderr).not.toContain('9443');
  });

  it('with etcd away for a while, logs it once without a stack and once when it is back (was: a warning with a stack every sync)', async () => {
    let etcdUp = true;
    // Enough of etcd's JSON gateway for an empty store: one revision, no keys.
    const etcd = createServer((req, res) => {
      req.resume();
      if (!etcdUp) res.writeHead(503).end('unavailable');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"header":{"revision":"7"},"responses":[]}');
    });
    const etcdPort = await listening(etcd);
    const repo = await startRepo(['--etcd-endpoint', `http://127.0.0.1:${etcdPort}`, '--sync-interval', '20ms']);
    etcdUp = false;
    await new Promise((resolve) => setTimeout(resolve, 1500));
    etcdUp = true;
    await new Promise((resolve) => setTimeout(resolve, 500));
    repo.child.kill('SIGTERM');
    await new Promise((resolve) => repo.child.once('exit', resolve));
    const lines = repo
      .stderr()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { msg: string; level: number; error?: string; attempts?: number });
    const away = lines.filter((l) => l.msg === 'cannot reach etcd; serving what this replica has');
    expect(away).toHaveLength(1);
    expect(away[0]).toMatchObject({ level: 40, error: 'etcd kv/range: 503 unavailable' });
    const back = lines.filter((l) => l.msg === 'etcd reachable again; replicas in sync');
    expect(back).toHaveLength(1);
    expect(back[0]!.attempts).toBeGreaterThan(20);
    expect(repo.stderr()).not.toContain('"stack"');
  }, 20_000);
});

describe('the replicas sync loop', () => {
  it('takes in a revision whose refresh failed on the next tick', async () => {
    let refreshes = 0;
    const sync = startReplicaSync({
      etcd: { revision: async () => '8' },
      repo: {
        refresh: async () => {
          if (++refreshes === 1) throw new Error('etcd went away mid-load');
          return [];
        },
      },
      since: '7',
      intervalMs: 5,
      log: pino({ level: 'silent' }),
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    sync.stop();
    expect(refreshes).toBe(2);
  });
});
