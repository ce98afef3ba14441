import { describe, expect, it } from '@jest/globals';
import { API_VERSION, BridgeConfigSchema, type ConsulSinkConfig, type Service } from '../../../common/contract/index.js';
import { createLogger } from '../../../common/log.js';
import { kubeService as service, parseSinkConfig, stoppedAfterEach, until } from '../testing/sink-tests.js';
import { ConsulAnswerTooLargeError, ConsulSlowError, ConsulWriteError } from './api.js';
import { nodeIndexOf } from './registrations.js';
import { ConsulSink } from './sink.js';

const log = createLogger('consul-sink-test', 'silent');

interface Instance {
  ID: string;
  Service: string;
  Address: string;
  Port: number;
  Tags: string[];
  Meta: Record<string, string>;
}

type Check = { CheckID: string; ServiceID: string; Status: string };
type TxnOp = { Service?: { Verb: string; Node: string; Service: Instance }; Check?: { Verb: string; Check: Check & { Node: string } } };

/** Consul's catalog as the sink sees it: nodes with their services and checks, every write recorded. */
class FakeConsul {
  nodes = new Map<string, { address?: string; meta?: Record<string, string>; services: Map<string, Instance>; checks: Map<string, Check> }>();
  writes: { path: string; body: Record<string, unknown> }[] = [];
  /** Answers the next calls with this error instead. */
  failing?: (path: string, body: unknown) => Error | undefined;

  node(name: string) {
    let node = this.nodes.get(name);
    if (!node) this.nodes.set(name, (node = { services: new Map(), checks: new Map() }));
    return node;
  }

  /** Consul applies a transaction whole or not at all; a service or check needs its node, a check its service. */
  private txn(ops: TxnOp[]): void {
    const errors = ops.flatMap((op, index) => {
      const nodeName = op.Service?.Node ?? op.Check?.Check.Node;
      const node = this.nodes.get(nodeName ?? '');
      if (!node) return [`op ${index}: Missing node registration`];
      const serviceId = op.Check?.Check.ServiceID;
      const serviceThere = (id: string) => node.services.has(id) || ops.some((o) => o.Service?.Verb === 'set' && o.Service.Service.ID === id);
      if (op.Check && !serviceThere(serviceId!)) return [`op ${index}: Missing service registration`];
      return [];
    });
    if (errors.length > 0) throw new ConsulWriteError(`PUT /v1/txn: answered 409: ${errors.join('; ')}`, 409);
    for (const op of ops) {
      if (op.Service?.Verb === 'set') this.node(op.Service.Node).services.set(op.Service.Service.ID, op.Service.Service);
      else if (op.Service?.Verb === 'delete') this.deregister(op.Service.Node, op.Service.Service.ID);
      else if (op.Check?.Verb === 'set') this.node(op.Check.Check.Node).checks.set(op.Check.Check.CheckID, op.Check.Check);
    }
  }

  private deregister(nodeName: string, serviceId: string): void {
    const node = this.node(nodeName);
    node.services.delete(serviceId);
    for (const [id, check] of node.checks) if (check.ServiceID === serviceId) node.checks.delete(id);
  }

  api = {
    call: async (method: 'GET' | 'PUT', path: string, body?: unknown): Promise<unknown> => {
      await Promise.resolve();
      const error = this.failing?.(path, body);
      if (error) throw error;
      if (method === 'GET' && path.startsWith('/v1/catalog/nodes?')) {
        const [key, value] = new URL(path, 'http://consul').searchParams.get('node-meta')!.split(/:(.*)/);
        return [...this.nodes]
          .filter(([, node]) => node.meta?.[key!] === value)
          .map(([name, node]) => ({ Node: name, Address: node.address, Meta: node.meta }));
      }
      if (method === 'GET') {
        const name = decodeURIComponent(path.split('/').pop()!);
        const node = this.nodes.get(name);
        if (path.startsWith('/v1/catalog/node-services/'))
          return node ? { Node: { Node: name, Address: node.address, Meta: node.meta }, Services: [...node.services.values()] } : null;
        return node ? [...node.checks.values()] : [];
      }
      const b = body as Record<string, unknown>;
      this.writes.push({ path, body: b });
      if (path === '/v1/txn') {
        this.txn(body as TxnOp[]);
        return { Results: [], Errors: null };
      }
      const node = this.node(b.Node as string);
      if (path === '/v1/catalog/register') {
        if (!b.SkipNodeUpdate) [node.address, node.meta] = [b.Address as string, b.NodeMeta as Record<string, string>];
        if (b.Service) {
          const service = b.Service as Partial<Instance> & { ID: string };
          node.services.set(service.ID, { ...service, Tags: service.Tags ?? [], Meta: service.Meta ?? {} } as Instance);
        }
        if (b.Check) {
          const check = b.Check as Check;
          node.checks.set(check.CheckID, check);
        }
      } else if (b.ServiceID === undefined) this.nodes.delete(b.Node as string);
      else this.deregister(b.Node as string, b.ServiceID as string);
      return true;
    },
    reloadToken: () => {},
    close: () => {},
  };
}

const parsed = (over: Record<string, unknown> = {}) =>
  parseSinkConfig<ConsulSinkConfig>({ kind: 'consul', address: 'http://consul-source:8500' }, { kind: 'consul', address: 'http://consul:8500', ...over });
const { sources } = parsed();
const kubeService = (name: string, namespace: string, endpoints: [string, boolean][], labels: Record<string, string> = {}): Service =>
  service(name, namespace, endpoints, { labels });
const sinks = stoppedAfterEach<ConsulSink>();

function makeSink(consul: FakeConsul, over: Record<string, unknown> = {}) {
  const problems: string[] = [];
  const sink = new ConsulSink({ config: parsed(over).config, sources, log, api: consul.api, onProblem: (s, why) => problems.push(`${s.id}: ${why}`) });
  sink.setMesh({ clusterName: 'east' } as never);
  sinks.push(sink);
  return { sink, problems };
}

/** Services `<prefix><i>.shop` for i below `count`, each with `endpointsOf(i)`, from the kubernetes source. */
function setServices(sink: ConsulSink, prefix: string, count: number, endpointsOf: (i: number) => [string, boolean][]): void {
  for (let i = 0; i < count; i++) sink.setService(`${prefix}${i}.shop`, kubeService(`${prefix}${i}`, 'shop', endpointsOf(i)), undefined, 'kubernetes');
}

/** The instances on `node`, or on every node. */
const instancesOf = (consul: FakeConsul, node?: string) =>
  [...consul.nodes]
    .filter(([name]) => node === undefined || name === node)
    .flatMap(([, { services, checks }]) =>
      [...services.values()].map((s) => `${s.Service} ${s.Address}:${s.Port} ${checks.get(`${s.ID}:readiness`)?.Status ?? '-'}`),
    )
    .sort();

describe('the Consul sink', () => {
  it('registers each endpoint of a Kubernetes Service on the cluster node, at its pod address, with its readiness and origin', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul);
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', false],
      ]),
      undefined,
      'kubernetes',
    );
    await sink.settled();
    expect(instancesOf(consul)).toEqual(['web 10.244.0.5:8080 passing', 'web 10.244.0.6:8080 critical']);
    const registered = consul.nodes.get('flb-east')!.services.get('web.shop-10-244-0-5-8080')!;
    expect(registered).toMatchObject({
      Tags: ['k8s'],
      Meta: {
        'flomesh-origin': 'kubernetes',
        'flomesh-writer': 'flb-east/consul',
        'flomesh-service': 'web.shop',
        'external-source': 'kubernetes',
        'external-k8s-ns': 'shop',
      },
    });
    expect(consul.writes[0]!.body).toMatchObject({ Node: 'flb-east', Address: '127.0.0.1' });
    expect(sink.status()).toMatchObject({ kind: 'consul', pending: 0, writes: 2, failures: 0 });
  });

  it('registers many instances in transactions of at most 64 operations, writing the node once', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul, { nodes: 1 });
    const endpoints = (service: number) => Array.from({ length: 25 }, (_, i): [string, boolean] => [`10.244.${service}.${i + 1}`, i % 5 !== 0]);
    for (let service = 0; service < 4; service++)
      sink.setService(`s${service}.shop`, kubeService(`s${service}`, 'shop', endpoints(service)), undefined, 'kubernetes');
    await sink.settled();
    expect(instancesOf(consul)).toHaveLength(100);
    expect(instancesOf(consul).filter((i) => i.endsWith('critical'))).toHaveLength(20);
    // The node alone first, then 100 instances of two operations each: 4 transactions, not 100 registrations.
    expect(consul.writes.map((w) => w.path)).toEqual(['/v1/catalog/register', ...Array<string>(4).fill('/v1/txn')]);
    expect(consul.writes[0]!.body).toEqual({
      Node: 'flb-east',
      Address: '127.0.0.1',
      NodeMeta: { 'external-source': 'flomesh', 'flomesh-writer': 'flb-east/consul' },
    });
    for (const { body } of consul.writes.slice(1)) expect((body as unknown as TxnOp[]).length).toBeLessThanOrEqual(64);
    expect(sink.status()).toMatchObject({ pending: 0, writes: 100, failures: 0 });
    // Half of one Service scaled away, after every source listed: one transaction of deletions.
    sink.complete();
    consul.writes = [];
    sink.setService('s0.shop', kubeService('s0', 'shop', endpoints(0).slice(0, 12)), undefined, 'kubernetes');
    await sink.settled();
    expect(consul.writes.map((w) => w.path)).toEqual(['/v1/txn']);
    expect(instancesOf(consul)).toHaveLength(87);
  });

  it('writes only the check when only readiness changed, and nothing when nothing did', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul);
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', true],
      ]),
      undefined,
      'kubernetes',
    );
    await sink.settled();
    consul.writes = [];
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', false],
      ]),
      undefined,
      'kubernetes',
    );
    await sink.settled();
    expect(consul.writes).toHaveLength(1);
    expect(consul.writes[0]!.body).toMatchObject({ SkipNodeUpdate: true, Check: { CheckID: 'web.shop-10-244-0-6-8080:readiness', Status: 'critical' } });
    expect(consul.writes[0]!.body.Service).toBeUndefined();
    consul.writes = [];
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', false],
      ]),
      undefined,
      'kubernetes',
    );
    await sink.settled();
    expect(consul.writes).toEqual([]);
  });

  it('a new sink (a restart, a new leader) rewrites nothing Consul holds already, and removes nothing before every source listed', async () => {
    const consul = new FakeConsul();
    const first = makeSink(consul).sink;
    first.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    first.setService('old.shop', kubeService('old', 'shop', [['10.244.0.9', true]]), undefined, 'kubernetes');
    await first.settled();
    await first.stop();
    // Someone else's service on the same node: never touched.
    consul.node('flb-east').services.set('hand-made', { ID: 'hand-made', Service: 'manual', Address: '10.0.0.1', Port: 1, Tags: [], Meta: {} });
    consul.writes = [];
    const { sink } = makeSink(consul);
    // Only web is listed so far: old must stay.
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(consul.writes).toEqual([]);
    expect(instancesOf(consul)).toEqual(['manual 10.0.0.1:1 -', 'old 10.244.0.9:8080 passing', 'web 10.244.0.5:8080 passing']);
    sink.complete();
    await sink.settled();
    expect(consul.writes.map((w) => `${w.path} ${String(w.body.ServiceID)}`)).toEqual(['/v1/catalog/deregister old.shop-10-244-0-9-8080']);
    expect(instancesOf(consul)).toEqual(['manual 10.0.0.1:1 -', 'web 10.244.0.5:8080 passing']);
  });

  it('deregisters the instances of a scaled-down or deleted Service once sources have listed', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul);
    sink.complete();
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', true],
      ]),
      undefined,
      'kubernetes',
    );
    await sink.settled();
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.6', true]]), undefined, 'kubernetes');
    await sink.settled();
    expect(instancesOf(consul)).toEqual(['web 10.244.0.6:8080 passing']);
    sink.setService('web.shop', undefined, undefined, 'kubernetes');
    await sink.settled();
    expect(instancesOf(consul)).toEqual([]);
  });

  it('writes only the sources, namespaces and Services in its scope', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul, { namespaces: { include: ['*'], exclude: ['kube-system'] }, exportByDefault: false });
    sink.setService('a.shop', kubeService('a', 'shop', [['10.244.0.1', true]]), undefined, 'kubernetes');
    sink.setService('b.shop', kubeService('b', 'shop', [['10.244.0.2', true]], { 'flomesh.io/registry-sync': 'true' }), undefined, 'kubernetes');
    sink.setService('c.kube-system', kubeService('c', 'kube-system', [['10.244.0.3', true]], { 'flomesh.io/registry-sync': 'true' }), undefined, 'kubernetes');
    // What the Consul source read is Consul's already (the default `from` is the kubernetes sources).
    sink.setService(
      'd.dc1.consul',
      { ...kubeService('d', 'x', [['10.1.0.4', true]]), id: 'd.dc1.consul', source: 'consul', registry: 'dc1' } as Service,
      undefined,
      'consul',
    );
    await sink.settled();
    expect(instancesOf(consul)).toEqual(['b 10.244.0.2:8080 passing']);
    // Exported by default, a Service annotated "false" opts out.
    const other = new FakeConsul();
    const opted = makeSink(other).sink;
    opted.setService('e.shop', kubeService('e', 'shop', [['10.244.0.7', true]], { 'flomesh.io/registry-sync': 'false' }), undefined, 'kubernetes');
    opted.setService('f.shop', kubeService('f', 'shop', [['10.244.0.8', true]]), undefined, 'kubernetes');
    await opted.settled();
    expect(instancesOf(other)).toEqual(['f 10.244.0.8:8080 passing']);
  });

  it('names Services with the prefix and namespace suffix', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul, { servicePrefix: 'k8s-', namespaceSuffix: true, tags: ['k8s', 'east'] });
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    expect(instancesOf(consul)).toEqual(['k8s-web-shop 10.244.0.5:8080 passing']);
    expect([...consul.nodes.get('flb-east')!.services.values()][0]!.Tags).toEqual(['east', 'k8s']);
  });

  it('reports a refused registration by instance, retries it with backoff, and writes the rest', async () => {
    const consul = new FakeConsul();
    let refusals = 0;
    const bad = 'bad.shop-10-244-0-8-8080';
    consul.failing = (path, body) => {
      // Consul refuses a whole transaction for one bad service in it (409, the operation named).
      if (path === '/v1/txn' && (body as TxnOp[]).some((op) => op.Service?.Service.ID === bad))
        return new ConsulWriteError('PUT /v1/txn: answered 409: op 0: Invalid service address', 409);
      const id = (body as { Service?: { ID: string } } | undefined)?.Service?.ID;
      if (path === '/v1/catalog/register' && id === bad && refusals < 2) {
        refusals++;
        return new ConsulWriteError('PUT /v1/catalog/register: answered 400: Invalid service address', 400);
      }
      return undefined;
    };
    const { sink } = makeSink(consul);
    sink.setService('bad.shop', kubeService('bad', 'shop', [['10.244.0.8', true]]), undefined, 'kubernetes');
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(sink.status().lastError).toMatch(/^bad\.shop-10-244-0-8-8080: .*400: Invalid service address/);
    expect(instancesOf(consul)).toEqual(['web 10.244.0.5:8080 passing']);
    await until('the refused one written', () => refusals === 2 && sink.status().pending === 0);
    expect(instancesOf(consul)).toEqual(['bad 10.244.0.8:8080 passing', 'web 10.244.0.5:8080 passing']);
    expect(sink.status()).toMatchObject({ failures: 2, pending: 0 });
  });

  it('reads the node again after Consul was away, and puts back what a Consul that came back empty lost', async () => {
    const consul = new FakeConsul();
    const { sink } = makeSink(consul, { resyncSeconds: 3600 });
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    let down = true;
    consul.failing = () => (down ? new ConsulWriteError('PUT /v1/catalog/register: connect ECONNREFUSED') : undefined);
    consul.nodes.clear();
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', false]]), undefined, 'kubernetes');
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(sink.status().lastError).toMatch(/ECONNREFUSED/);
    down = false;
    await until('written again', () => instancesOf(consul).length === 1);
    expect(instancesOf(consul)).toEqual(['web 10.244.0.5:8080 critical']);
  });

  it('says how to split the catalog when its node is too large to read, and writes nothing meanwhile', async () => {
    const consul = new FakeConsul();
    consul.failing = (path) =>
      path.startsWith('/v1/catalog/node-services/') ? new ConsulAnswerTooLargeError(`GET ${path}: the answer passed 67108864 bytes; refused`) : undefined;
    const { sink } = makeSink(consul);
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await until('the read refused', () => sink.status().failures > 0);
    expect(sink.status().lastError).toMatch(
      /^GET \/v1\/catalog\/node-services\/flb-east: the answer passed 67108864 bytes; refused: node flb-east holds more than the sink reads at once .* raise the sink's nodes \(16 now\)/,
    );
    expect(consul.writes).toEqual([]);
    expect(sink.status().pending).toBe(1);
  });

  it('retries writes Consul was too slow to answer without reading the whole node again', async () => {
    const consul = new FakeConsul();
    let reads = 0;
    let slow = true;
    consul.failing = (path) => {
      if (path.startsWith('/v1/catalog/node-services/')) reads++;
      if (path === '/v1/txn' && slow) {
        slow = false;
        return new ConsulSlowError('PUT /v1/txn: no answer within 10 s');
      }
      return undefined;
    };
    const { sink } = makeSink(consul, { resyncSeconds: 3600 });
    sink.setService(
      'web.shop',
      kubeService('web', 'shop', [
        ['10.244.0.5', true],
        ['10.244.0.6', true],
      ]),
      undefined,
      'kubernetes',
    );
    await until('written after the backoff', () => instancesOf(consul).length === 2);
    expect(sink.status().lastError).toMatch(/no answer within 10 s/);
    // One read of each of its 16 nodes, none again.
    expect(reads).toBe(16);
  });

  it('leaves a service ID someone else holds on the node alone and reports it on the Service', async () => {
    const consul = new FakeConsul();
    consul
      .node('flb-east')
      .services.set('web.shop-10-244-0-5-8080', { ID: 'web.shop-10-244-0-5-8080', Service: 'theirs', Address: '10.9.9.9', Port: 1, Tags: [], Meta: {} });
    const { sink, problems } = makeSink(consul);
    sink.complete();
    sink.setService('web.shop', kubeService('web', 'shop', [['10.244.0.5', true]]), undefined, 'kubernetes');
    await sink.settled();
    expect(consul.writes).toEqual([]);
    expect(instancesOf(consul)).toEqual(['theirs 10.9.9.9:1 -']);
    expect(problems).toEqual([
      expect.stringMatching(/^web\.shop: Consul already holds a service ID web\.shop-10-244-0-5-8080 on node flb-east that the bridge did not write/),
    ]);
    expect(sink.status().lastError).toMatch(/someone else's/);
  });

  it('spreads Services over its nodes by catalog id, and a restart finds each where it was and writes nothing', async () => {
    const consul = new FakeConsul();
    const twoReady = (i: number): [string, boolean][] => [
      [`10.244.1.${i + 1}`, true],
      [`10.244.2.${i + 1}`, true],
    ];
    const first = makeSink(consul).sink;
    setServices(first, 's', 40, twoReady);
    await first.settled();
    const nodesOf = (service: string) =>
      [...consul.nodes].filter(([, node]) => [...node.services.values()].some((s) => s.Service === service)).map(([name]) => name);
    const names = ['flb-east', ...Array.from({ length: 15 }, (_, i) => `flb-east-${i + 1}`)];
    for (let i = 0; i < 40; i++) expect(nodesOf(`s${i}`)).toEqual([names[nodeIndexOf(`s${i}.shop`, 16)]]);
    // 40 Services over 16 nodes: nearly every node used, none holding a large share.
    const used = [...consul.nodes].filter(([, node]) => node.services.size > 0);
    expect(used.length).toBeGreaterThanOrEqual(12);
    for (const [name, node] of used) {
      expect(names).toContain(name);
      expect(node.meta).toEqual({ 'external-source': 'flomesh', 'flomesh-writer': 'flb-east/consul' });
      expect(node.services.size).toBeLessThanOrEqual(20);
    }
    await first.stop();
    consul.writes = [];
    const { sink } = makeSink(consul);
    setServices(sink, 's', 40, twoReady);
    sink.complete();
    await sink.settled();
    expect(consul.writes).toEqual([]);
    expect(instancesOf(consul)).toHaveLength(80);
  });

  it('moves instances when its node count shrinks, each written on its new node before it leaves the old, and drops emptied nodes', async () => {
    const consul = new FakeConsul();
    // Enough that a batch of 32 moving instances is more than 64 operations.
    const SERVICES = 40;
    const endpoints = (i: number): [string, boolean][] => [
      [`10.244.3.${i + 1}`, true],
      [`10.244.4.${i + 1}`, i % 2 === 0],
    ];
    const first = makeSink(consul, { nodes: 4 }).sink;
    setServices(first, 'm', SERVICES, endpoints);
    first.setService('gone.shop', kubeService('gone', 'shop', [['10.244.5.1', true]]), undefined, 'kubernetes');
    await first.settled();
    await first.stop();
    const goneNode = ['flb-east', 'flb-east-1', 'flb-east-2', 'flb-east-3'][nodeIndexOf('gone.shop', 4)]!;
    expect(instancesOf(consul, goneNode)).toContain('gone 10.244.5.1:8080 passing');
    expect(consul.nodes.get('flb-east-2')!.services.size + consul.nodes.get('flb-east-3')!.services.size).toBeGreaterThan(4);
    // Someone's own service on node 3, and another sink's node: never touched.
    consul.node('flb-east-3').services.set('hand-made', { ID: 'hand-made', Service: 'manual', Address: '10.0.0.1', Port: 1, Tags: [], Meta: {} });
    const westNode = consul.node('flb-west-2');
    westNode.meta = { 'external-source': 'flomesh', 'flomesh-writer': 'flb-west/consul' };
    westNode.services.set('m0.shop-10-244-3-1-8080', {
      ID: 'm0.shop-10-244-3-1-8080',
      Service: 'm0',
      Address: '10.244.3.1',
      Port: 8080,
      Tags: [],
      Meta: { 'flomesh-writer': 'flb-west/consul' },
    });
    const wantedIds = Array.from({ length: SERVICES }, (_, i) => endpoints(i).map(([address]) => `m${i}.shop-${address.replace(/\./g, '-')}-8080`)).flat();
    // After every write, every wanted instance is somewhere: never missing from both nodes.
    const missing: string[] = [];
    const record = consul.api.call;
    consul.api.call = async (method, path, body) => {
      const answer = await record(method, path, body);
      if (method === 'PUT') {
        const present = new Set([...consul.nodes].filter(([name]) => name.startsWith('flb-east')).flatMap(([, node]) => [...node.services.keys()]));
        missing.push(...wantedIds.filter((id) => !present.has(id)));
      }
      return answer;
    };
    consul.writes = [];
    const { sink } = makeSink(consul, { nodes: 2 });
    setServices(sink, 'm', SERVICES, endpoints);
    await sink.settled();
    expect(missing).toEqual([]);
    // A move is three operations (set, check, delete): still at most 64 a transaction (Consul before 1.16).
    const txns = consul.writes.filter((w) => w.path === '/v1/txn').map(({ body }) => (body as unknown as TxnOp[]).length);
    expect(txns.length).toBeGreaterThan(0);
    for (const operations of txns) expect(operations).toBeLessThanOrEqual(64);
    // Moves need no removal gate (nothing is lost); only gone.shop, wanted by nobody, waits for every source's list.
    const onTwo = [...consul.nodes].filter(([name]) => name === 'flb-east' || name === 'flb-east-1').flatMap(([, node]) => [...node.services.keys()]);
    expect(onTwo.filter((id) => !id.startsWith('gone.')).sort()).toEqual([...wantedIds].sort());
    expect(instancesOf(consul).filter((i) => i.startsWith('gone'))).toEqual(['gone 10.244.5.1:8080 passing']);
    for (let i = 0; i < SERVICES; i++)
      expect(instancesOf(consul, ['flb-east', 'flb-east-1'][nodeIndexOf(`m${i}.shop`, 2)])).toEqual(
        expect.arrayContaining([`m${i} 10.244.3.${i + 1}:8080 passing`, `m${i} 10.244.4.${i + 1}:8080 ${i % 2 === 0 ? 'passing' : 'critical'}`]),
      );
    const leftOver = (node: string) => [...(consul.nodes.get(node)?.services.keys() ?? [])].filter((id) => id !== 'hand-made');
    expect([...leftOver('flb-east-2'), ...leftOver('flb-east-3')]).toEqual(
      goneNode === 'flb-east-2' || goneNode === 'flb-east-3' ? ['gone.shop-10-244-5-1-8080'] : [],
    );
    sink.complete();
    await sink.settled();
    await until('emptied nodes dropped', () => consul.nodes.has('flb-east-2') === false);
    expect(instancesOf(consul).filter((i) => i.startsWith('gone'))).toEqual([]);
    // Node 3 keeps someone's service (a node deregistered takes its services), and only that.
    expect([...consul.nodes.get('flb-east-3')!.services.keys()]).toEqual(['hand-made']);
    expect([...consul.nodes.get('flb-west-2')!.services.keys()]).toEqual(['m0.shop-10-244-3-1-8080']);
    expect(consul.writes.filter((w) => w.body.Node === 'flb-west-2' || JSON.stringify(w.body).includes('flb-west-2'))).toEqual([]);
    expect(sink.status()).toMatchObject({ pending: 0, failures: 0 });
  });

  it('spreads over 16 nodes unless told, from 1 (one node, as consul-k8s) to 128', () => {
    expect(parsed().config.nodes).toBe(16);
    expect(parsed({ nodes: 1 }).config.nodes).toBe(1);
    for (const nodes of [0, 129, 2.5]) expect(() => parsed({ nodes })).toThrow(/nodes/);
  });

  it('refuses a sink that would write a registry back into itself', () => {
    const parse = (sinks: unknown[]) =>
      BridgeConfigSchema.safeParse({
        apiVersion: API_VERSION,
        kind: 'BridgeConfig',
        mesh: { file: '/x' },
        sources: [{ kind: 'kubernetes' }, { kind: 'consul', address: 'http://consul:8500' }],
        sinks,
      });
    expect(parse([{ kind: 'consul', address: 'http://consul:8500', from: ['kubernetes', 'consul'] }]).error?.issues[0]).toMatchObject({
      path: ['sinks', 0, 'from', 1],
      message: expect.stringContaining('reads the registry this sink writes'),
    });
    expect(parse([{ kind: 'consul', from: ['nope'] }]).error?.issues[0]?.message).toBe('no source is named nope');
    expect(parse([{ kind: 'consul', address: 'http://other:8500', from: ['consul'] }]).success).toBe(true);
  });
});
