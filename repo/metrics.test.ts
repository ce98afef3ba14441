/*
 * What the repo's /metrics tells an operator about its sidecars: how many report status, how often
 * something is published, and how long a publish takes to reach the workers waiting for it.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { createLogger } from '../common/log.js';
import { Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { MemoryStore } from './testing/memory-store.js';

const log = createLogger('repo-metrics-test', 'silent');

describe("the repo's metrics", () => {
  let server: RepoServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  async function start(): Promise<{ repo: Repo; base: string }> {
    const repo = await new Repo(new MemoryStore()).load();
    await repo.create('/flb/mesh', { main: '/mesh.json' });
    await repo.writeFiles('/flb/mesh', new Map([['/mesh.json', Buffer.from('{}')]]), { version: '1' });
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log });
    return { repo, base: `http://127.0.0.1:${server.port}` };
  }
  /** The value of one sample as the scrape shows it. */
  const sample = async (series: string) => {
    const text = await server!.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };

  it('are the standard process metrics, unprefixed', async () => {
    await start();
    expect(await sample('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(await sample('nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('count the sidecars that report status, the publishes, and time a publish to the long polls it answers', async () => {
    const { repo, base } = await start();
    expect(await sample('flb_repo_connected_sidecars')).toBe(0);
    for (const uuid of ['a', 'b']) {
      const report = await fetch(`${base}/repo/flb/mesh/`, { method: 'POST', body: JSON.stringify({ uuid, sidecarId: `pod.shop.${uuid}` }) });
      expect(report.status).toBe(201);
    }
    expect(await sample('flb_repo_connected_sidecars')).toBe(2);
    const publishesBefore = (await sample('flb_repo_publishes_total'))!;

    const held = [1, 2, 3].map(() => fetch(`${base}/repo/flb/mesh/`, { headers: { 'if-none-match': '1', prefer: 'wait=30' } }));
    while ((await sample('flb_repo_long_polls')) !== 3) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(await sample('flb_repo_push_latency_seconds_count')).toBe(0);
    await repo.writeFiles('/flb/mesh', new Map([['/mesh.json', Buffer.from('{"v":2}')]]), { version: '2' });
    const answers = await Promise.all(held);
    expect(answers.map((a) => [a.status, a.headers.get('etag')])).toEqual([
      [200, '2'],
      [200, '2'],
      [200, '2'],
    ]);
    expect(await sample('flb_repo_publishes_total')).toBe(publishesBefore + 1);
    expect(await sample('flb_repo_push_latency_seconds_count')).toBe(3);
    // Three local answers: well under a second each, and counted in the first buckets.
    expect(await sample('flb_repo_push_latency_seconds_sum')).toBeLessThan(3);
    expect(await sample('flb_repo_push_latency_seconds_bucket{le="1"}')).toBe(3);

    // A poll that times out (nothing published) is no push.
    const idle = await fetch(`${base}/repo/flb/mesh/`, { headers: { 'if-none-match': '2', prefer: 'wait=1' } });
    expect(idle.status).toBe(304);
    expect(await sample('flb_repo_push_latency_seconds_count')).toBe(3);
  });
});
