// The announcer inside `flb sidecar` (runSidecar with a watched local config dir): it starts when
// sidecar.json gains a bgp section, follows its changes, drains when it goes or on SIGTERM's drain,
// and shows on the admin port (/bgp, /metrics). Routers are fake peers on loopback.
import { afterEach, describe, expect, it } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { createServer as createHttpServer, request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { pino } from 'pino';
import type { SidecarPorts } from '../../common/contract/index.js';
import { meshDoc, sidecarDoc } from '../config/testing/fixtures.js';
import { runSidecar, type RunningSidecar } from '../sidecar.js';
import { loadBgpConfig } from './runner.js';
import { fetchBgpStatus } from './status.js';
import { FakePeer, ribOf, routeUpdates } from './testing/fake-peer.js';
import { communityText, type ReceivedMessage } from './wire/index.js';

const ID = 'pod.shop.w';
const ANY_PORTS: SidecarPorts = { admin: 0, outbound: 0, inbound: 0, metrics: 0, dns: 0, livenessProbe: 0, readinessProbe: 0, startupProbe: 0 };
const VIP = '198.51.100.10/32';
const log = pino({ level: 'silent' });

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const opens = (received: ReceivedMessage[]) => received.filter((m) => m.type === 'open').length;

async function tcpApp(): Promise<{ server: Server; port: number }> {
  const server = createServer((s) => s.destroy());
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  return { server, port: (server.address() as { port: number }).port };
}

async function fakePeer(): Promise<FakePeer> {
  const peer = await FakePeer.start({ as: 65000 });
  cleanups.push(() => peer.close());
  return peer;
}

function bgpSection(appPort: number, peers: FakePeer[], extra: Record<string, unknown> = {}) {
  return {
    localAs: 65001,
    routerId: '192.0.2.1',
    connectRetrySeconds: 1,
    drainSeconds: 0,
    peers: peers.map((p) => ({ address: '127.0.0.1', port: p.port, remoteAs: 65000, addressFamilies: ['ipv4-unicast'] })),
    vips: [{ prefix: VIP, healthCheck: { protocol: 'tcp', port: appPort, intervalMs: 100, timeoutMs: 100, healthyThreshold: 1, unhealthyThreshold: 2 } }],
    ...extra,
  };
}

async function sidecarWith(
  bgp: unknown,
  appProbes?: string,
  appPreStops?: string,
): Promise<{ sidecar: RunningSidecar; write(bgp: unknown): void; admin: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'flb-sidecar-bgp-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'services'));
  writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc()));
  const write = (section: unknown) => writeFileSync(join(dir, 'sidecar.json'), JSON.stringify(sidecarDoc(ID, section ? { bgp: section } : {})));
  write(bgp);
  const sidecar = await runSidecar({
    id: ID,
    ports: ANY_PORTS,
    log,
    appHost: '127.0.0.1',
    dnsUpstreams: ['127.0.0.1:9'],
    drainMs: 0,
    config: { kind: 'local', dir, watch: true },
    ...(appProbes ? { appProbes } : {}),
    ...(appPreStops ? { appPreStops } : {}),
  });
  cleanups.push(() => sidecar.close());
  return { sidecar, write, admin: `http://127.0.0.1:${sidecar.ports.admin}` };
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the BGP announcer in the sidecar', () => {
  it('runs no announcer without a bgp section, starts one when the section appears, and shows it on the admin port', async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const { write, admin } = await sidecarWith(undefined);
    const none = await get(`${admin}/bgp`);
    expect(none.status).toBe(404);
    expect(none.body).toContain('no BGP announcer runs: sidecar.json has no bgp section');
    await expect(fetchBgpStatus({ url: admin, path: '/bgp' })).rejects.toThrow(`the sidecar at ${admin} runs no BGP announcer`);
    expect((await get(`${admin}/metrics`)).body).not.toContain('flb_bgp_');

    write(bgpSection(app.port, [peer]));
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    const status = await fetchBgpStatus({ url: admin, path: '/bgp' });
    expect(status.peers).toEqual([expect.objectContaining({ state: 'Established', prefixesSent: 1 })]);
    expect(status.vips).toEqual([expect.objectContaining({ prefix: VIP, healthy: true, announced: true })]);
    const metrics = (await get(`${admin}/metrics`)).body;
    expect(metrics).toContain(`flb_bgp_session_established{peer="127.0.0.1:${peer.port}",remote_as="65000"} 1`);
    expect(metrics).toContain(`flb_bgp_vip_announced{vip="${VIP}"} 1`);
  });

  it('withdraws a VIP whose app fails with the session kept, and announces it again when it is back', async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    await sidecarWith(bgpSection(app.port, [peer]));
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    await new Promise((r) => app.server.close(r));
    await peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? true : undefined));
    app.server.listen(app.port, '127.0.0.1');
    await peer.until('the VIP again', (r) => (ribOf(r).join() === VIP ? true : undefined));
    expect(opens(peer.received)).toBe(1);
    expect(peer.received.some((m) => m.type === 'notification')).toBe(false);
  });

  it("follows the section peer by peer: the same section again, a peer added, edited, flapping or removed leave the other peer's session and routes untouched", async () => {
    const app = await tcpApp();
    const [first, second] = [await fakePeer(), await fakePeer()];
    const { write, admin } = await sidecarWith(bgpSection(app.port, [first]));
    await first.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    const firstUpdates = routeUpdates(first.received).length;
    /** What the first router would notice: a new OPEN, a NOTIFICATION, or any route UPDATE. */
    const firstUntouched = () => {
      expect(opens(first.received)).toBe(1);
      expect(first.received.filter((m) => m.type === 'notification')).toEqual([]);
      expect(routeUpdates(first.received)).toHaveLength(firstUpdates);
      expect(first.connections).toBe(1);
    };
    const twoPeers = bgpSection(app.port, [first, second]);

    // A mesh.json change re-applies the same sidecar.json.
    write(bgpSection(app.port, [first]));
    await new Promise((r) => setTimeout(r, 300));
    firstUntouched();

    write(twoPeers);
    await second.until('the VIP at the added peer', (r) => (ribOf(r).join() === VIP ? true : undefined));
    firstUntouched();

    // The second peer edited (a next hop of its own): its session is restarted, with the new next hop.
    const edited = bgpSection(app.port, [first, second]) as { peers: Record<string, unknown>[] };
    edited.peers[1]!.nextHop = { ipv4: '192.0.2.77' };
    write(edited);
    await second.until('Cease to the edited peer', (r) => r.find((m) => m.type === 'notification' && m.code === 6));
    const nextHop = await second.until('the VIP with the new next hop', (r) =>
      opens(r) === 2 ? routeUpdates(r.slice(r.findLastIndex((m) => m.type === 'open'))).at(-1)?.attributes.nextHop : undefined,
    );
    expect(nextHop).toBe('192.0.2.77');

    // The second router drops the connection: only that session comes back and is sent the VIP again.
    const secondUpdates = routeUpdates(second.received).length;
    second.socket!.destroy();
    await second.until('the VIP on the new connection', (r) => (second.connections === 3 && routeUpdates(r).length > secondUpdates ? true : undefined));

    // The sessions a running announcer adds are counted too.
    expect((await get(`${admin}/metrics`)).body).toMatch(new RegExp(`flb_bgp_session_down_total\\{peer="127.0.0.1:${second.port}"\\} 1`));

    write(bgpSection(app.port, [first]));
    await second.until('Cease to the removed peer', (r) => r.filter((m) => m.type === 'notification' && m.code === 6).length === 2 || undefined);
    await new Promise((r) => setTimeout(r, 300));
    expect(second.connections).toBe(3);
    firstUntouched();
    const status = await fetchBgpStatus({ url: admin, path: '/bgp' });
    expect(status.peers).toEqual([expect.objectContaining({ peer: `127.0.0.1:${first.port}`, state: 'Established' })]);
    expect(status.vips).toEqual([expect.objectContaining({ prefix: VIP, healthy: true, announced: true })]);

    // A VIP's attributes edited: sent again as one UPDATE on the same session.
    const tagged = bgpSection(app.port, [first]) as { vips: Record<string, unknown>[] };
    tagged.vips[0]!.communities = ['65001:7'];
    write(tagged);
    const community = await first.until('the VIP with its community', (r) => routeUpdates(r).at(-1)?.attributes.communities?.map(communityText).join());
    expect(community).toBe('65001:7');
    expect(opens(first.received)).toBe(1);

    const secret = bgpSection(app.port, [first]) as { peers: Record<string, unknown>[] };
    secret.peers[0]!.passwordRef = 'bgp-md5';
    write(secret);
    await new Promise((r) => setTimeout(r, 300));
    expect((await fetchBgpStatus({ url: admin, path: '/bgp' })).peers).toEqual([expect.objectContaining({ state: 'Established' })]);
    expect(opens(first.received)).toBe(1);
  });

  it('drains when the section goes: GRACEFUL_SHUTDOWN first, then the VIP withdrawn and the session closed with Cease', async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const { write, admin } = await sidecarWith(bgpSection(app.port, [peer], { drainSeconds: 1 }));
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    write(undefined);
    const graceful = await peer.until('GRACEFUL_SHUTDOWN', (r) =>
      routeUpdates(r).find((u) => u.attributes.communities?.map(communityText).includes('65535:0')) ? Date.now() : undefined,
    );
    await peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? true : undefined), 3000);
    expect(Date.now() - graceful).toBeGreaterThanOrEqual(900);
    await peer.until('Cease', (r) => r.find((m) => m.type === 'notification' && m.code === 6));
    await until('no announcer on the admin port', async () => ((await get(`${admin}/bgp`)).status === 404 ? true : undefined));
  });

  it("starts the BGP drain with the sidecar's own on SIGTERM, and the drain lasts until the VIPs are withdrawn", async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const { sidecar } = await sidecarWith(bgpSection(app.port, [peer], { drainSeconds: 1 }));
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    const started = Date.now();
    const drained = sidecar.drain();
    await peer.until(
      'GRACEFUL_SHUTDOWN',
      (r) => routeUpdates(r).some((u) => u.attributes.communities?.map(communityText).includes('65535:0')) || undefined,
      500,
    );
    expect(sidecar.ready()).toBe(false);
    await drained;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(ribOf(peer.received)).toEqual([]);
    await peer.until('Cease', (r) => r.find((m) => m.type === 'notification' && m.code === 6));
  });
});

describe("the app's preStop hook: /drain/bgp on the probe ports", () => {
  const hasGracefulShutdown = (received: ReceivedMessage[]) =>
    routeUpdates(received).some((u) => u.attributes.communities?.map(communityText).includes('65535:0'));

  it("answers once the VIP is withdrawn after the drain time, then runs the app's own hook, and the sidecar keeps serving", async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const appHookCalls: { path: string | undefined; at: number }[] = [];
    const appHook = createHttpServer((req, res) => {
      appHookCalls.push({ path: req.url, at: Date.now() });
      res.end('bye\n');
    });
    appHook.listen(0, '127.0.0.1');
    await once(appHook, 'listening');
    cleanups.push(() => new Promise((r) => appHook.close(r)));
    const hookPort = (appHook.address() as { port: number }).port;
    const { sidecar } = await sidecarWith(
      bgpSection(app.port, [peer], { drainSeconds: 1 }),
      undefined,
      JSON.stringify({ web: { type: 'http', port: hookPort, path: '/shutdown' } }),
    );
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    const started = Date.now();
    const withdrawn = peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? Date.now() : undefined), 5000);
    // What the kubelet does with the hook the injector writes: a GET on the pod's address, waiting for the answer.
    const answer = await get(`http://127.0.0.1:${sidecar.ports.readinessProbe}/drain/bgp?container=web`);
    const answeredAt = Date.now();
    expect(answer.status).toBe(200);
    expect(answer.body).toBe(`withdrawn after a 1 s drain: ${VIP}; the app's own preStop: http 127.0.0.1:${hookPort}/shutdown: 200\n`);
    expect(hasGracefulShutdown(peer.received)).toBe(true);
    expect(await withdrawn).toBeLessThanOrEqual(answeredAt);
    expect(answeredAt - started).toBeGreaterThanOrEqual(1000);
    // The app's own hook ran once, after the drain.
    expect(appHookCalls).toEqual([{ path: '/shutdown', at: expect.any(Number) }]);
    expect(appHookCalls[0]!.at - started).toBeGreaterThanOrEqual(1000);
    await peer.until('Cease', (r) => r.find((m) => m.type === 'notification' && m.code === 6));
    // Only BGP drained: the proxies still serve the app until the kubelet stops it.
    expect(sidecar.ready()).toBe(true);
    // A second container's hook, then the sidecar's own SIGTERM, find the drain done.
    const second = Date.now();
    expect((await get(`http://127.0.0.1:${sidecar.ports.livenessProbe}/drain/bgp`)).status).toBe(200);
    await sidecar.drain();
    expect(Date.now() - second).toBeLessThan(900);
    expect(opens(peer.received)).toBe(1);
  });

  it('answers at once without a bgp section, and a section arriving afterwards starts no announcer', async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const { sidecar, write, admin } = await sidecarWith(undefined);
    const answer = await get(`http://127.0.0.1:${sidecar.ports.readinessProbe}/drain/bgp`);
    expect(answer).toEqual({ status: 200, body: 'no bgp section in sidecar.json: nothing to withdraw\n' });
    write(bgpSection(app.port, [peer]));
    await until('the section applied', () => (sidecar.current()?.sidecar.bgp ? true : undefined));
    await new Promise((r) => setTimeout(r, 1000));
    expect(peer.connections).toBe(0);
    expect((await get(`${admin}/bgp`)).status).toBe(404);
  });
});

describe("the app's readiness as a VIP's check", () => {
  it("announces while the app's readiness probe passes (as the sidecar runs it for the kubelet) and withdraws when it fails", async () => {
    let status = 200;
    const appServer = createHttpServer((_req, res) => res.writeHead(status).end());
    appServer.listen(0, '127.0.0.1');
    await once(appServer, 'listening');
    cleanups.push(() => new Promise((r) => appServer.close(r)));
    const appPort = (appServer.address() as { port: number }).port;
    const probes = { '/app-health/app/readyz': { kind: 'readiness', sidecarPort: 15902, original: { type: 'http', port: appPort, path: '/ready' } } };
    const peer = await fakePeer();
    const section = bgpSection(0, [peer]) as { vips: { healthCheck: Record<string, unknown> }[] };
    section.vips[0]!.healthCheck = { protocol: 'readiness', intervalMs: 100, timeoutMs: 500, healthyThreshold: 1, unhealthyThreshold: 2 };
    const { admin } = await sidecarWith(section, JSON.stringify(probes));
    await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined));
    expect((await fetchBgpStatus({ url: admin, path: '/bgp' })).vips[0]!.lastResult?.detail).toMatch(/^readiness probe: .*200/);
    status = 503;
    await peer.until('the withdrawal', (r) => (ribOf(r).length === 0 ? true : undefined));
    expect((await fetchBgpStatus({ url: admin, path: '/bgp' })).vips[0]).toMatchObject({
      healthy: false,
      announced: false,
      lastResult: { detail: expect.stringMatching(/^readiness probe: .*503/) },
    });
  });

  it('says so when the app has no readiness probe, and flb bgp refuses a readiness check (it has no app probes)', async () => {
    const peer = await fakePeer();
    const section = bgpSection(0, [peer]) as { vips: { healthCheck: Record<string, unknown> }[] };
    section.vips[0]!.healthCheck = { protocol: 'readiness', intervalMs: 100 };
    const { admin } = await sidecarWith(section);
    const vip = await until('a check', async () => (await fetchBgpStatus({ url: admin, path: '/bgp' }).catch(() => undefined))?.vips[0]?.lastResult);
    expect(vip.detail).toBe('the app declares no readiness probe (FLB_APP_PROBES): give the VIP a tcp or http check');
    const dir = mkdtempSync(join(tmpdir(), 'flb-bgp-readiness-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'bgp.json'), JSON.stringify(section));
    await expect(loadBgpConfig(join(dir, 'bgp.json'))).rejects.toThrow(
      "vips[0].healthCheck.protocol: readiness is the app's readiness as flb sidecar sees it: use tcp or http with flb bgp",
    );
    section.vips[0]!.healthCheck = { protocol: 'tcp', port: 8080 };
    writeFileSync(join(dir, 'bgp.json'), JSON.stringify(section));
    await expect(loadBgpConfig(join(dir, 'bgp.json'))).resolves.toBeDefined();
    section.vips[0]!.healthCheck = { protocol: 'http' };
    writeFileSync(join(dir, 'bgp.json'), JSON.stringify(section));
    await expect(loadBgpConfig(join(dir, 'bgp.json'))).rejects.toThrow('vips[0].healthCheck.port: tcp and http checks need a port');
  });
});

describe('loading', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));

  /**
   * `flb sidecar` from dist/ module by module (FLB_SIDECAR_UNBUNDLED: the bundle is one file), run
   * until `until` holds, then SIGTERM: the files it loaded under dist/sidecar/bgp/.
   */
  async function bgpFilesLoaded(sidecarJson: Record<string, unknown>, ready: (admin: string) => Promise<unknown>): Promise<string[]> {
    if (!existsSync(join(root, 'dist', 'sidecar', 'bgp', 'in-sidecar.js'))) throw new Error('dist/ is missing or old: run npm run build');
    const dir = mkdtempSync(join(tmpdir(), 'flb-sidecar-bgp-load-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'services'));
    writeFileSync(join(dir, 'mesh.json'), JSON.stringify(meshDoc()));
    writeFileSync(join(dir, 'sidecar.json'), JSON.stringify(sidecarJson));
    const loaded = join(dir, 'loaded.txt');
    writeFileSync(loaded, '');
    // A resolve hook (it runs on its own thread) writes down every module the sidecar resolves.
    const hooks = join(dir, 'hooks.mjs');
    writeFileSync(
      hooks,
      `import { appendFileSync } from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(loaded)}, r.url + '\\n'); return r; }\n`,
    );
    const register = join(dir, 'register.mjs');
    writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
    const firstPort = 40_000 + (process.pid % 1000) * 10;
    const ports = [
      '--admin-port',
      '--outbound-port',
      '--inbound-port',
      '--metrics-port',
      '--dns-port',
      '--liveness-probe-port',
      '--readiness-probe-port',
      '--startup-probe-port',
    ];
    const child = spawn(
      process.execPath,
      [
        '--import',
        pathToFileURL(register).href,
        join(root, 'bin', 'flb.js'),
        'sidecar',
        '--id',
        ID,
        '--config-dir',
        dir,
        ...ports.flatMap((flag, i) => [flag, String(firstPort + i)]),
      ],
      { env: { ...process.env, FLB_SIDECAR_UNBUNDLED: '1', FLB_LOG_LEVEL: 'silent', FLB_REPO_URL: '' }, stdio: 'ignore' },
    );
    cleanups.push(() => child.kill('SIGKILL'));
    await ready(`http://127.0.0.1:${firstPort}`);
    child.kill('SIGTERM');
    await once(child, 'exit');
    return readFileSync(loaded, 'utf8')
      .split('\n')
      .filter((url) => url.startsWith('file:'))
      .map((url) => fileURLToPath(url))
      .filter((file) => file.startsWith(join(root, 'dist', 'sidecar', 'bgp')));
  }

  it("a sidecar without a bgp section loads none of the speaker (only the bgp command's flags); one with a section loads it", async () => {
    const app = await tcpApp();
    const peer = await fakePeer();
    const applied = (admin: string) =>
      until(
        'the sidecar to apply its sidecar.json',
        async () => ((JSON.parse((await get(`${admin}/config_dump`).catch(() => ({ body: '{}' }))).body) as { version?: unknown }).version ? true : undefined),
        10_000,
      );
    const without = await bgpFilesLoaded(sidecarDoc(ID), applied);
    // Only `flb bgp`'s flags (sidecar/cli.ts registers the command in every sidecar's parser).
    expect(without).toEqual([join(root, 'dist', 'sidecar', 'bgp', 'cli.js')]);
    const withBgp = await bgpFilesLoaded(sidecarDoc(ID, { bgp: bgpSection(app.port, [peer]) }), async (admin) => {
      await applied(admin);
      await peer.until('the VIP', (r) => (ribOf(r).join() === VIP ? true : undefined), 10_000);
    });
    expect(withBgp).toContain(join(root, 'dist', 'sidecar', 'bgp', 'in-sidecar.js'));
  }, 30_000);
});
