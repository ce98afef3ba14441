// The Consul source against answers a real Consul would not give (the real one is in
// test-e2e/bridge-consul.test.ts): a stand-in HTTP server that holds blocking queries as Consul
// does and answers what each test sets, garbage and all.
import { afterEach, describe, expect, it } from '@jest/globals';
import { getEventListeners } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConsulSourceSchema, type Service } from '../../../common/contract/index.js';
import { createLogger } from '../../../common/log.js';
import type { CatalogUpdates } from '../../core/types.js';
import { ConsulSource } from './source.js';

type StartReads = NonNullable<ConstructorParameters<typeof ConsulSource>[0]['startReads']>;

const log = createLogger('consul-source-test', process.env.FLB_TEST_LOG === '1' ? 'debug' : 'silent');

interface Instance {
  node: string;
  address: string;
  port: number;
  status?: string;
  /** Registered without a check (Consul then counts it passing, and no list of checks names it). */
  noCheck?: boolean;
}

/**
 * A Consul stand-in: services, their instances and one check each, node checks. As in Consul, the
 * raft index moves on every write, the service list's index only on registrations, the checks'
 * index on any check change (a registration brings its check), and a blocking query returns when
 * the index of what it reads moved past the one it sent, else after its wait.
 */
class FakeConsul {
  index = 10;
  servicesIndex = 10;
  checksIndex = 10;
  readonly services = new Map<string, Instance[]>();
  /** Node checks (serfHealth) by node; a node not here has none. */
  readonly nodeChecks = new Map<string, string>();
  /** Raw bodies that replace the answer of a path (garbage, huge). */
  readonly override = new Map<string, string>();
  /** X-Consul-Index sent instead of the real one (an index that went backwards, or 0). */
  forcedIndex?: number;
  /** Milliseconds to hold the answer of a path after it is ready (to order two answers). */
  readonly delay = new Map<string, number>();
  readonly queries: string[] = [];
  /** Paths answered, and those refused while away, in order. */
  readonly answered: string[] = [];
  readonly refused: string[] = [];
  /** Away (stopped, restarting, electing a leader): every query answers 500, as Consul does without a leader. */
  private away = false;
  private waiting: (() => void)[] = [];
  private server?: Server;

  async start(): Promise<string> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** A registration change (instances or services came or went), or with `checksOnly` a check's status. */
  change(apply: () => void, checksOnly = false): void {
    apply();
    this.index++;
    if (!checksOnly) this.servicesIndex = this.index;
    this.checksIndex = this.index;
    for (const wake of this.waiting.splice(0)) wake();
  }

  /** Stops answering; the blocking queries held answer at once (refused). */
  goAway(): void {
    this.away = true;
    for (const wake of this.waiting.splice(0)) wake();
  }

  comeBack(): void {
    this.away = false;
  }

  setStatus(service: string, i: number, status: string): void {
    this.change(() => Object.assign(this.services.get(service)![i]!, { status }), true);
  }

  setNodeStatus(node: string, status: string): void {
    this.change(() => this.nodeChecks.set(node, status), true);
  }

  /** How many queries of this path (without its query string) were sent. */
  count(path: string): number {
    return this.queries.filter((q) => q.split('?')[0] === path).length;
  }

  private checks(): { Node: string; CheckID: string; Status: string; ServiceID: string; ServiceName: string }[] {
    const services = [...this.services].flatMap(([name, instances]) =>
      instances
        .filter((i) => !i.noCheck)
        .map((i) => ({ Node: i.node, CheckID: `service:${name}-${i.node}`, Status: i.status ?? 'passing', ServiceID: `${name}-${i.node}`, ServiceName: name })),
    );
    const nodes = [...this.nodeChecks].map(([node, status]) => ({ Node: node, CheckID: 'serfHealth', Status: status, ServiceID: '', ServiceName: '' }));
    return [...services, ...nodes];
  }

  private indexOf(path: string): number {
    if (path === '/v1/catalog/services') return this.servicesIndex;
    if (path.startsWith('/v1/health/state/')) return this.checksIndex;
    return this.index;
  }

  async stop(): Promise<void> {
    for (const wake of this.waiting.splice(0)) wake();
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url!, 'http://x');
    this.queries.push(`${url.pathname}${url.search}`);
    const asked = Number(url.searchParams.get('index') ?? 0);
    const deadline = Date.now() + Number.parseInt(url.searchParams.get('wait') ?? '1', 10) * 1000;
    while (asked > 0 && asked >= this.indexOf(url.pathname) && Date.now() < deadline && this.server?.listening && !this.away) {
      await new Promise<void>((resolve) => {
        this.waiting.push(resolve);
        setTimeout(resolve, deadline - Date.now());
      });
    }
    if (this.away) {
      this.refused.push(url.pathname);
      res.writeHead(500, { 'content-type': 'text/plain' }).end('No cluster leader');
      return;
    }
    const send = (body: unknown) => {
      const raw = this.override.get(url.pathname) ?? JSON.stringify(body);
      const index = String(this.forcedIndex ?? this.indexOf(url.pathname));
      const answer = () => {
        this.answered.push(url.pathname);
        res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': index }).end(raw);
      };
      const delay = this.delay.get(url.pathname);
      if (delay) setTimeout(answer, delay);
      else answer();
    };
    if (url.pathname === '/v1/catalog/services') return send(Object.fromEntries([...this.services.keys()].map((s) => [s, []])));
    if (url.pathname === '/v1/health/state/any') return send(this.checks());
    if (url.pathname.startsWith('/v1/health/node/')) {
      const node = decodeURIComponent(url.pathname.slice('/v1/health/node/'.length));
      return send(this.checks().filter((c) => c.Node === node));
    }
    if (url.pathname.startsWith('/v1/health/state/')) {
      const status = url.pathname.slice('/v1/health/state/'.length);
      return send(this.checks().filter((c) => c.Status === status));
    }
    if (url.pathname === '/v1/catalog/nodes') return send([...this.nodeAddresses()].map(([node, address]) => ({ Node: node, Address: address })));
    if (url.pathname.startsWith('/v1/catalog/node-services/')) {
      const node = decodeURIComponent(url.pathname.slice('/v1/catalog/node-services/'.length));
      const address = this.nodeAddresses().get(node);
      if (address === undefined) return send({ Node: null, Services: null });
      const services = [...this.services].flatMap(([name, instances]) => instances.filter((i) => i.node === node).map((i) => this.serviceOf(name, i)));
      return send({ Node: { Node: node, Address: address }, Services: services });
    }
    const service = decodeURIComponent(url.pathname.slice('/v1/health/service/'.length));
    return send(
      (this.services.get(service) ?? []).map((i) => ({
        Node: { Node: i.node, Address: this.nodeAddresses().get(i.node) },
        Service: this.serviceOf(service, i),
        Checks: [
          ...(this.nodeChecks.has(i.node)
            ? [{ Node: i.node, CheckID: 'serfHealth', Status: this.nodeChecks.get(i.node), ServiceID: '', ServiceName: '' }]
            : []),
          ...(i.noCheck
            ? []
            : [
                {
                  Node: i.node,
                  CheckID: `service:${service}-${i.node}`,
                  Status: i.status ?? 'passing',
                  ServiceID: `${service}-${i.node}`,
                  ServiceName: service,
                },
              ]),
        ],
      })),
    );
  }

  /** A node's address is its first instance's; an instance elsewhere has its own (Service.Address), as Consul's rule reads it. */
  private nodeAddresses(): Map<string, string> {
    const addresses = new Map<string, string>();
    for (const instances of this.services.values()) for (const i of instances) if (!addresses.has(i.node)) addresses.set(i.node, i.address);
    for (const node of this.nodeChecks.keys()) if (!addresses.has(node)) addresses.set(node, '10.255.0.1');
    return addresses;
  }

  private serviceOf(name: string, i: Instance) {
    const address = this.nodeAddresses().get(i.node) === i.address ? '' : i.address;
    return { ID: `${name}-${i.node}`, Service: name, Address: address, Port: i.port };
  }
}

class Recorder implements CatalogUpdates {
  readonly services = new Map<string, Service>();
  syncs = 0;
  upsertService(_source: string, service: Service) {
    this.services.set(service.id, service);
  }
  removeService(_source: string, id: string) {
    this.services.delete(id);
  }
  upsertSidecar() {}
  removeSidecar() {}
  synced() {
    this.syncs++;
  }
}

const until = async <T>(what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** The two ways the start can read every service: tests that concern what follows run after each. */
const START_READS: StartReads[] = ['per-service', 'per-node'];

describe('the Consul source', () => {
  let fake: FakeConsul;
  let source: ConsulSource | undefined;
  afterEach(async () => {
    await source?.stop();
    await fake.stop();
  });

  let address: string;
  /** A source on the running stand-in, synced once. */
  const startSource = async (extra: Record<string, unknown>, startReads?: StartReads) => {
    const config = ConsulSourceSchema.parse({
      kind: 'consul',
      address,
      datacenter: 'dc1',
      waitSeconds: 1,
      staleAfterSeconds: 5,
      minQueryIntervalMs: 10,
      ...extra,
    });
    const started = new ConsulSource({ config, log, ...(startReads ? { startReads } : {}) });
    const updates = new Recorder();
    started.start(updates);
    await until('the first sync', () => (updates.syncs === 1 ? true : undefined));
    return { source: started, updates };
  };
  const webAndApi = (consul: FakeConsul) => {
    consul.services.set('web', [
      { node: 'n1', address: '10.0.0.1', port: 8080 },
      { node: 'n2', address: '10.0.0.2', port: 8080 },
    ]);
    consul.services.set('api', [{ node: 'n3', address: '10.0.0.3', port: 9000 }]);
  };
  const start = async (extra: Record<string, unknown> = {}, startReads?: StartReads, fill = webAndApi) => {
    fake = new FakeConsul();
    fill(fake);
    address = await fake.start();
    const started = await startSource(extra, startReads);
    source = started.source;
    if (startReads === 'per-node') expect(fetches()).toBe(0);
    return started.updates;
  };
  const endpointsOf = (updates: Recorder, id: string) => updates.services.get(id)?.endpoints.map((e) => `${e.address}${e.healthy ? '' : ' unhealthy'}`);

  const fetchedSince = (before: number) =>
    fake.queries
      .filter((q) => q.startsWith('/v1/health/service/'))
      .slice(before)
      .map((q) => q.split('?')[0]);
  const fetches = () => fake.queries.filter((q) => q.startsWith('/v1/health/service/')).length;

  it('lists every service once, then follows a check change in one service without reading every check', async () => {
    const updates = await start();
    expect([...updates.services.keys()].sort()).toEqual(['api.dc1.consul', 'web.dc1.consul']);
    const [fetchesBefore, allChecksBefore] = [fetches(), fake.count('/v1/health/state/any')];
    // Nor at start: the fetches of every service say what every check is.
    expect(allChecksBefore).toBe(0);
    fake.setStatus('web', 1, 'critical');
    await until('web-2 unhealthy', () => (endpointsOf(updates, 'web.dc1.consul')?.includes('10.0.0.2 unhealthy') ? true : undefined));
    fake.setStatus('web', 1, 'warning');
    // Seen by both status watches: fetched once or twice.
    await until('web-2 still unhealthy, now warning', () => (fetches() >= fetchesBefore + 2 ? true : undefined));
    fake.setStatus('web', 1, 'passing');
    await until('web-2 healthy again', () => (endpointsOf(updates, 'web.dc1.consul')?.join() === '10.0.0.1,10.0.0.2' ? true : undefined));
    // Only the service whose check moved was fetched again; a flip reads the failing checks only,
    // never every check (at 100,000 checks that list is 45 MB).
    expect(new Set(fetchedSince(fetchesBefore))).toEqual(new Set(['/v1/health/service/web']));
    expect(fake.count('/v1/health/state/any')).toBe(allChecksBefore);
    expect(source!.status()).toMatchObject({ state: 'synced', services: 2, endpoints: 3, errors: 0 });
  });

  it('finds an instance added to or removed from a service by reading every check once, and fetches that service only', async () => {
    const updates = await start({ sweepIntervalSeconds: 3600 });
    const [fetchesBefore, allChecksBefore] = [fetches(), fake.count('/v1/health/state/any')];
    fake.change(() => fake.services.get('api')!.push({ node: 'n4', address: '10.0.0.4', port: 9000 }));
    await until('api on two nodes', () => (endpointsOf(updates, 'api.dc1.consul')?.length === 2 ? true : undefined));
    fake.change(() => fake.services.get('web')!.shift());
    await until('web on one node', () => (endpointsOf(updates, 'web.dc1.consul')?.join() === '10.0.0.2' ? true : undefined));
    expect(fetchedSince(fetchesBefore)).toEqual(['/v1/health/service/api', '/v1/health/service/web']);
    expect(fake.count('/v1/health/state/any')).toBe(allChecksBefore + 2);
    // A registration after the first read is found against that read.
    fake.change(() => fake.services.get('api')!.push({ node: 'n6', address: '10.0.0.6', port: 9000 }));
    await until('api on three nodes', () => (endpointsOf(updates, 'api.dc1.consul')?.length === 3 ? true : undefined));
    expect(fetchedSince(fetchesBefore)).toEqual(['/v1/health/service/api', '/v1/health/service/web', '/v1/health/service/api']);
  });

  /**
   * Eleven services on four nodes, with what the start must carry over either way: a node's address
   * or the instance's own, node checks failing, an instance without a check, one on a node whose
   * check warns, Consul's own service left out, two names that make one label, Connect proxies.
   */
  const manyPerNode = (consul: FakeConsul) => {
    consul.services.set('web', [
      { node: 'n1', address: '10.0.0.1', port: 8080 },
      { node: 'n2', address: '10.0.0.2', port: 8080, status: 'warning' },
      { node: 'n3', address: '10.0.0.3', port: 8080, status: 'critical' },
    ]);
    consul.services.set('api', [
      { node: 'n1', address: '10.0.1.1', port: 9000 },
      { node: 'n2', address: '10.0.0.2', port: 9000, noCheck: true },
    ]);
    consul.services.set('db', [{ node: 'n3', address: '10.0.0.3', port: 5432 }]);
    consul.services.set('cache', [
      { node: 'n2', address: '10.0.0.2', port: 6379 },
      { node: 'n4', address: '10.0.0.4', port: 6379 },
    ]);
    consul.services.set('queue', [{ node: 'n4', address: '10.0.0.4', port: 5672, status: 'warning' }]);
    consul.services.set('consul', [{ node: 'n1', address: '10.0.0.1', port: 8300 }]);
    consul.services.set('Web_API', [{ node: 'n1', address: '10.0.0.1', port: 80 }]);
    consul.services.set('web-api', [{ node: 'n4', address: '10.0.0.4', port: 80 }]);
    for (const name of ['mail', 'search', 'auth']) consul.services.set(name, [{ node: 'n3', address: '10.0.0.3', port: 25 }]);
    consul.nodeChecks.set('n3', 'critical');
    consul.nodeChecks.set('n4', 'passing');
    consul.nodeChecks.set('n2', 'warning');
  };
  const published = (updates: Recorder) => [...updates.services.values()].sort((a, b) => (a.id < b.id ? -1 : 1));

  it('reads every service per node at start when that takes fewer reads: its services and its checks', async () => {
    const updates = await start({}, undefined, manyPerNode);
    // Four nodes against ten services listed (consul is left out): 2 x 4 reads instead of 10.
    expect(fetches()).toBe(0);
    expect(fake.count('/v1/catalog/nodes')).toBe(1);
    expect(fake.count('/v1/health/state/any')).toBe(0);
    const nodeReads = (prefix: string) => fake.queries.filter((q) => q.startsWith(prefix)).map((q) => q.split('?')[0]!.slice(prefix.length));
    expect(nodeReads('/v1/catalog/node-services/').sort()).toEqual(['n1', 'n2', 'n3', 'n4']);
    expect(nodeReads('/v1/health/node/').sort()).toEqual(['n1', 'n2', 'n3', 'n4']);
    expect(endpointsOf(updates, 'web.dc1.consul')).toEqual(['10.0.0.1', '10.0.0.2 unhealthy', '10.0.0.3 unhealthy']);
    expect(source!.status()).toMatchObject({ state: 'synced', services: 10, errors: 0 });
  });

  it('publishes the same services read per node as read per service, and follows changes the same after', async () => {
    const viaServices = await start({}, 'per-service', manyPerNode);
    const viaNodes = await startSource({}, 'per-node');
    try {
      expect(published(viaNodes.updates)).toEqual(published(viaServices));
      expect(published(viaServices).length).toBe(10);
      expect(viaNodes.source.status()).toMatchObject({ services: 10, endpoints: source!.status().endpoints, errors: 0 });
      // What the start noted (checks, services per node) serves the watches after it the same.
      fake.setNodeStatus('n3', 'passing');
      fake.setNodeStatus('n2', 'passing');
      fake.setStatus('web', 1, 'passing');
      fake.change(() => fake.services.get('cache')!.pop());
      for (const updates of [viaServices, viaNodes.updates]) {
        await until('n2 and n3 passing, web on n2 passing, cache on n2 only', () =>
          endpointsOf(updates, 'web.dc1.consul')?.join() === '10.0.0.1,10.0.0.2,10.0.0.3 unhealthy' &&
          endpointsOf(updates, 'cache.dc1.consul')?.join() === '10.0.0.2' &&
          endpointsOf(updates, 'db.dc1.consul')?.join() === '10.0.0.3'
            ? true
            : undefined,
        );
      }
      expect(published(viaNodes.updates)).toEqual(published(viaServices));
    } finally {
      await viaNodes.source.stop();
    }
  });

  it('fetches on its own every service a node read could not give, and publishes the same', async () => {
    const viaServices = await start({}, 'per-service', manyPerNode);
    fake.override.set('/v1/catalog/node-services/n2', '{"Node": {"Node": "n2"}, "Services": "garbage"}');
    const fetchedBefore = fetches();
    const fellBack = await startSource({});
    try {
      expect(fellBack.source.status().lastError).toMatch(/reading every service per node \(each is fetched on its own instead\): .*node-services\/n2/);
      expect(fetches() - fetchedBefore).toBe(10);
      expect(published(fellBack.updates)).toEqual(published(viaServices));
    } finally {
      await fellBack.source.stop();
    }
  });

  it('finds an instance registered without a check by a sweep, at most every sweepIntervalSeconds', async () => {
    const updates = await start({ sweepIntervalSeconds: 1 });
    fake.change(() => fake.services.get('api')!.push({ node: 'n5', address: '10.0.0.5', port: 9000, noCheck: true }));
    await until('api on two nodes', () => (endpointsOf(updates, 'api.dc1.consul')?.join() === '10.0.0.3,10.0.0.5' ? true : undefined));
    // Every service was fetched again (the sweep), since no check said which one moved.
    expect(fake.queries.some((q) => q.startsWith('/v1/health/service/web'))).toBe(true);
  });

  it.each(START_READS)('fetches every service on a node whose node check fails, and those only (start read %s)', async (startReads) => {
    const updates = await start({}, startReads);
    const fetchesBefore = fetches();
    fake.setNodeStatus('n1', 'critical');
    await until('web on n1 unhealthy', () => (endpointsOf(updates, 'web.dc1.consul')?.includes('10.0.0.1 unhealthy') ? true : undefined));
    expect(fetchedSince(fetchesBefore)).toEqual(['/v1/health/service/web']);
    expect(endpointsOf(updates, 'api.dc1.consul')).toEqual(['10.0.0.3']);
  });

  it('keeps the last good state of a service whose answer is garbage, huge or cut, and of the rest', async () => {
    const updates = await start({ maxResponseBytes: 4096 });
    const before = updates.services.get('web.dc1.consul');
    for (const body of ['<html>oops</html>', `[${'{"Node":{},"Service":{}},'.repeat(400)}{}]`, '[{"Node":{"Node":"n1","Addr']) {
      fake.override.set('/v1/health/service/web', body);
      const errors = source!.status().errors;
      fake.setStatus('web', 0, fake.services.get('web')![0]!.status === 'warning' ? 'passing' : 'warning');
      await until('the refused answer counted', () => (source!.status().errors > errors ? true : undefined));
      expect(source!.status().lastError).toMatch(/fetching service web: GET \/v1\/health\/service\/web\?dc=dc1: (not JSON|the answer passed maxResponseBytes)/);
      expect(updates.services.get('web.dc1.consul')).toEqual(before);
    }
    // Good again: the retry picks it up.
    fake.override.delete('/v1/health/service/web');
    await until('web updated', () => (endpointsOf(updates, 'web.dc1.consul')?.includes('10.0.0.1 unhealthy') ? true : undefined));
    expect(updates.services.has('api.dc1.consul')).toBe(true);
  });

  it('removes nothing when the service list is garbage', async () => {
    const updates = await start();
    fake.override.set('/v1/catalog/services', '"not a list"');
    const errors = source!.status().errors;
    fake.change(() => fake.services.delete('api'));
    await until('the refused list counted', () => (source!.status().errors > errors ? true : undefined));
    expect([...updates.services.keys()].sort()).toEqual(['api.dc1.consul', 'web.dc1.consul']);
  });

  it('takes an answer whose index went backwards whole, and never sends an index below 1', async () => {
    const updates = await start();
    // A restored snapshot: the index drops from 11 to 3; the next change must still be seen.
    fake.forcedIndex = 3;
    fake.change(() => fake.services.set('new', [{ node: 'n9', address: '10.0.0.9', port: 7000 }]));
    await until('new.dc1.consul after the reset', () => updates.services.get('new.dc1.consul'));
    fake.forcedIndex = 0;
    fake.change(() => fake.services.get('new')!.push({ node: 'n8', address: '10.0.0.8', port: 7000 }));
    await until('a query with index=1', () => (fake.queries.some((q) => q.includes('index=1&') || q.endsWith('index=1')) ? true : undefined));
    expect(fake.queries.some((q) => /[?&]index=0(&|$)/.test(q))).toBe(false);
  });

  // A restarted Consul (a dev agent, a server that lost its data) is registered again by its agents,
  // and its indexes climb back from small numbers; a real v1.16.1 came back, in mesh-consul's
  // sequence, at the very index the source had last seen (21 before, 21 after a deregistration).
  const awayAndBack = async (changeWhileAway: () => void) => {
    const refusedBefore = fake.refused.filter((p) => p === '/v1/catalog/services').length;
    fake.goAway();
    await until('the catalog watch refused', () => (fake.refused.filter((p) => p === '/v1/catalog/services').length > refusedBefore ? true : undefined));
    // Written without moving any index: Consul back at the indexes the source last saw.
    changeWhileAway();
    fake.comeBack();
  };

  it.each(START_READS)('sees a service deregistered while it was away when Consul comes back at the index it had (start read %s)', async (startReads) => {
    const updates = await start({ removeAfterSeconds: 0 }, startReads);
    await awayAndBack(() => fake.services.delete('api'));
    // A blocking query sent with the old index would wait for a write past it and read "no change".
    await until('api removed', () => (updates.services.has('api.dc1.consul') ? undefined : true), 3000);
    expect([...updates.services.keys()]).toEqual(['web.dc1.consul']);
  });

  it.each(START_READS)(
    'fetches again a service whose instance moved while it was away, though its checks and its index read the same (start read %s)',
    async (startReads) => {
      const updates = await start({ sweepIntervalSeconds: 1 }, startReads);
      await awayAndBack(() => (fake.services.get('web')![0]!.address = '10.0.0.11'));
      // No check came or went, so a sweep finds it; one that skipped the service for an index equal to
      // its last fetch's (from before Consul went away) would keep the old address.
      await until('web at its new address', () => (endpointsOf(updates, 'web.dc1.consul')?.join() === '10.0.0.11,10.0.0.2' ? true : undefined), 3000);
    },
  );

  it.each(START_READS)(
    'fetches a new service once, and sweeps nothing for it, whichever of its fetch and the read of every check answers first (start read %s)',
    async (startReads) => {
      const updates = await start({ sweepIntervalSeconds: 1 }, startReads);
      fake.delay.set('/v1/health/state/any', 200);
      const [fetchesBefore, readsBefore] = [fetches(), fake.answered.filter((p) => p === '/v1/health/state/any').length];
      fake.change(() => fake.services.set('db', [{ node: 'n7', address: '10.0.0.7', port: 5432 }]));
      await until('db published', () => endpointsOf(updates, 'db.dc1.consul'));
      await until('the read of every check answered', () =>
        fake.answered.filter((p) => p === '/v1/health/state/any').length > readsBefore ? true : undefined,
      );
      await new Promise((r) => setTimeout(r, 200));
      // The service list named db: its fetch explains the change, and put its checks in the baseline first.
      expect(fetchedSince(fetchesBefore)).toEqual(['/v1/health/service/db']);
    },
  );

  it('gives names that make one DNS label distinct ids by rule, and the plain one back when its holder goes', async () => {
    const updates = await start({ removeAfterSeconds: 0 });
    fake.change(() => {
      fake.services.set('Web_API', [{ node: 'n4', address: '10.0.0.4', port: 80 }]);
      fake.services.set('web-api', [{ node: 'n5', address: '10.0.0.5', port: 80 }]);
    });
    await until('both published', () => (updates.services.size === 4 ? true : undefined));
    expect(updates.services.get('web-api.dc1.consul')!.name).toBe('web-api');
    const other = [...updates.services.values()].find((s) => s.name === 'Web_API')!;
    expect(other.id).toMatch(/^web-api-[0-9a-f]{6}\.dc1\.consul$/);
    expect(other.hostnames[0]).toMatch(/^web-api-[0-9a-f]{6}\.service\.consul$/);
    // The holder goes: the other takes the plain label, under the plain id.
    fake.change(() => fake.services.delete('web-api'));
    await until('Web_API moved to the plain label', () => (updates.services.get('web-api.dc1.consul')?.name === 'Web_API' ? true : undefined), 8000);
    expect(updates.services.has(other.id)).toBe(false);
  });

  it('holds no more abort listeners than requests and waits in flight, however often Consul wakes it', async () => {
    // Consul waking the watches faster than minQueryIntervalMs makes each wait between two queries;
    // a wait that left its listener on the source's abort signal grew it by one per wake, without
    // end (53 after the changes below; Node warns past 10, "MaxListenersExceededWarning").
    const updates = await start({ minQueryIntervalMs: 50 });
    for (let round = 0; round < 100; round++) {
      fake.change(() => fake.services.set('web', [{ node: 'n1', address: '10.0.0.1', port: 8080, status: round % 2 ? 'warning' : 'passing' }]));
      await new Promise((r) => setTimeout(r, 10));
    }
    await until('the last change in', () => (endpointsOf(updates, 'web.dc1.consul')?.join() === '10.0.0.1 unhealthy' ? true : undefined));
    await new Promise((r) => setTimeout(r, 200));
    const signal = (source as unknown as { abort: AbortController }).abort.signal;
    // Three blocking queries, each in flight or waiting, and the read of every check: one listener apiece.
    expect(getEventListeners(signal, 'abort').length).toBeLessThanOrEqual(4);
  });
});
