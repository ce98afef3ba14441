import { describe, expect, it } from '@jest/globals';
import { ConsulSourceSchema } from '../../../common/contract/index.js';
import { nextIndex, nextQueryDelay } from './index-rules.js';
import { instanceStatus, ORIGIN_META, translateConsulService } from './translate.js';

const config = (extra: Record<string, unknown> = {}) => ConsulSourceSchema.parse({ kind: 'consul', ...extra });

/** One entry of /v1/health/service/<name>, as Consul 1.16 answers it. */
const entry = (
  id: string,
  node: { name: string; address: string; tagged?: Record<string, string>; meta?: Record<string, string> },
  service: Partial<{
    Address: string;
    Port: number;
    Tags: string[];
    Meta: Record<string, string>;
    Kind: string;
    Weights: { Passing: number; Warning: number };
    TaggedAddresses: Record<string, { Address: string; Port: number }>;
  }> = {},
  checks: [string, string][] = [['serfHealth', 'passing']],
) => ({
  Node: { Node: node.name, Address: node.address, Datacenter: 'dc1', TaggedAddresses: node.tagged ?? { lan: node.address }, Meta: node.meta ?? {} },
  Service: { ID: id, Service: 'web', Tags: [], Address: '', Meta: null, Port: 8080, Weights: { Passing: 1, Warning: 1 }, ...service },
  Checks: checks.map(([CheckID, Status]) => ({ Node: node.name, CheckID, Status, ServiceID: CheckID === 'serfHealth' ? '' : id })),
});

const translate = (entries: unknown, extra: Record<string, unknown> = {}, previousPort?: number) =>
  translateConsulService({ name: 'web', label: 'web', datacenter: 'dc1', entries, filters: config(extra), ...(previousPort ? { previousPort } : {}) });

describe('a Consul service in the catalog', () => {
  it('answers to Consul DNS names and its id, with the instances at their addresses and ports', () => {
    const { service, problems } = translate([
      entry('web-1', { name: 'n1', address: '10.0.0.1' }),
      entry('web-2', { name: 'n2', address: '10.0.0.2' }, { Address: '10.0.1.2', Port: 9090 }),
      entry('web-3', { name: 'n3', address: '10.0.0.3' }),
    ]);
    expect(problems).toEqual([]);
    expect(service).toMatchObject({
      id: 'web.dc1.consul',
      name: 'web',
      registry: 'dc1',
      source: 'consul',
      hostnames: ['web.service.consul', 'web.service.dc1.consul', 'web.dc1.consul'],
      vips: [],
      ports: [{ port: 8080, protocol: 'tcp' }],
      labels: { 'flomesh.io/origin': 'consul' },
    });
    // The service's own address when it has one, else its node's (Consul's rule); each on its own port.
    expect(service!.endpoints.map((e) => `${e.address}:${e.port}`)).toEqual(['10.0.0.1:8080', '10.0.0.3:8080', '10.0.1.2:9090']);
  });

  it("carries the source's directDial (keep unless set) to the service, and none with off", () => {
    const entries = [entry('web-1', { name: 'n1', address: '10.0.0.1' })];
    expect(translate(entries).service!.directDial).toBe('keep');
    expect(translate(entries, { directDial: 'rebalance' }).service!.directDial).toBe('rebalance');
    const off = translate(entries, { directDial: 'off' }).service!;
    expect('directDial' in off).toBe(false);
  });

  it('marks instances with a critical or maintenance check unhealthy; warning ones too unless asked', () => {
    const entries = [
      entry('ok', { name: 'n1', address: '10.0.0.1' }, {}, [
        ['serfHealth', 'passing'],
        ['service:ok', 'passing'],
      ]),
      entry('warn', { name: 'n2', address: '10.0.0.2' }, { Weights: { Passing: 10, Warning: 3 } }, [['service:warn', 'warning']]),
      entry('down', { name: 'n3', address: '10.0.0.3' }, {}, [['service:down', 'critical']]),
      entry('node-down', { name: 'n4', address: '10.0.0.4' }, {}, [
        ['serfHealth', 'critical'],
        ['service:node-down', 'passing'],
      ]),
      entry('maint', { name: 'n5', address: '10.0.0.5' }, {}, [['_service_maintenance:maint', 'critical']]),
    ];
    const health = (extra = {}) => Object.fromEntries(translate(entries, extra).service!.endpoints.map((e) => [e.metadata.instance, e.healthy]));
    expect(health()).toEqual({ ok: true, warn: false, down: false, 'node-down': false, maint: false });
    expect(health({ healthy: 'passing-or-warning' })).toEqual({ ok: true, warn: true, down: false, 'node-down': false, maint: false });
    // Weights: the warning weight while warning.
    expect(translate(entries).service!.endpoints.find((e) => e.metadata.instance === 'warn')!.weight).toBe(3);
  });

  it('reads Weights into endpoint weights', () => {
    const { service } = translate([entry('heavy', { name: 'n1', address: '10.0.0.1' }, { Weights: { Passing: 5, Warning: 1 } })]);
    expect(service!.endpoints[0]!.weight).toBe(5);
  });

  it('skips Connect proxies and gateways, and what the bridge itself wrote', () => {
    const { service } = translate([
      entry('web-1', { name: 'n1', address: '10.0.0.1' }),
      entry('web-1-sidecar-proxy', { name: 'n1', address: '10.0.0.1' }, { Kind: 'connect-proxy', Port: 21000 }),
      entry('from-k8s', { name: 'n2', address: '10.0.0.2' }, { Meta: { [ORIGIN_META]: 'kubernetes' } }),
    ]);
    expect(service!.endpoints.map((e) => e.metadata.instance)).toEqual(['web-1']);
    expect(translate([entry('p', { name: 'n1', address: '10.0.0.1' }, { Kind: 'connect-proxy' })]).skipped).toBe('only Connect proxies or gateways');
  });

  it('filters instances by tags and metadata', () => {
    const entries = [
      entry('a', { name: 'n1', address: '10.0.0.1' }, { Tags: ['prod', 'v2'], Meta: { team: 'pay' } }),
      entry('b', { name: 'n2', address: '10.0.0.2' }, { Tags: ['prod', 'canary'], Meta: { team: 'pay' } }),
      entry('c', { name: 'n3', address: '10.0.0.3' }, { Tags: ['staging'], Meta: { team: 'pay' } }),
      entry('d', { name: 'n4', address: '10.0.0.4' }, { Tags: ['prod'], Meta: { team: 'ops' } }),
    ];
    const ids = (extra: Record<string, unknown>) => translate(entries, extra).service?.endpoints.map((e) => e.metadata.instance);
    expect(ids({ tags: { include: ['prod'], exclude: ['canary'] } })).toEqual(['a', 'd']);
    expect(ids({ tags: { include: ['prod'] }, meta: { team: 'pay' } })).toEqual(['a', 'b']);
  });

  it('prefers a tagged address when asked: the service’s, else the node’s', () => {
    const entries = [
      entry('a', { name: 'n1', address: '10.0.0.1', tagged: { wan: '203.0.113.1' } }, { TaggedAddresses: { wan: { Address: '198.51.100.1', Port: 443 } } }),
      entry('b', { name: 'n2', address: '10.0.0.2', tagged: { wan: '203.0.113.2' } }),
      entry('c', { name: 'n3', address: '10.0.0.3' }),
    ];
    expect(translate(entries, { addressTag: 'wan' }).service!.endpoints.map((e) => `${e.address}:${e.port}`)).toEqual([
      '10.0.0.3:8080',
      '198.51.100.1:443',
      '203.0.113.2:8080',
    ]);
  });

  it('dials the port most instances use, and keeps it when no instance is left', () => {
    const { service } = translate([
      entry('a', { name: 'n1', address: '10.0.0.1' }, { Port: 9000 }),
      entry('b', { name: 'n2', address: '10.0.0.2' }, { Port: 8000 }),
      entry('c', { name: 'n3', address: '10.0.0.3' }, { Port: 9000 }),
    ]);
    expect(service!.ports).toEqual([{ port: 9000, protocol: 'tcp' }]);
    const empty = translate([], {}, 9000);
    expect(empty.service!.ports).toEqual([{ port: 9000, protocol: 'tcp' }]);
    expect(empty.service!.endpoints).toEqual([]);
    expect(translate([]).skipped).toBe('no instance to publish');
  });

  it('takes the protocol from the instances’ metadata when they agree', () => {
    const agree = translate([entry('a', { name: 'n1', address: '10.0.0.1' }, { Meta: { protocol: 'HTTP' } })]);
    expect(agree.service!.ports[0]!.protocol).toBe('http');
    const disagree = translate(
      [
        entry('a', { name: 'n1', address: '10.0.0.1' }, { Meta: { protocol: 'http' } }),
        entry('b', { name: 'n2', address: '10.0.0.2' }, { Meta: { protocol: 'grpc' } }),
      ],
      { protocol: 'http2' },
    );
    expect(disagree.service!.ports[0]!.protocol).toBe('http2');
    expect(disagree.problems).toEqual([expect.stringContaining('instances disagree on Service.Meta.protocol')]);
  });

  it('skips instances it cannot use, naming each, and keeps the others', () => {
    const { service, problems } = translate([
      entry('good', { name: 'n1', address: '10.0.0.1' }),
      entry('hostname', { name: 'n2', address: 'web.example.com' }),
      entry('no-address', { name: 'n3', address: '' }),
      entry('port-zero', { name: 'n4', address: '10.0.0.4' }, { Port: 0 }),
      entry('port-big', { name: 'n5', address: '10.0.0.5' }, { Port: 70000 }),
      entry('twin', { name: 'n1', address: '10.0.0.1' }),
      { Node: 'garbage' },
      null,
    ]);
    expect(service!.endpoints.map((e) => e.metadata.instance)).toEqual(['good']);
    expect(problems).toEqual([
      'instance hostname on node n2 has address "web.example.com", not an IP address; skipped',
      'instance no-address on node n3 has no address; skipped',
      'instance port-zero on node n4 has port 0, not 1-65535; skipped',
      'instance port-big on node n5 has port 70000, not 1-65535; skipped',
      'instances good and twin on 10.0.0.1 port 8080: good is kept',
      'an instance without Node or Service; skipped',
      'an instance without Node or Service; skipped',
    ]);
    expect(translate({ not: 'a list' }).skipped).toBe('the answer is not a list of instances');
  });

  it('names a datacenter that is not a DNS label by its label', () => {
    const { service } = translateConsulService({
      name: 'Web_API',
      label: 'web-api',
      datacenter: 'EU_West',
      entries: [entry('a', { name: 'n1', address: '10.0.0.1' })],
      filters: config(),
    });
    expect(service).toMatchObject({ id: 'web-api.eu-west.consul', name: 'Web_API', registry: 'EU_West' });
    expect(service!.hostnames).toEqual(['web-api.service.consul', 'web-api.service.eu-west.consul', 'web-api.eu-west.consul']);
  });

  it('reads check statuses as Consul does', () => {
    expect(instanceStatus([])).toBe('passing');
    expect(instanceStatus([{ CheckID: 'x', Status: 'bogus' }])).toBe('critical');
    expect(instanceStatus('garbage')).toBe('passing');
  });
});

describe("Consul's blocking-query index rules", () => {
  it('takes a first answer whole', () => {
    expect(nextIndex(0n, 42n)).toEqual({ next: 42n, changed: true, reset: false });
  });
  it('sees no news in an answer at the same index (the wait ran out)', () => {
    expect(nextIndex(42n, 42n)).toEqual({ next: 42n, changed: false, reset: false });
  });
  it('resets when the index goes backwards, and never sends below 1', () => {
    expect(nextIndex(42n, 7n)).toEqual({ next: 7n, changed: true, reset: true });
    expect(nextIndex(42n, 0n)).toEqual({ next: 1n, changed: true, reset: true });
    expect(nextIndex(0n, 0n)).toEqual({ next: 1n, changed: true, reset: false });
  });
  it('rate-limits queries and backs off after failures', () => {
    expect(nextQueryDelay(1000, 1030, 100, 0)).toBe(70);
    expect(nextQueryDelay(1000, 5000, 100, 0)).toBe(0);
    expect(nextQueryDelay(1000, 5000, 100, 1)).toBe(250);
    expect(nextQueryDelay(1000, 5000, 100, 3)).toBe(1000);
    expect(nextQueryDelay(1000, 5000, 100, 30)).toBe(10_000);
  });
});
