import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ProbeRunner } from './probes.js';

describe("the simulator's prober", () => {
  let server: Server | undefined;
  let runner: ProbeRunner | undefined;
  afterEach(async () => {
    runner?.stop();
    await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  });

  /** A readiness probe every 10 s on a server that answers 503 until `ready` is set; counts the requests. */
  const start = async (initialDelaySeconds = 0) => {
    const state = { ready: false, requests: 0, changes: [] as boolean[] };
    server = createServer((_req, res) => {
      state.requests++;
      res.statusCode = state.ready ? 200 : 503;
      res.end();
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    runner = new ProbeRunner({
      kind: 'readiness',
      probe: { httpGet: { path: '/ready', port }, periodSeconds: 10, failureThreshold: 1, initialDelaySeconds },
      container: { name: 'sidecar' },
      podIp: '127.0.0.1',
      exec: () => Promise.resolve(1),
      onChange: (healthy) => state.changes.push(healthy),
    });
    runner.start();
    return state;
  };
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
    return check();
  };

  it('runs a triggered readiness probe at once, as a kubelet does when it works out the status, instead of a period later', async () => {
    const state = await start();
    expect(await until(() => state.changes.length === 1)).toBe(true);
    expect(state.changes).toEqual([false]);
    state.ready = true;
    const triggeredAt = Date.now();
    runner!.trigger();
    expect(await until(() => state.changes.length === 2)).toBe(true);
    expect(state.changes).toEqual([false, true]);
    expect(Date.now() - triggeredAt).toBeLessThan(1000);
  });

  it('ignores a trigger before initialDelaySeconds and runs one more after a run in flight, not more', async () => {
    const delayed = await start(5);
    runner!.trigger();
    await new Promise((r) => setTimeout(r, 100));
    expect(delayed.requests).toBe(0);
    runner!.stop();
    await new Promise((resolve) => server!.close(resolve));
    server = undefined;

    const state = await start();
    expect(await until(() => state.requests === 1)).toBe(true);
    await until(() => state.changes.length === 1);
    // Three triggers while one run is in flight: that run, then one more (the kubelet's channel holds one).
    runner!.trigger();
    runner!.trigger();
    runner!.trigger();
    expect(await until(() => state.requests === 3)).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect(state.requests).toBe(3);
  });
});
