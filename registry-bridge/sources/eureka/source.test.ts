import { afterEach, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { EurekaSourceSchema, type Service } from '../../../common/contract/index.js';
import { createLogger } from '../../../common/log.js';
import { createCertificateAuthority, issueCertificate } from '../../../common/pki.js';
import type { CatalogUpdates } from '../../core/types.js';
import { EurekaSource } from './source.js';

// The Spring Cloud server of the e2e tests serves only /eureka/; Netflix's serves /eureka/v2/. These
// tests serve answers recorded from the real server under /eureka/v2/ (testdata/, see registry.test.ts).
const recorded = (name: string) => readFileSync(join(import.meta.dirname, 'testdata', name), 'utf8');
const log = createLogger('eureka-source-test', 'silent');

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A stand-in answering with recorded bodies; `routes` is looked up per request, so a test changes answers as it goes. */
class RecordedServer {
  readonly requests: string[] = [];
  routes: Record<string, Handler> = {};
  constructor(readonly server: Server) {
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.requests.push(req.url ?? '');
      const handler = this.routes[req.url ?? ''];
      if (handler) handler(req, res);
      else res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    });
  }
  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }
  json(path: string, body: string | (() => string)): void {
    this.routes[path] = (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(typeof body === 'function' ? body() : body);
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const servers: RecordedServer[] = [];
const sources: EurekaSource[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const source of sources.splice(0)) await source.stop();
  for (const server of servers.splice(0)) await server.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function serve(https?: { cert: string; key: string }): Promise<RecordedServer> {
  const server = new RecordedServer(https ? createHttpsServer(https) : createHttpServer());
  await new Promise<void>((resolve) => server.server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return server;
}

/** A delta with no change, for a server whose registry is still `apps`. */
const noChange = (apps: string) =>
  JSON.stringify({ applications: { versions__delta: '9', apps__hashcode: JSON.parse(apps).applications.apps__hashcode, application: [] } });

function v2(server: RecordedServer, apps: string, delta = noChange(apps)) {
  server.json('/eureka/v2/apps', apps);
  server.json('/eureka/v2/apps/delta', delta);
}

/** What the catalog was told, as the catalog would hold it. */
class Told implements CatalogUpdates {
  readonly services = new Map<string, Service>();
  readonly changes: string[] = [];
  syncedTimes = 0;
  upsertService(_source: string, service: Service): void {
    const before = this.services.get(service.id);
    if (before && JSON.stringify(before) === JSON.stringify(service)) return;
    this.services.set(service.id, service);
    this.changes.push(`upsert ${service.id}`);
  }
  removeService(_source: string, id: string): void {
    this.services.delete(id);
    this.changes.push(`remove ${id}`);
  }
  upsertSidecar(): void {}
  removeSidecar(): void {}
  synced(): void {
    this.syncedTimes++;
  }
  endpoints(id: string): string[] {
    return (this.services.get(id)?.endpoints ?? []).map((e) => `${e.address}:${e.port}${e.healthy ? '' : ' (unhealthy)'}`);
  }
}

function source(config: Record<string, unknown>, now?: () => number): { source: EurekaSource; told: Told } {
  const s = new EurekaSource({ config: EurekaSourceSchema.parse({ kind: 'eureka', intervalSeconds: 300, ...config }), log, ...(now ? { now } : {}) });
  sources.push(s);
  const told = new Told();
  // Started with a long interval: each test drives rounds itself with sync().
  s.start(told);
  return { source: s, told };
}

const eventually = async (what: string, check: () => boolean) => {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('the Eureka source against recorded answers under /eureka/v2', () => {
  it('publishes every app from the first full fetch and says it has synced', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    expect([...told.services.keys()].sort()).toEqual(['inventory.eureka.eureka', 'orders.eureka.eureka', 'payments.eureka.eureka']);
    expect(told.endpoints('orders.eureka.eureka')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    expect(s.status()).toMatchObject({ kind: 'eureka', state: 'synced', services: 3, endpoints: 4, errors: 0 });
    expect(server.requests).toEqual(['/eureka/v2/apps']);
  });

  it('never publishes what a bridge sink wrote (flomesh-origin metadata), and still counts it in the hashcode', async () => {
    const server = await serve();
    const apps = JSON.parse(recorded('apps-1.json')) as {
      applications: { apps__hashcode: string; application: { name: string; instance: Record<string, unknown>[] }[] };
    };
    const orders = apps.applications.application.find((a) => a.name === 'ORDERS')!;
    const written = (ip: string, app: string) => ({
      ...orders.instance[0],
      instanceId: `${ip}:web.shop:8080`,
      app,
      ipAddr: ip,
      hostName: ip,
      status: 'UP',
      metadata: { 'flomesh-origin': 'kubernetes', 'flomesh-writer': 'flb-local/eureka' },
    });
    // An app only the sink wrote (a Kubernetes Service), and one instance written into an app VMs register too.
    apps.applications.application.push({ name: 'WEB', instance: [written('10.244.0.5', 'WEB'), written('10.244.0.6', 'WEB')] });
    orders.instance.push(written('10.244.0.7', 'ORDERS'));
    const ups = Number(/UP_(\d+)_/.exec(apps.applications.apps__hashcode)![1]) + 3;
    apps.applications.apps__hashcode = apps.applications.apps__hashcode.replace(/UP_\d+_/, `UP_${ups}_`);
    v2(server, JSON.stringify(apps));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    expect([...told.services.keys()].sort()).toEqual(['inventory.eureka.eureka', 'orders.eureka.eureka', 'payments.eureka.eureka']);
    expect(told.endpoints('orders.eureka.eureka')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080']);
    await s.sync();
    // The local copy holds them: the delta's hashcode matches, no full fetch.
    expect(s.counters).toEqual({ fullFetches: 1, deltaFetches: 1, reconciliations: 0 });
  });

  it('follows a delta whose hashcode matches without fetching everything again', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'), recorded('delta-1.json'));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    told.changes.length = 0;
    await s.sync();
    expect(s.counters).toEqual({ fullFetches: 1, deltaFetches: 1, reconciliations: 0 });
    expect(told.changes.sort()).toEqual(['remove payments.eureka.eureka', 'upsert inventory.eureka.eureka', 'upsert orders.eureka.eureka']);
    expect(told.endpoints('orders.eureka.eureka')).toEqual(['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080', '10.1.0.4:8080']);
    // INVENTORY is OUT_OF_SERVICE: still registered, nothing to reach.
    expect(told.endpoints('inventory.eureka.eureka')).toEqual([]);
    // The same delta again changes nothing and still matches.
    told.changes.length = 0;
    await s.sync();
    expect(told.changes).toEqual([]);
    expect(s.counters.reconciliations).toBe(0);
  });

  it('fetches everything when the delta leaves a hashcode the server does not have', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'), recorded('delta-empty.json'));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    // The server moved on (apps-2) but its delta queue no longer holds the changes: only the hashcode says so.
    server.json('/eureka/v2/apps', recorded('apps-2.json'));
    await s.sync();
    expect(s.counters).toEqual({ fullFetches: 2, deltaFetches: 1, reconciliations: 1 });
    expect(told.services.has('payments.eureka.eureka')).toBe(false);
    expect(told.endpoints('orders.eureka.eureka')).toHaveLength(4);
    expect(server.requests).toEqual(['/eureka/v2/apps', '/eureka/v2/apps/delta', '/eureka/v2/apps']);
  });

  it('publishes what a mismatched delta changed even when the full fetch after it fails once', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    // The delta holds every change but its hashcode disagrees (a change is missing from it), and
    // the full fetch it calls for fails.
    const delta = JSON.parse(recorded('delta-1.json'));
    delta.applications.apps__hashcode = 'UP_99_';
    server.json('/eureka/v2/apps/delta', JSON.stringify(delta));
    server.routes['/eureka/v2/apps'] = (_q, res) => res.writeHead(503).end();
    await s.sync();
    expect(s.status().lastError).toMatch(/answered 503/);
    // The full answer, when it comes, is what the delta had already made of the local copy.
    v2(server, recorded('apps-2.json'));
    await s.sync();
    expect(told.services.has('payments.eureka.eureka')).toBe(false);
    expect(told.endpoints('orders.eureka.eureka')).toHaveLength(4);
  });

  it('finds the base path of a server URL that has none (/eureka/, then /eureka/v2/)', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    const { told } = source({ servers: [`http://127.0.0.1:${server.port}`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    expect(server.requests).toEqual(['/eureka/apps', '/eureka/v2/apps']);
  });

  it('says the base path is wrong when a named one answers 404', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    const { source: s } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/`] });
    await eventually('an error', () => s.status().errors > 0);
    expect(s.status()).toMatchObject({ state: 'starting', lastError: expect.stringContaining('/eureka/apps answered 404') });
  });

  it('keeps the last good services when the server answers garbage, truncated or huge bodies, or goes away; stale after staleAfterSeconds', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    let now = 1_000_000;
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`], staleAfterSeconds: 30, maxResponseBytes: 8192 }, () => now);
    await eventually('the first sync', () => told.syncedTimes === 1);
    const published = JSON.stringify([...told.services]);
    const failures: [string, Handler][] = [
      ['not JSON', (_q, res) => res.writeHead(200).end('<html>Bad Gateway</html>')],
      ['truncated JSON', (_q, res) => res.writeHead(200).end(recorded('delta-1.json').slice(0, 300))],
      ['a body over maxResponseBytes', (_q, res) => res.writeHead(200).end(`{"applications": {"x": "${'x'.repeat(10_000)}"}}`)],
      ['a gzip bomb', (_q, res) => res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(1_000_000, 32)))],
      [
        'a connection cut mid-answer',
        (_q, res) => (res.writeHead(200, { 'content-length': '5000' }).write('{"applications":'), setTimeout(() => res.destroy(), 20)),
      ],
      ['a 503', (_q, res) => res.writeHead(503).end()],
    ];
    const errors: string[] = [];
    for (const [what, handler] of failures) {
      server.routes['/eureka/v2/apps/delta'] = handler;
      now += 10_000;
      await s.sync();
      errors.push(`${what}: ${s.status().lastError}`);
      expect(JSON.stringify([...told.services])).toBe(published);
    }
    expect(errors).toEqual([
      expect.stringMatching(/^not JSON: .*XML \(or HTML\), not JSON/),
      expect.stringMatching(/^truncated JSON: .*not JSON/),
      expect.stringMatching(/^a body over maxResponseBytes: .*over maxResponseBytes \(8192/),
      expect.stringMatching(/^a gzip bomb: .*over maxResponseBytes \(8192/),
      expect.stringMatching(/^a connection cut mid-answer: .*broke off/),
      expect.stringMatching(/^a 503: .*answered 503/),
    ]);
    expect(s.status()).toMatchObject({ state: 'stale', errors: 6, services: 3 });
    // Back: fresh again, nothing changed, nothing removed.
    v2(server, recorded('apps-1.json'));
    now += 1000;
    told.changes.length = 0;
    await s.sync();
    expect(s.status()).toMatchObject({ state: 'synced', services: 3 });
    expect(s.status().lastError).toBeUndefined();
    expect(told.changes).toEqual([]);
  });

  it('moves on to the next peer when one is down or answers garbage, and stays there', async () => {
    const good = await serve();
    v2(good, recorded('apps-1.json'));
    const broken = await serve();
    broken.routes['/eureka/v2/apps'] = (_q, res) => res.writeHead(200).end('{"applications": ');
    const closed = await serve();
    const closedPort = closed.port;
    await closed.close();
    servers.splice(servers.indexOf(closed), 1);
    const { source: s, told } = source({
      servers: [`http://127.0.0.1:${closedPort}/eureka/v2/`, `http://127.0.0.1:${broken.port}/eureka/v2/`, `http://127.0.0.1:${good.port}/eureka/v2/`],
    });
    await eventually('the first sync', () => told.syncedTimes === 1);
    expect(told.services.size).toBe(3);
    expect(s.status().address).toBe(`http://127.0.0.1:${good.port}/eureka/v2/`);
    await s.sync();
    expect(good.requests).toEqual(['/eureka/v2/apps', '/eureka/v2/apps/delta']);
    expect(broken.requests).toEqual(['/eureka/v2/apps']);
  });

  it('fetches everything when a delta comes from another peer than the local copy', async () => {
    const first = await serve();
    v2(first, recorded('apps-1.json'));
    const second = await serve();
    v2(second, recorded('apps-2.json'));
    const { source: s, told } = source({ servers: [`http://127.0.0.1:${first.port}/eureka/v2/`, `http://127.0.0.1:${second.port}/eureka/v2/`] });
    await eventually('the first sync', () => told.syncedTimes === 1);
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    await s.sync();
    expect(second.requests).toEqual(['/eureka/v2/apps/delta', '/eureka/v2/apps']);
    expect(told.services.has('payments.eureka.eureka')).toBe(false);
  });

  it('sends basic auth with the password from its file, and says so when refused', async () => {
    const server = await serve();
    const dir = mkdtempSync(join(tmpdir(), 'flb-eureka-auth-'));
    dirs.push(dir);
    const passwordFile = join(dir, 'password');
    writeFileSync(passwordFile, 's3cret\n');
    const expected = `Basic ${Buffer.from('bridge:s3cret').toString('base64')}`;
    server.routes['/eureka/v2/apps'] = (req, res) => {
      if (req.headers.authorization !== expected) res.writeHead(401, { 'www-authenticate': 'Basic realm="eureka"' }).end();
      else res.writeHead(200).end(recorded('apps-1.json'));
    };
    const { told } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`], basicAuth: { username: 'bridge', passwordFile } });
    await eventually('the first sync', () => told.syncedTimes === 1);

    const { source: refused } = source({ servers: [`http://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('an error', () => refused.status().errors > 0);
    expect(refused.status().lastError).toMatch(/answered 401: the server wants credentials \(basicAuth\)/);

    const { source: missing } = source({
      servers: [`http://127.0.0.1:${server.port}/eureka/v2/`],
      basicAuth: { username: 'bridge', passwordFile: join(dir, 'none') },
    });
    await eventually('an error', () => missing.status().errors > 0);
    expect(missing.status().lastError).toMatch(/cannot read basicAuth.passwordFile .*none/);
  });

  it('reads over TLS with the CA it is given, and refuses a server its CA did not sign', async () => {
    const ca = createCertificateAuthority('flb-test-eureka-ca');
    const pair = issueCertificate(ca, { commonName: 'eureka', ipAddresses: ['127.0.0.1'], usage: 'server' });
    const server = await serve({ cert: pair.certPem, key: pair.keyPem });
    v2(server, recorded('apps-1.json'));
    const dir = mkdtempSync(join(tmpdir(), 'flb-eureka-tls-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    const { told } = source({ servers: [`https://127.0.0.1:${server.port}/eureka/v2/`], tls: { caFile: join(dir, 'ca.pem') } });
    await eventually('the first sync', () => told.syncedTimes === 1);
    expect(told.services.size).toBe(3);

    const { source: untrusting } = source({ servers: [`https://127.0.0.1:${server.port}/eureka/v2/`] });
    await eventually('an error', () => untrusting.status().errors > 0);
    expect(untrusting.status().lastError).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|unable to verify/i);
  });

  it('stops asking once stopped', async () => {
    const server = await serve();
    v2(server, recorded('apps-1.json'));
    const s = new EurekaSource({
      config: EurekaSourceSchema.parse({ kind: 'eureka', servers: [`http://127.0.0.1:${server.port}/eureka/v2/`], intervalSeconds: 1 }),
      log,
    });
    const told = new Told();
    s.start(told);
    await eventually('the first sync', () => told.syncedTimes === 1);
    await s.stop();
    const asked = server.requests.length;
    await new Promise((r) => setTimeout(r, 1300));
    expect(server.requests.length).toBe(asked);
  });
});
