import { afterEach, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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

  it('with etcd unreachable at start, says which endpoints and why, and exits 1 (it never serves an empty repo)', async () => {
    const port = await listening(createServer((req, res) => res.end()));
    const result = spawnSync(process.execPath, [flb, 'repo', '--etcd-endpoint', `http://127.0.0.1:${port}`, '--etcd-timeout', '2s'], { env, encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`flb: cannot start the repo on etcd (http://127.0.0.1:${port}): etcd (http://127.0.0.1:${port}) did not answer`);
  }, 15_000);

  it('refuses half of a client certificate or of a password for etcd', () => {
    for (const [args, message] of [
      [['--etcd-cert', 'c.pem'], 'give both --etcd-cert and --etcd-key, or neither'],
      [['--etcd-username', 'flb'], 'give both --etcd-username and --etcd-password-file, or neither'],
      [['--etcd-endpoint', 'etcd:2379'], '--etcd-endpoint etcd:2379: expected http(s)://HOST:PORT'],
    ] as const) {
      const all = args[0] === '--etcd-endpoint' ? args : ['--etcd-endpoint', 'http://127.0.0.1:1', ...args];
      const result = spawnSync(process.execPath, [flb, 'repo', ...all], { env, encoding: 'utf8' });
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(message);
    }
  });
});
