/*
 * Clients that dial registry instances directly (Ribbon, Spring Cloud LoadBalancer): the app
 * connects to an instance's address:port, not to a VIP, and the sidecar maps it back to the
 * instance's service (`directDial` on the catalog service). Real network namespaces with the real
 * iptables rules, as test-e2e/sidecar.test.ts: the app (UID 1000) in a namespace with the
 * interception rules and the sidecar (UID 1500), three instances in their own namespaces. The
 * sidecar runs from the sources, bundled by the test (no dependence on dist/).
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { ResultPromise } from 'execa';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_VERSION, InterceptionSchema } from '../common/contract/index.js';
import { applyRules } from '../cni/iptables.js';
import { eventually } from './harness/eventually.js';
import { createNetns, deleteNetns, link, printed, removeStaleNamespaces, requireRoot, requireTools, spawnIn, type Netns } from './harness/netns.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));
const APP_UID = 1000;
const PROXY_UID = 1500;
const POD_IP = '10.218.1.1';
const EP = ['10.218.1.2', '10.218.2.2', '10.218.3.2'] as const;
const VIP = '240.240.0.30';
const ID = 'pod.shop.app-1';
const SERVICE = 'orders.dc1.consul';

/** A Consul service as the bridge publishes it, with the source's `directDial`. */
const orders = (directDial: 'keep' | 'rebalance' | undefined) => ({
  apiVersion: API_VERSION,
  kind: 'Service',
  id: SERVICE,
  name: 'orders',
  registry: 'dc1',
  source: 'consul',
  hostnames: ['orders.service.consul'],
  vips: [{ address: VIP, allocation: 'mesh' }],
  ports: [
    { name: 'tcp', port: 9090, protocol: 'tcp' },
    { name: 'http', port: 8080, protocol: 'http' },
  ],
  endpoints: EP.map((address) => ({ address, port: 9090, ports: { http: 8080 } })),
  ...(directDial ? { directDial } : {}),
});

describe('flb sidecar: clients that dial registry instances directly', () => {
  let app: Netns;
  const eps: Netns[] = [];
  let work: string;
  let configDir: string;
  let sidecarBundle: string;
  const endpoints = new Map<number, ResultPromise>();
  let sidecar: ResultPromise | undefined;

  const client = async (...args: string[]) =>
    JSON.parse((await app.exec(process.execPath, [`${fixtures}sidecar-client.mjs`, ...args], { uid: APP_UID })).stdout) as Record<string, unknown>;
  /** `n` TCP connections (or HTTP requests on one keep-alive connection) to address:port, by the endpoint that answered. */
  const counts = async (mode: 'tcp' | 'http', address: string, n: number) =>
    (await client(mode, address, mode === 'tcp' ? '9090' : '8080', String(n))).counts as Record<string, number>;
  const admin = async (path: string) => (await client('get', `http://127.0.0.1:15000${path}`)).body as string;
  const connectionsOf = async (service: string) => {
    const text = (await client('get', 'http://127.0.0.1:15010/metrics')).body as string;
    const line = text
      .split('\n')
      .find((l) => l.startsWith('flb_sidecar_connections_total{') && l.includes('direction="outbound"') && l.includes(`service="${service}"`));
    return line ? Number(line.split(' ').pop()) : 0;
  };
  const publish = async (directDial: 'keep' | 'rebalance' | undefined) => {
    writeFileSync(join(configDir, 'services', `${SERVICE}.json`), JSON.stringify(orders(directDial)));
    await eventually(
      `the sidecar to run directDial ${directDial ?? 'unset'}`,
      async () => {
        const dump = JSON.parse(await admin('/config_dump')) as { services: { id: string; directDial?: string }[] };
        return dump.services.find((s) => s.id === SERVICE)?.directDial === directDial ? true : undefined;
      },
      10_000,
      100,
    );
  };

  async function start(
    ns: Netns,
    args: string[],
    options: { uid?: number; env?: Record<string, string>; readyText?: string } = {},
  ): Promise<{ process: ResultPromise }> {
    const child = spawnIn(ns, args, options);
    if (options.readyText) await printed(child, options.readyText);
    return { process: child };
  }
  const startEndpoint = async (i: number) =>
    endpoints.set(i, (await start(eps[i]!, [process.execPath, `${fixtures}sidecar-endpoint.mjs`, `ep${i + 1}`, EP[i]!], { readyText: 'ready' })).process);
  const stopEndpoint = async (i: number) => {
    const child = endpoints.get(i)!;
    child.kill('SIGKILL');
    await child;
    endpoints.delete(i);
  };

  beforeAll(async () => {
    requireRoot('the direct-dial tests');
    await requireTools(['ip', 'setpriv', 'iptables-nft-restore']);
    await removeStaleNamespaces();
    const { build } = await import('esbuild');
    // In node_modules/.cache: the addon is found at ../../../sidecar/native/build from there, and packages in node_modules.
    sidecarBundle = join(ROOT, 'node_modules/.cache/flb-direct-dial-e2e/flb-sidecar.mjs');
    await build({
      stdin: {
        contents: "import { runSidecarCommand } from './sidecar/main.ts';\nprocess.exitCode = await runSidecarCommand(process.argv);\n",
        resolveDir: ROOT,
        loader: 'ts',
        sourcefile: 'flb-sidecar-e2e.ts',
      },
      outfile: sidecarBundle,
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      logLevel: 'error',
    });
    work = mkdtempSync(join(tmpdir(), 'flb-direct-dial-e2e-'));
    configDir = join(work, 'config');
    mkdirSync(join(configDir, 'services'), { recursive: true });
    mkdirSync(join(work, 'state'));
    chmodSync(work, 0o777);
    chmodSync(join(work, 'state'), 0o777);
    app = await createNetns('app');
    for (let i = 0; i < 3; i++) {
      const ep = await createNetns(`ep${i + 1}`);
      eps.push(ep);
      await link(app, [`10.218.${i + 1}.1/24`], ep, [`${EP[i]}/24`]);
      await ep.exec('ip', ['route', 'add', 'default', 'via', `10.218.${i + 1}.1`]);
    }
    await app.exec('ip', ['route', 'add', 'default', 'via', EP[0]]);
    await applyRules(InterceptionSchema.parse({ version: 1, mode: 'iptables', ipv6: 'disabled', proxyUid: PROXY_UID }), { netns: app.path });
    for (let i = 0; i < 3; i++) await startEndpoint(i);
    writeFileSync(join(configDir, 'mesh.json'), JSON.stringify({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' }));
    writeFileSync(
      join(configDir, 'sidecar.json'),
      JSON.stringify({
        apiVersion: API_VERSION,
        kind: 'Sidecar',
        id: ID,
        mesh: 'flb',
        identity: { kind: 'pod', namespace: 'shop', name: 'app-1', serviceAccount: 'default' },
      }),
    );
    writeFileSync(join(configDir, 'services', `${SERVICE}.json`), JSON.stringify(orders('keep')));
    const { process: child } = await start(
      app,
      [process.execPath, sidecarBundle, 'sidecar', '--id', ID, '--state-dir', join(work, 'state'), '--drain', '1s', '--config-dir', configDir, '--watch'],
      { uid: PROXY_UID, env: { FLB_LOG_LEVEL: 'warn', POD_IP } },
    );
    sidecar = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    await eventually(
      'the sidecar to be ready',
      async () => ((await client('get', 'http://127.0.0.1:15000/ready')).status === 200 ? true : undefined),
      20_000,
      100,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\nsidecar stderr:\n${stderr}`);
    });
  });

  afterAll(async () => {
    sidecar?.kill('SIGTERM');
    await sidecar;
    for (const child of endpoints.values()) child.kill('SIGKILL');
    await deleteNetns(app);
    for (const ep of eps) await deleteNetns(ep);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it("keep: the instance the app dialled answers every connection and request, counted under the instance's service", async () => {
    const before = await connectionsOf(SERVICE);
    expect(await counts('tcp', EP[2], 10)).toEqual({ ep3: 10 });
    expect(await counts('http', EP[2], 10)).toEqual({ ep3: 10 });
    // 10 TCP connections and one HTTP connection, all the service's (none passed through as unknown).
    expect((await connectionsOf(SERVICE)) - before).toBe(11);
    // The VIP is balanced as before.
    expect(await counts('tcp', VIP, 30)).toEqual({ ep1: 10, ep2: 10, ep3: 10 });
  });

  it("rebalance: connections to one instance's address spread over every instance", async () => {
    await publish('rebalance');
    expect(await counts('tcp', EP[0], 30)).toEqual({ ep1: 10, ep2: 10, ep3: 10 });
    expect(await counts('http', EP[0], 30)).toEqual({ ep1: 10, ep2: 10, ep3: 10 });
  });

  it('a connection to a dead instance reaches a healthy one; without directDial it fails', async () => {
    await publish('keep');
    await stopEndpoint(2);
    // Nothing has told the sidecar yet (no check, no registry change): the connect is refused and fails over.
    const tcp = await counts('tcp', EP[2], 10);
    const http = await counts('http', EP[2], 10);
    expect(Object.keys(tcp).every((name) => name === 'ep1' || name === 'ep2')).toBe(true);
    expect(Object.values(tcp).reduce((a, b) => a + b, 0)).toBe(10);
    expect(Object.keys(http).every((name) => name === 'ep1' || name === 'ep2')).toBe(true);
    expect(Object.values(http).reduce((a, b) => a + b, 0)).toBe(10);
    // The same dial to a service that did not opt in goes where the app sent it, and is refused.
    await publish(undefined);
    expect((await client('tcp', EP[2], '9090', '1')).names).toEqual([expect.stringMatching(/^error:/)]);
    await startEndpoint(2);
  });
});
