/*
 * `flb bridge status`'s LAG column and flb_bridge_source_sync_lag_seconds with a real apiserver
 * and repo: 0 while the repo takes every change, growing while the repo is away and a Service
 * change waits, 0 again once the repo is back and has it; '-' and no series on a standby.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, type BridgeConfig } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startBridge, type Bridge } from '../registry-bridge/bridge.js';
import { fetchBridgeStatus, renderBridgeStatus } from '../registry-bridge/status.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-lag-test', 'silent');
const NS = 'shop';
const CONTROL = 'flomesh';

describe("the bridge's sync lag", () => {
  let plane: ControlPlane;
  let core: CoreV1Api;
  let dir: string;
  let repo: Repo;
  let server: RepoServer | undefined;
  let repoPort = 0;
  const bridges: Bridge[] = [];

  const config = (): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [{ kind: 'kubernetes' }],
      sinks: [{ kind: 'repo', url: `http://127.0.0.1:${repoPort}` }],
      leaderElection: { namespace: CONTROL, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1 },
    });
  const startRepo = async () => {
    server = await startRepoServer({ repo, host: '127.0.0.1', port: repoPort, log });
    repoPort = server.port;
  };
  /** The kubernetes source's row of `flb bridge status`, cut into its columns. */
  const row = async (bridge: Bridge) => {
    const table = renderBridgeStatus(await fetchBridgeStatus(`http://127.0.0.1:${bridge.adminPort}`)).split('\n');
    const header = table.find((line) => line.startsWith('SOURCE'))!;
    const line = table.find((l) => l.startsWith('kubernetes'))!;
    // Columns start where the header's names do.
    const starts = [...header.matchAll(/\S+( \S+)?/g)].map((m) => m.index);
    const names = [...header.matchAll(/\S+( \S+)?/g)].map((m) => m[0]);
    return Object.fromEntries(names.map((name, i) => [name, line.slice(starts[i], starts[i + 1]).trim()]));
  };
  const lagSeries = async (bridge: Bridge) => (await bridge.registry.metrics()).split('\n').filter((l) => l.startsWith('flb_bridge_source_sync_lag_seconds{'));
  const service = (name: string) => ({ metadata: { name }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 as never }] } });

  beforeAll(async () => {
    plane = await startControlPlane();
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    for (const name of [NS, CONTROL]) await core.createNamespace({ body: { metadata: { name } } });
    dir = mkdtempSync(join(tmpdir(), 'flb-bridge-lag-test-'));
    repo = await new Repo(await new DiskStore(dir).init()).load();
    await startRepo();
  });
  afterAll(async () => {
    for (const bridge of bridges) await bridge.stop();
    await server?.close();
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is 0 while the repo takes every change, grows while a change waits for it, and is 0 again once it has it', async () => {
    await core.createNamespacedService({ namespace: NS, body: service('orders') });
    const leader = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-a', admin: { host: '127.0.0.1', port: 0 } });
    bridges.push(leader);
    await eventually('orders published', async () => ((await repo.readFile('/flb/mesh', '/services/orders.shop.json')) ? true : undefined));
    await eventually('no lag', async () => ((await row(leader)).LAG === '0.0s' ? true : undefined), 10_000);
    expect(await row(leader)).toMatchObject({ KIND: 'kubernetes', STATE: 'synced', SERVICES: expect.stringMatching(/^[1-9]/) as unknown as string });
    expect(await lagSeries(leader)).toEqual(['flb_bridge_source_sync_lag_seconds{source="kubernetes",kind="kubernetes"} 0']);

    await server!.close();
    server = undefined;
    await core.createNamespacedService({ namespace: NS, body: service('payments') });
    await eventually('the change seen', async () => (leader.catalog.service('payments.shop') ? true : undefined), 10_000);
    await new Promise((resolve) => setTimeout(resolve, 2500));
    const waiting = await row(leader);
    expect(Number(waiting.LAG!.replace(/s$/, ''))).toBeGreaterThanOrEqual(2);
    expect(waiting.STATE).toBe('synced');
    const [series] = await lagSeries(leader);
    expect(Number(series!.split(' ')[1])).toBeGreaterThanOrEqual(2);

    await startRepo();
    await eventually('payments published', async () => ((await repo.readFile('/flb/mesh', '/services/payments.shop.json')) ? true : undefined), 30_000);
    await eventually('no lag again', async () => ((await row(leader)).LAG === '0.0s' ? true : undefined), 10_000);
  });

  it("shows '-' and exports no lag on a standby, which writes nothing", async () => {
    const standby = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-b', admin: { host: '127.0.0.1', port: 0 } });
    bridges.push(standby);
    await eventually('the standby synced', async () => ((await row(standby)).STATE === 'synced' ? true : undefined));
    expect(standby.status().leader).toBe(false);
    expect((await row(standby)).LAG).toBe('-');
    expect(await lagSeries(standby)).toEqual([]);
  });
});
