/*
 * What one client can make the repo hold: pipelined long polls on one connection, encoded deltas
 * asked for from every old version, and TokenReviews past the rate limit (answered 429).
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { connect } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DELTA_MEDIA_TYPE } from '../common/repo-worker.js';
import { createLogger } from '../common/log.js';
import { Authenticator } from './auth.js';
import { Repo } from './repo.js';
import { MAX_DELTA_CACHE_BYTES, MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION, startRepoServer, type RepoServer } from './server.js';
import { MemoryStore } from './testing/memory-store.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Heap and Buffers that survive a full collection. */
const retained = () => {
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.external;
};
const MiB = 1024 * 1024;
const log = createLogger('server-test', 'silent');

describe('the repo server bounds what one client costs', () => {
  let server: RepoServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function withMesh(auth?: Authenticator): Promise<{ repo: Repo; server: RepoServer }> {
    const repo = await new Repo(new MemoryStore()).load();
    await repo.create('/flb/mesh', { main: '/mesh.json' });
    await repo.writeFiles('/flb/mesh', new Map([['/mesh.json', Buffer.from('{}')]]), { version: '1' });
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log, ...(auth ? { auth } : {}) });
    return { repo, server };
  }
  const metric = async (s: RepoServer, name: string) => Number(/ (\d+)$/m.exec(await s.registry.getSingleMetricAsString(name))?.[1] ?? NaN);

  it('closes a connection that pipelines more requests than any worker would, and holds one long poll per connection', async () => {
    const { server } = await withMesh();
    const longPoll = 'GET /repo/flb/mesh/ HTTP/1.1\r\nHost: repo\r\nIf-None-Match: 1\r\nPrefer: wait=50\r\n\r\n';
    const open = () =>
      new Promise<ReturnType<typeof connect>>((resolve) => {
        const socket = connect(server.port, '127.0.0.1', () => resolve(socket));
      });

    // A few pipelined: accepted, but only the first is held; the rest are answered (after it, in order).
    const few = await open();
    few.write(longPoll.repeat(5));
    await new Promise((r) => setTimeout(r, 300));
    expect(await metric(server, 'flb_repo_long_polls')).toBe(1);
    few.destroy();

    // Thousands pipelined: the connection is closed rather than holding thousands of polls.
    const many = await open();
    const closed = new Promise<void>((resolve) => many.on('close', () => resolve()));
    many.on('error', () => {});
    many.write(longPoll.repeat(5000));
    await closed;
    await new Promise((r) => setTimeout(r, 100));
    expect(await metric(server, 'flb_repo_long_polls')).toBe(0);
    expect(await metric(server, 'flb_repo_connections_closed_total')).toBeGreaterThanOrEqual(1);
    expect(MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION).toBeLessThan(5000);
  });

  it('keeps a bounded number of bytes of encoded deltas, however many old versions clients ask from', async () => {
    const { repo, server } = await withMesh();
    await repo.create('/flb/sidecars/pod.shop.web', { base: '/flb/mesh' });
    // 16 versions of each (all remembered), each changing a file of its own: a delta from each
    // pair of old versions is a different body, up to ~900 KiB.
    const file = (tag: string) => Buffer.from(tag.repeat(30 * 1024).slice(0, 30 * 1024));
    for (let v = 2; v <= 17; v++) {
      await repo.writeFiles('/flb/mesh', new Map([[`/services/s-${v}.json`, file(`m${v}`)]]), { version: String(v) });
      await repo.writeFiles('/flb/sidecars/pod.shop.web', new Map([[`/own-${v}.json`, file(`o${v}`)]]), { version: String(v) });
    }
    const before = retained();
    let deltas = 0;
    for (let own = 2; own <= 17; own++) {
      for (let mesh = 2; mesh <= 17; mesh++) {
        const answer = await fetch(`http://127.0.0.1:${server.port}/repo/flb/sidecars/pod.shop.web/`, {
          headers: { 'if-none-match': `${own}+${mesh}`, accept: DELTA_MEDIA_TYPE },
        });
        if (answer.headers.get('content-type') === DELTA_MEDIA_TYPE) deltas++;
        await answer.arrayBuffer();
      }
    }
    const grown = retained() - before;
    console.info(`${deltas} different deltas encoded: ${(grown / MiB).toFixed(1)} MiB retained`);
    expect(deltas).toBe(255);
    // Before: every body kept, up to 256 of them (~115 MiB here).
    expect(grown).toBeLessThan(MAX_DELTA_CACHE_BYTES + 8 * MiB);
    // 256 deltas of up to 900 KiB encoded: about 2 s of CPU, over 5 s beside other tests on a loaded machine.
  }, 30_000);

  it('answers 429 with Retry-After when new tokens come faster than it may review them', async () => {
    const auth = new Authenticator({
      trustAnonymous: false,
      tokenReview: { audience: 'flb-repo', review: async () => ({ authenticated: false }) },
      limits: { burstPerClient: 2, reviewsPerSecondPerClient: 0.5 },
    });
    const { server } = await withMesh(auth);
    const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const token = (n: number) => `${b64({ alg: 'RS256' })}.${b64({ aud: ['flb-repo'], exp: Math.floor(Date.now() / 1000) + 600, n })}.c2ln`;
    const answers = [];
    for (let n = 0; n < 3; n++) {
      const answer = await fetch(`http://127.0.0.1:${server.port}/repo/flb/mesh/`, { headers: { authorization: `Bearer ${token(n)}` } });
      answers.push({ status: answer.status, retryAfter: answer.headers.get('retry-after'), text: await answer.text() });
    }
    expect(answers.map((a) => a.status)).toEqual([401, 401, 429]);
    expect(answers[2]).toEqual({ status: 429, retryAfter: '2', text: 'too many new tokens to check right now; retry in 2 s' });
    expect(await server.registry.getSingleMetricAsString('flb_repo_bearer_tokens_total')).toMatch(/outcome="rate-limited"} 1/);
  });

  it('answers /healthz without credentials (kubelet probes have none), with the store’s state and nothing else; every other path still needs them', async () => {
    const repo = await new Repo(new MemoryStore()).load();
    let writable = true;
    server = await startRepoServer({
      repo,
      host: '127.0.0.1',
      port: 0,
      log,
      auth: new Authenticator({ trustAnonymous: false }),
      storeHealth: () => ({ writable, etcd: { reachable: writable } }),
    });
    const get = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${server!.port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    expect(await get('/healthz')).toEqual({ status: 200, body: '{"status":"ok","writable":true,"etcd":{"reachable":true}}' });
    // Reads go on without etcd: still 200, so the replica stays in its Service; it says writes are refused.
    writable = false;
    expect(JSON.parse((await get('/healthz')).body)).toEqual({ status: 'degraded', writable: false, etcd: { reachable: false } });
    expect((await get('/metrics')).status).toBe(401);
    expect((await get('/healthz/x')).status).toBe(401);
  });
});
