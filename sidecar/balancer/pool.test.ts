import { describe, expect, it } from '@jest/globals';
import { seededRandom, type Algorithm } from './algorithms.js';
import { ManualClock } from './clock.js';
import { EndpointPool, type Locality, type PickContext, type PoolEvent } from './pool.js';
import { endpoints, makeService, tally, type EndpointInput } from './testing/fixtures.js';

function setup(eps: EndpointInput[], policy: Record<string, unknown> = {}, locality: Locality = {}, extra: Record<string, unknown> = {}) {
  const clock = new ManualClock();
  const events: PoolEvent[] = [];
  const pool = new EndpointPool({ clock, random: seededRandom(11), activeHealthChecks: false, onEvent: (e) => events.push(e) });
  pool.update(makeService(eps, policy, extra), locality);
  const pickKey = (ctx?: PickContext) => pool.pick(ctx)?.key;
  return { clock, events, pool, pickKey };
}

const addressOf = (key: string | undefined) => key?.split('|')[0];

describe('the endpoint pool', () => {
  it('never chooses an endpoint the registry marks unhealthy, nor a drained one, not even in panic', () => {
    const { pool, pickKey } = setup([{ address: '10.0.0.1' }, { address: '10.0.0.2', healthy: false }, { address: '10.0.0.3', weight: 0 }]);
    expect([...tally(100, pickKey).keys()]).toEqual(['10.0.0.1|8080']);
    pool.setActiveHealth('10.0.0.1|8080', 'unhealthy');
    expect([...tally(100, pickKey).keys()]).toEqual(['10.0.0.1|8080']);
    expect(pool.counters().panic).toBe(true);
    const { pool: none, pickKey: pickNone } = setup([{ address: '10.0.0.2', healthy: false }]);
    expect(pickNone()).toBeUndefined();
    expect(none.counters().noEndpointTotal).toBe(1);
  });

  it('dials the endpoint port that belongs to the service port', () => {
    const { pool } = setup(
      [
        { address: '10.0.0.1', port: 8080, ports: { metrics: 19090 } },
        { address: '10.0.0.2', port: 8081 },
      ],
      {},
      {},
      {
        ports: [
          { name: 'http', port: 80, targetPort: 8080 },
          { name: 'metrics', port: 9090, targetPort: 9091 },
        ],
      },
    );
    const targets = (servicePort: number) =>
      [
        ...tally(10, () => {
          const p = pool.pick({ servicePort });
          return p && `${p.address}:${p.port}`;
        }).keys(),
      ].sort();
    expect(targets(80)).toEqual(['10.0.0.1:8080', '10.0.0.2:8081']);
    expect(targets(9090)).toEqual(['10.0.0.1:19090', '10.0.0.2:9091']);
    expect(pool.pick({ servicePort: 1234 })).toBeUndefined();
    expect(pool.pick()!.port).toBeGreaterThanOrEqual(8080);
  });

  it('runs each algorithm over the candidates', () => {
    const rr = setup(endpoints(3));
    const first = rr.pickKey();
    const cycle = [first, rr.pickKey(), rr.pickKey()];
    expect(new Set(cycle).size).toBe(3);
    expect([rr.pickKey(), rr.pickKey(), rr.pickKey()]).toEqual(cycle);

    const weighted = setup([{ address: '10.0.0.1', weight: 5 }, { address: '10.0.0.2' }, { address: '10.0.0.3' }], {
      loadBalancer: { algorithm: 'weighted' },
    });
    expect(Array.from({ length: 7 }, () => addressOf(weighted.pickKey())!.slice(-1)).join('')).toBe('1121311');
  });

  describe('locality', () => {
    const zoned = [
      ...endpoints(3, { zone: 'z1', cluster: 'c1' }, 1),
      ...endpoints(3, { zone: 'z2', cluster: 'c1' }, 2),
      ...endpoints(3, { zone: 'z3', cluster: 'c2' }, 3),
    ];
    const here = { zone: 'z1', cluster: 'c1' };
    const bySubnet = (counts: Map<string, number>) => {
      const out: Record<string, number> = {};
      for (const [key, n] of counts) out[key.split('.')[2]!] = (out[key.split('.')[2]!] ?? 0) + n;
      return out;
    };

    it('prefers the sidecar zone while enough of it is healthy', () => {
      const { pool, pickKey } = setup(zoned, {}, here);
      expect(bySubnet(tally(1000, pickKey))).toEqual({ 1: 1000 });
      expect(pool.snapshot().levels.map((l) => [l.locality, l.loadPercent])).toEqual([
        ['zone', 100],
        ['cluster', 0],
        ['other', 0],
      ]);
    });

    it('spills over gradually when the local healthy share drops below minHealthyPercent', () => {
      const { pool, pickKey } = setup(zoned, {}, here);
      pool.setActiveHealth('10.0.1.1|8080', 'unhealthy');
      // 2 of 3 healthy is 66.7% < 70%: the zone keeps 66.7 / 70 = 95.2% of the traffic.
      expect(pool.snapshot().levels.map((l) => l.loadPercent)).toEqual([95.24, 4.76, 0]);
      const spread = bySubnet(tally(20_000, pickKey));
      expect(Math.abs(spread[1]! - 19_048)).toBeLessThan(300);
      expect(Math.abs(spread[2]! - 952)).toBeLessThan(300);
      expect(spread[3]).toBeUndefined();

      for (const key of ['10.0.1.2|8080', '10.0.1.3|8080']) pool.setActiveHealth(key, 'unhealthy');
      expect(bySubnet(tally(1000, pickKey))).toEqual({ 2: 1000 });
      for (const key of ['10.0.2.1|8080', '10.0.2.2|8080', '10.0.2.3|8080']) pool.setActiveHealth(key, 'unhealthy');
      expect(bySubnet(tally(1000, pickKey))).toEqual({ 3: 1000 });
      pool.setActiveHealth('10.0.1.3|8080', 'healthy');
      // The zone is 1/3 healthy (score 47.6%), the cluster 0, the rest takes what remains.
      expect(pool.snapshot().levels.map((l) => [l.locality, l.loadPercent])).toEqual([
        ['zone', 47.62],
        ['other', 52.38],
      ]);
    });

    it('prefers the cluster, or nothing, as the policy says', () => {
      const cluster = setup(zoned, { locality: { prefer: 'cluster' } }, here);
      expect(Object.keys(bySubnet(tally(1000, cluster.pickKey))).sort()).toEqual(['1', '2']);
      const none = setup(zoned, { locality: { prefer: 'none' } }, here);
      expect(Object.keys(bySubnet(tally(1000, none.pickKey))).sort()).toEqual(['1', '2', '3']);
      expect(none.pool.snapshot().levels.map((l) => l.locality)).toEqual(['any']);
      // A sidecar that does not know its zone still prefers its cluster.
      const noZone = setup(zoned, {}, { cluster: 'c2' });
      expect(Object.keys(bySubnet(tally(1000, noZone.pickKey)))).toEqual(['3']);
    });

    it('with minHealthyPercent 0, stays local while any local endpoint is healthy', () => {
      const { pool, pickKey } = setup(zoned, { locality: { prefer: 'zone', minHealthyPercent: 0 } }, here);
      pool.setActiveHealth('10.0.1.1|8080', 'unhealthy');
      pool.setActiveHealth('10.0.1.2|8080', 'unhealthy');
      expect([...tally(500, pickKey).keys()]).toEqual(['10.0.1.3|8080']);
    });

    it('counts registry-unhealthy endpoints in the local share', () => {
      const eps = zoned.map((e) => (e.address === '10.0.1.1' || e.address === '10.0.1.2' ? { ...e, healthy: false } : e));
      const { pool } = setup(eps, {}, here);
      expect(pool.snapshot().levels[0]!.loadPercent).toBe(47.62);
    });
  });

  describe('priority groups', () => {
    const groups = [...endpoints(2, { priority: 0 }, 1), ...endpoints(2, { priority: 1 }, 2)];

    it('uses the next group only as the first one loses endpoints, and all of it when the first is gone', () => {
      const { pool, pickKey } = setup(groups);
      expect(new Set([...tally(500, pickKey).keys()].map((k) => k.split('.')[2]))).toEqual(new Set(['1']));
      pool.setActiveHealth('10.0.1.1|8080', 'unhealthy');
      expect(pool.snapshot().levels.map((l) => [l.priority, l.loadPercent])).toEqual([
        [0, 71.43],
        [1, 28.57],
      ]);
      pool.setActiveHealth('10.0.1.2|8080', 'unhealthy');
      expect(new Set([...tally(500, pickKey).keys()].map((k) => k.split('.')[2]))).toEqual(new Set(['2']));
      expect(pool.counters().panic).toBe(false);
    });

    it('scales the shares up when every group is short', () => {
      const { pool } = setup(groups);
      pool.setActiveHealth('10.0.1.1|8080', 'unhealthy');
      pool.setActiveHealth('10.0.2.1|8080', 'unhealthy');
      pool.setActiveHealth('10.0.2.2|8080', 'unhealthy');
      expect(pool.snapshot().levels.map((l) => [l.priority, l.loadPercent])).toEqual([[0, 100]]);
    });

    it('orders by priority first, locality within it', () => {
      const eps = [
        { address: '10.0.1.1', priority: 0, zone: 'far' },
        { address: '10.0.2.1', priority: 1, zone: 'near' },
      ];
      const { pickKey } = setup(eps, {}, { zone: 'near' });
      expect([...tally(100, pickKey).keys()]).toEqual(['10.0.1.1|8080']);
    });
  });

  it('balances over all registry-healthy endpoints in panic, and says so', () => {
    const { pool, pickKey, events } = setup([...endpoints(3), { address: '10.0.0.9', healthy: false }]);
    for (const key of ['10.0.0.1|8080', '10.0.0.2|8080', '10.0.0.3|8080']) pool.setActiveHealth(key, 'unhealthy');
    expect([...tally(300, pickKey).keys()].sort()).toEqual(['10.0.0.1|8080', '10.0.0.2|8080', '10.0.0.3|8080']);
    expect(pool.counters()).toMatchObject({ panic: true, panicPicksTotal: 300, usable: 0, activeUnhealthy: 3 });
    pool.setActiveHealth('10.0.0.2|8080', 'healthy');
    expect([...tally(100, pickKey).keys()]).toEqual(['10.0.0.2|8080']);
    expect(events.filter((e) => e.type === 'panic').map((e) => e.type === 'panic' && e.panic)).toEqual([true, false]);
  });

  describe('passive ejection', () => {
    const policy = { outlierDetection: { consecutiveConnectFailures: 2, consecutive5xx: 3, baseEjectionTimeMs: 10_000, maxEjectionPercent: 50 } };

    it('ejects an endpoint that keeps failing, for longer each time, and never more than the share', () => {
      const { pool, pickKey, clock, events } = setup(endpoints(4), policy);
      const bad = '10.0.0.1|8080';
      pool.begin(bad);
      pool.end(bad, 'connect-failure');
      pool.report(bad, 'connect-failure');
      expect(tally(400, pickKey).get(bad)).toBeUndefined();
      expect(pool.snapshot().endpoints.find((e) => e.key === bad)).toMatchObject({ ejected: true, ejections: 1, usable: false, inFlight: 0 });
      clock.advance(10_000);
      expect(tally(400, pickKey).get(bad)).toBe(100);
      pool.report(bad, 'connect-failure');
      pool.report(bad, 'connect-failure');
      clock.advance(10_000);
      expect(tally(4, pickKey).get(bad)).toBeUndefined();
      clock.advance(10_000);
      expect(tally(4, pickKey).get(bad)).toBe(1);
      expect(events.filter((e) => e.type === 'ejected').map((e) => e.type === 'ejected' && e.untilMs)).toHaveLength(2);

      for (const key of ['10.0.0.2|8080', '10.0.0.3|8080', '10.0.0.4|8080']) for (let i = 0; i < 3; i++) pool.report(key, '5xx');
      expect(pool.counters()).toMatchObject({ ejected: 2, ejectionsTotal: 4, ejectionsOverflowTotal: 1, usable: 2 });
    });

    it('ignores outcomes for endpoints it does not know', () => {
      const { pool } = setup(endpoints(2), policy);
      pool.end('10.9.9.9|1', 'connect-failure');
      pool.report('10.9.9.9|1', '5xx');
      expect(pool.counters().ejectionsTotal).toBe(0);
    });
  });

  it('keeps health, ejection and in-flight state of endpoints that remain across an update', () => {
    const policy = { outlierDetection: { consecutiveConnectFailures: 1, baseEjectionTimeMs: 10_000, maxEjectionPercent: 50 } };
    const { pool, pickKey, clock } = setup(endpoints(4), policy);
    pool.report('10.0.0.1|8080', 'connect-failure');
    pool.setActiveHealth('10.0.0.2|8080', 'unhealthy');
    pool.begin('10.0.0.3|8080');
    pool.begin('10.0.0.4|8080');
    pool.update(
      makeService([{ address: '10.0.0.1', weight: 3 }, { address: '10.0.0.2' }, { address: '10.0.0.3', zone: 'moved' }, { address: '10.0.0.5' }], {
        ...policy,
        loadBalancer: { algorithm: 'least-request' },
      }),
      {},
    );
    const byKey = new Map(pool.snapshot().endpoints.map((e) => [e.key, e]));
    expect([...byKey.keys()]).toEqual(['10.0.0.1|8080', '10.0.0.2|8080', '10.0.0.3|8080', '10.0.0.5|8080']);
    expect(byKey.get('10.0.0.1|8080')).toMatchObject({ ejected: true, weight: 3 });
    expect(byKey.get('10.0.0.2|8080')).toMatchObject({ activeHealth: 'unhealthy' });
    expect(byKey.get('10.0.0.3|8080')).toMatchObject({ inFlight: 1, zone: 'moved' });
    expect(byKey.get('10.0.0.5|8080')).toMatchObject({ activeHealth: 'unknown', ejected: false, inFlight: 0 });
    // Least request now: 3 is busy, 5 is idle, 1 and 2 are out.
    expect([...tally(100, pickKey).keys()]).toEqual(['10.0.0.5|8080']);
    // The removed endpoint's connection ends later: nothing breaks.
    pool.end('10.0.0.4|8080', 'success');
    clock.advance(10_000);
    expect(tally(100, pickKey).has('10.0.0.1|8080')).toBe(true);
  });

  describe('retries on another endpoint', () => {
    it('skips excluded endpoints with every algorithm', () => {
      for (const algorithm of ['round-robin', 'weighted', 'least-request', 'ring-hash', 'random'] as Algorithm[]) {
        const lb = algorithm === 'ring-hash' ? { algorithm, hash: { on: 'source-ip' } } : { algorithm };
        const { pickKey } = setup(endpoints(3), { loadBalancer: lb });
        const exclude = new Set(['10.0.0.1|8080', '10.0.0.3|8080']);
        expect([...tally(50, () => pickKey({ exclude, sourceIp: '192.168.1.7' })).keys()]).toEqual(['10.0.0.2|8080']);
        expect(pickKey({ exclude: new Set([...exclude, '10.0.0.2|8080']) })).toBeUndefined();
      }
    });

    it('moves on to the next group when the chosen one is all tried', () => {
      const { pickKey } = setup([...endpoints(2, { priority: 0 }, 1), ...endpoints(1, { priority: 1 }, 2)]);
      expect(pickKey({ exclude: new Set(['10.0.1.1|8080', '10.0.1.2|8080']) })).toBe('10.0.2.1|8080');
    });
  });

  describe('ring hash', () => {
    const ringPolicy = (on: string, name?: string) => ({ loadBalancer: { algorithm: 'ring-hash', hash: { on, name } } });
    const users = Array.from({ length: 5000 }, (_, i) => `user-${i}`);

    it('keeps a header value on one endpoint, and moves only the keys of an endpoint that leaves', () => {
      const { pool, pickKey } = setup(endpoints(10), ringPolicy('header', 'x-user'));
      const route = () => users.map((u) => pickKey({ header: (name) => (name === 'x-user' ? u : undefined) }));
      const before = route();
      expect(route()).toEqual(before);
      pool.update(
        makeService(
          endpoints(10).filter((e) => e.address !== '10.0.0.7'),
          ringPolicy('header', 'x-user'),
        ),
      );
      const after = route();
      const moved = users.map((_, i) => i).filter((i) => before[i] !== after[i]);
      expect(moved.every((i) => before[i] === '10.0.0.7|8080')).toBe(true);
      expect(moved.length / users.length).toBeLessThan(0.15);
      // Ejection or a failed check moves only that endpoint's keys too.
      pool.setActiveHealth('10.0.0.3|8080', 'unhealthy');
      const third = route();
      expect(
        users
          .map((_, i) => i)
          .filter((i) => after[i] !== third[i])
          .every((i) => after[i] === '10.0.0.3|8080'),
      ).toBe(true);
    });

    it('hashes on the source IP or a cookie, and picks anyone when the key is missing', () => {
      const byIp = setup(endpoints(10), ringPolicy('source-ip'));
      const ipPick = new Set(Array.from({ length: 20 }, () => byIp.pickKey({ sourceIp: '172.16.0.42' })));
      expect(ipPick.size).toBe(1);
      const byCookie = setup(endpoints(10), ringPolicy('cookie', 'session'));
      const cookiePick = new Set(Array.from({ length: 20 }, () => byCookie.pickKey({ cookie: () => 'abc' })));
      expect(cookiePick.size).toBe(1);
      expect(tally(500, () => byCookie.pickKey({})).size).toBeGreaterThan(5);
    });
  });

  it('least request prefers the endpoint with fewer requests in flight', () => {
    const { pool, pickKey } = setup(endpoints(2), { loadBalancer: { algorithm: 'least-request' } });
    pool.begin('10.0.0.1|8080');
    pool.begin('10.0.0.1|8080');
    expect([...tally(50, pickKey).keys()]).toEqual(['10.0.0.2|8080']);
    pool.end('10.0.0.1|8080');
    pool.end('10.0.0.1|8080');
    pool.begin('10.0.0.2|8080');
    expect([...tally(50, pickKey).keys()]).toEqual(['10.0.0.1|8080']);
    expect(pool.counters().inFlight).toBe(1);
  });

  it('describes itself for the admin endpoint', () => {
    const { pool } = setup(
      [
        { address: '10.0.0.1', zone: 'z1', priority: 2 },
        { address: '10.0.0.2', healthy: false },
      ],
      {},
      { zone: 'z1' },
    );
    expect(pool.snapshot()).toEqual({
      service: 'orders.shop',
      algorithm: 'round-robin',
      panic: false,
      levels: [{ priority: 2, locality: 'zone', loadPercent: 100, endpoints: ['10.0.0.1|8080'] }],
      endpoints: [
        {
          key: '10.0.0.1|8080',
          address: '10.0.0.1',
          port: 8080,
          weight: 1,
          zone: 'z1',
          priority: 2,
          registryHealthy: true,
          activeHealth: 'unknown',
          ejected: false,
          ejections: 0,
          inFlight: 0,
          usable: true,
        },
        {
          key: '10.0.0.2|8080',
          address: '10.0.0.2',
          port: 8080,
          weight: 1,
          priority: 0,
          registryHealthy: false,
          activeHealth: 'unknown',
          ejected: false,
          ejections: 0,
          inFlight: 0,
          usable: false,
        },
      ],
    });
    pool.close();
    expect(() => pool.update(makeService([]))).toThrow(/closed/);
  });

  it('micro-benchmark: ns per pick over 10 endpoints (printed, not asserted)', () => {
    const results: Record<string, number> = {};
    const header = (name: string) => (name === 'x-user' ? 'user-12345' : undefined);
    for (const algorithm of ['round-robin', 'weighted', 'least-request', 'ring-hash', 'random'] as Algorithm[]) {
      const lb = algorithm === 'ring-hash' ? { algorithm, hash: { on: 'header', name: 'x-user' } } : { algorithm };
      const pool = new EndpointPool({ activeHealthChecks: false });
      pool.update(
        makeService(
          endpoints(10, {}, 0).map((e, i) => ({ ...e, weight: 1 + (i % 3), zone: i < 5 ? 'z1' : 'z2' })),
          { loadBalancer: lb },
        ),
        { zone: 'z1' },
      );
      const ctx: PickContext = { header, sourceIp: '10.1.2.3' };
      const n = 1_000_000;
      let sink = 0;
      for (let i = 0; i < 100_000; i++) sink += pool.pick(ctx)!.port;
      const start = process.hrtime.bigint();
      for (let i = 0; i < n; i++) sink += pool.pick(ctx)!.port;
      results[algorithm] = Number(process.hrtime.bigint() - start) / n;
      expect(sink).toBeGreaterThan(0);
      pool.close();
    }
    console.log(
      `balancer pick, ns per pick over 10 endpoints: ${Object.entries(results)
        .map(([a, ns]) => `${a} ${ns.toFixed(0)}`)
        .join(', ')}`,
    );
  });
});
