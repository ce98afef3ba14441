import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { createLogger } from '../common/log.js';
import { MAX_INSTANCE_BYTES, MAX_INSTANCES, MAX_INSTANCES_PER_CODEBASE, Repo } from './repo.js';
import { startRepoServer, type RepoServer } from './server.js';
import { MAX_STATUS_BYTES } from './status.js';
import { MemoryStore } from './testing/memory-store.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** The heap that survives a full collection: what the repo retains. */
const retainedHeap = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};
const MiB = 1024 * 1024;

const pipyStatus = (uuid: string) => ({
  timestamp: 1_700_000_000_123,
  since: 1_700_000_000_000,
  uuid,
  name: 'pipy-worker-1',
  ip: '10.0.0.7',
  version: 3,
  modules: { '/main.js': { graph: { name: 'main', pipelines: [{ name: 'listen 8080', filters: ['demuxHTTP', 'muxHTTP'] }] } } },
  metrics: { version: 0, roots: [{ k: 'pipy_inbound_count', t: 'Counter', v: 12 }] },
  logs: ['access'],
});

// The status flb's sidecar reports (sidecar/config/source.ts), with the version its worker adds.
const sidecarStatus = (uuid: string) => ({
  uuid,
  name: 'pod.shop.web',
  since: 1_700_000_000_000,
  timestamp: 1_700_000_000_456,
  sidecarId: 'pod.shop.web',
  source: 'repo',
  ready: true,
  appliedVersion: '7+12',
  rejected: [{ path: 'services/bad.json', error: 'services/bad.json: port: expected a number' }],
  receivedVersion: '7+12',
  cache: { dir: '/var/lib/flb/config', version: '7+12' },
  unhealthyEndpoints: [
    { service: 'orders.shop', endpoint: '10.244.1.7:8080', activeHealth: 'unhealthy', ejected: false },
    { service: 'orders.shop', endpoint: '10.244.1.8:8080', activeHealth: 'healthy', ejected: true, ejectedUntil: '2026-12-06T07:00:30.000Z' },
  ],
  unhealthyEndpointsOmitted: 3,
  version: '7+12',
});

describe('status reports', () => {
  let repo: Repo;
  let server: RepoServer;
  const post = (path: string, body: string) =>
    new Promise<number>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: server.port, method: 'POST', path, agent: false, headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const instances = async (codebase: string) =>
    Object.values(
      (
        (await (await fetch(`http://127.0.0.1:${server.port}/api/v1/repo${codebase}`)).json()) as {
          instances: Record<string, { status: Record<string, unknown> }>;
        }
      ).instances,
    ).map((i) => i.status);

  beforeAll(async () => {
    repo = await new Repo(new MemoryStore()).load();
    await repo.create('/flb/mesh', { main: '/mesh.json' });
    await repo.writeFiles('/flb/mesh', new Map([['/mesh.json', Buffer.from('{}')]]), { version: '1' });
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log: createLogger('status-test', 'silent') });
  });
  afterAll(() => server.close());

  it("accepts a Pipy worker's status and shows it as Pipy does, without metrics", async () => {
    expect(await post('/repo/flb/mesh/', JSON.stringify(pipyStatus('pipy-1')))).toBe(201);
    const { metrics: _metrics, ...shown } = pipyStatus('pipy-1');
    const [status] = await instances('/flb/mesh');
    // A number version is a string, as Pipy converts it.
    expect(status).toEqual({ ...shown, version: '3' });
    // Field order as Pipy's GUI reads it.
    expect(Object.keys(status!)).toEqual(['timestamp', 'since', 'uuid', 'name', 'ip', 'version', 'modules', 'logs']);
  });

  it("keeps every field of flb's sidecar status", async () => {
    expect(await post('/repo/flb/mesh/', JSON.stringify(sidecarStatus('sidecar-1')))).toBe(201);
    expect((await instances('/flb/mesh')).find((s) => s.uuid === 'sidecar-1')).toEqual(sidecarStatus('sidecar-1'));
  });

  it('accepts a report of any shape or size (up to the body limit) without an error, keeping a bounded part of it', async () => {
    const huge = {
      ...sidecarStatus('huge-1'),
      name: 'n'.repeat(MiB),
      applyError: 'e'.repeat(MiB),
      rejected: Array.from({ length: 5000 }, (_, i) => ({ path: `services/s-${i}.json`, error: 'x'.repeat(500) })),
      modules: { '/main.js': { graph: { nodes: 'g'.repeat(MiB) } } },
      logs: Array.from({ length: 1000 }, () => 'l'.repeat(1000)),
      unknown: { deeply: { nested: 'u'.repeat(MiB) } },
    };
    expect(await post('/repo/flb/mesh/', JSON.stringify(huge))).toBe(201);
    for (const odd of ['{"uuid":7,"rejected":"no","cache":[],"modules":[1],"logs":{},"ready":"yes"}', '{}', JSON.stringify({ uuid: 'x'.repeat(10_000) })])
      expect(await post('/repo/flb/mesh/', odd)).toBe(201);
    const kept = (await instances('/flb/mesh')).find((s) => s.sidecarId === 'pod.shop.web' && s.uuid === 'huge-1')!;
    expect(JSON.stringify(kept).length).toBeLessThanOrEqual(MAX_STATUS_BYTES);
    expect(kept).toMatchObject({ uuid: 'huge-1', sidecarId: 'pod.shop.web', ready: true, appliedVersion: '7+12', cache: sidecarStatus('').cache });
    expect((kept.name as string).length).toBe(256);
    // What did not fit is counted, not silently dropped.
    expect((kept.rejected as unknown[]).length + (kept.rejectedOmitted as number)).toBe(5000);
    expect(kept).not.toHaveProperty('unknown');
  });

  it("keeps as many of a sidecar's unhealthy endpoints as fit and counts the rest with those the sidecar left out", async () => {
    const report = {
      ...sidecarStatus('many-unhealthy'),
      rejected: [],
      unhealthyEndpoints: Array.from({ length: 2000 }, (_, i) => ({
        service: `s-${i}.shop`,
        endpoint: `10.0.${i >> 8}.${i & 255}:8080`,
        activeHealth: 'unhealthy',
        ejected: false,
      })),
      unhealthyEndpointsOmitted: 10,
    };
    expect(await post('/repo/flb/mesh/', JSON.stringify(report))).toBe(201);
    const kept = (await instances('/flb/mesh')).find((s) => s.uuid === 'many-unhealthy')!;
    expect(JSON.stringify(kept).length).toBeLessThanOrEqual(MAX_STATUS_BYTES);
    const shown = kept.unhealthyEndpoints as { service: string }[];
    expect(shown.length).toBeGreaterThan(20);
    expect(shown[0]).toEqual({ service: 's-0.shop', endpoint: '10.0.0.0:8080', activeHealth: 'unhealthy', ejected: false });
    expect(shown.length + (kept.unhealthyEndpointsOmitted as number)).toBe(2010);
  });

  it('retains a bounded amount of memory for many large reports (12 of 7 MiB)', async () => {
    const report = (uuid: string) => ({
      ...pipyStatus(uuid),
      name: 'n'.repeat(MiB),
      modules: { '/main.js': { graph: { nodes: 'g'.repeat(3 * MiB) } } },
      logs: ['l'.repeat(MiB)],
      metrics: { blob: 'm'.repeat(2 * MiB) },
    });
    // The first large request costs the server a constant (buffers it keeps for the next): not per report.
    expect(await post('/repo/flb/mesh/', JSON.stringify(report('warm-up')))).toBe(201);
    const before = retainedHeap();
    for (let i = 0; i < 12; i++) expect(await post('/repo/flb/mesh/', JSON.stringify(report(`big-${i}`)))).toBe(201);
    const grown = retainedHeap() - before;
    console.info(`12 status reports of 7 MiB: the heap retains ${(grown / MiB).toFixed(2)} MiB more`);
    expect((await instances('/flb/mesh')).filter((s) => String(s.uuid).startsWith('big-'))).toHaveLength(12);
    // Each kept status is at most 8 KiB; before, each kept its 5 MiB (all but metrics).
    expect(grown).toBeLessThan(4 * MiB);
  });

  it("keeps a codebase's only sidecar through every report it sends (each replaces the last)", () => {
    const local = new Repo(new MemoryStore());
    const shown = () =>
      Object.values(
        local.info({ name: '/flb/sidecars/solo', version: '1', main: '/m', files: {}, edits: {} }).instances as Record<string, { timestamp: number }>,
      );
    const seen: number[][] = [];
    for (let i = 0; i < 4; i++) {
      local.reportStatus('/flb/sidecars/solo', sidecarStatus('solo'), '10.0.0.3', 5000 + i);
      seen.push(shown().map((instance) => instance.timestamp));
    }
    expect(seen).toEqual([[5000], [5001], [5002], [5003]]);
  });

  it('keeps at most so many instances per codebase and overall, the ones that reported last', async () => {
    const local = new Repo(new MemoryStore());
    const before = retainedHeap();
    const report = (uuid: string) => ({
      ...sidecarStatus(uuid),
      rejected: Array.from({ length: 20 }, (_, i) => ({ path: `services/s-${i}.json`, error: 'y'.repeat(200) })),
    });
    for (let i = 0; i < 300; i++) local.reportStatus('/flb/sidecars/one', report(`one-${i}`), '10.0.0.1', 1000 + i);
    const one = local.info({ name: '/flb/sidecars/one', version: '1', main: '/m', files: {}, edits: {} }).instances as Record<
      string,
      { status: { uuid: string } }
    >;
    const uuids = Object.values(one).map((i) => i.status.uuid);
    expect(uuids).toHaveLength(MAX_INSTANCES_PER_CODEBASE);
    expect(uuids).toContain('one-299');
    expect(uuids).not.toContain('one-0');

    for (let i = 0; i < 30_000; i++) local.reportStatus(`/flb/sidecars/s-${i % 200}`, report(`u-${i}`), '10.0.0.2', 2000 + i);
    const usage = local.instanceUsage();
    expect(usage.instances).toBeLessThanOrEqual(MAX_INSTANCES);
    expect(usage.bytes).toBeLessThanOrEqual(MAX_INSTANCE_BYTES);
    // The most recent report of all is there; the first of the 30,000 is not.
    const last = local.info({ name: '/flb/sidecars/s-199', version: '1', main: '/m', files: {}, edits: {} }).instances as Record<
      string,
      { status: { uuid: string } }
    >;
    expect(Object.values(last).map((i) => i.status.uuid)).toContain('u-29999');
    const grown = retainedHeap() - before;
    console.info(
      `30,300 reports of ~5 KiB to 201 codebases: ${usage.instances} instances kept (${(usage.bytes / MiB).toFixed(1)} MiB accounted), the heap retains ${(grown / MiB).toFixed(1)} MiB more`,
    );
    expect(grown).toBeLessThan(48 * MiB);
    expect(local.expireInstances(1e12)).toBe(usage.instances);
    expect(local.instanceUsage()).toEqual({ instances: 0, bytes: 0 });
  });
});
