/*
 * The postStart hook's waiter: the arguments the injector writes, and that it lets the pod go
 * within tens of milliseconds of the sidecar being ready (a late answer delays every injected pod).
 */
import { describe, expect, it } from '@jest/globals';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DEFAULT_PORTS } from '../common/contract/mesh.js';
import { DEFAULT_ADMIN_PORT, parseWaitReadyArgs, waitUntilReady } from './wait-ready.js';

describe('flb sidecar wait-ready', () => {
  it('takes the flags as the injector writes them, in either spelling, with the mesh defaults', () => {
    expect(DEFAULT_ADMIN_PORT).toBe(DEFAULT_PORTS.admin);
    expect(parseWaitReadyArgs([])).toEqual({ adminPort: 15000, timeoutMs: 120_000 });
    expect(parseWaitReadyArgs(['--timeout=120s', '--admin-port=16000'])).toEqual({ adminPort: 16000, timeoutMs: 120_000 });
    expect(parseWaitReadyArgs(['--timeout', '1m30s', '--admin-port', '0'])).toEqual({ adminPort: 0, timeoutMs: 90_000 });
  });

  it('leaves to the full CLI whatever it does not take as written (help, unknown flags, bad values)', () => {
    for (const args of [['--help'], ['--verbose'], ['extra'], ['--admin-port=http'], ['--admin-port=70000'], ['--timeout=soon'], ['--timeout']]) {
      expect(parseWaitReadyArgs(args)).toBeUndefined();
    }
  });

  it('returns within tens of milliseconds of /ready answering 200', async () => {
    // Ready 50 ms after the first question: a poll every 200 ms (as before) asks again ~150 ms too late.
    let readyAt: number | undefined;
    const server = createServer((_req, res) => {
      readyAt ??= Date.now() + 50;
      res.statusCode = Date.now() >= readyAt ? 200 : 503;
      res.end(res.statusCode === 200 ? 'ready\n' : 'waiting for the configuration\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      await waitUntilReady({ adminPort: (server.address() as AddressInfo).port, timeoutMs: 5_000 });
      expect(Date.now() - readyAt!).toBeLessThan(100);
    } finally {
      server.close();
    }
  });

  it("gives up at the deadline with the sidecar's last answer", async () => {
    const server = createServer((_req, res) => {
      res.statusCode = 503;
      res.end('no configuration yet: the repo answered 404\n');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const adminPort = (server.address() as AddressInfo).port;
      await expect(waitUntilReady({ adminPort, timeoutMs: 100 })).rejects.toThrow(
        `the sidecar was not ready within 0.1 s (http://127.0.0.1:${adminPort}/ready: no configuration yet: the repo answered 404)`,
      );
    } finally {
      server.close();
    }
  });
});
