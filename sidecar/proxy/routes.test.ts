/*
 * Where a redirected connection goes: VIP:port routes, and the address:port of a registry endpoint
 * an app dialled itself (`directDial`), then what `keep` and `rebalance` do with it, through the
 * attempt planner the outbound proxy uses, on a pool with a manual clock and no real endpoint.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { AttemptPlanner } from '../balancer/attempts.js';
import { ManualClock } from '../balancer/clock.js';
import { EndpointPool } from '../balancer/pool.js';
import { endpoints, makeService, tally } from '../balancer/testing/fixtures.js';
import { MeshSchema, API_VERSION } from '../../common/contract/index.js';
import { endpointFallbackEnabled, RouteTable, type Route } from './routes.js';

const registry = (extra: Record<string, unknown> = {}, policy: Record<string, unknown> = {}, count = 3) =>
  makeService(endpoints(count, { port: 8080 }, 7), policy, {
    id: 'orders.dc1.consul',
    name: 'orders',
    namespace: undefined,
    registry: 'dc1',
    source: 'consul',
    vips: [{ address: '240.240.0.20', allocation: 'mesh' }],
    directDial: 'keep',
    ...extra,
  });
const kubernetes = makeService(endpoints(2, { port: 8080 }, 9), {}, { vips: [{ address: '10.96.0.10', allocation: 'cluster-ip' }] });

const pools: EndpointPool[] = [];
afterEach(() => {
  for (const pool of pools.splice(0)) pool.close();
});
function poolFor(route: Route) {
  const clock = new ManualClock();
  const pool = new EndpointPool({ clock, activeHealthChecks: false });
  pool.update(route.service);
  pools.push(pool);
  return { pool, clock };
}
/** One connection as the outbound proxy makes it: the planner's first endpoint, ended as `outcome`. */
function connect(pool: EndpointPool, route: Route, outcome: 'success' | 'connect-failure' = 'success'): string {
  const planner = new AttemptPlanner(pool, route.port.port, undefined, undefined, false, route.kept);
  const target = planner.next()!;
  planner.end(outcome);
  return target.address;
}

describe('the route table', () => {
  it("routes a VIP:port, and an opted-in registry endpoint's address:port to its service", () => {
    const routes = RouteTable.build([kubernetes, registry()]);
    expect(routes.lookup('240.240.0.20', 80)).toMatchObject({ service: { id: 'orders.dc1.consul' }, port: { port: 80 } });
    expect(routes.lookup('240.240.0.20', 80)?.kept).toBeUndefined();
    expect(routes.lookup('10.96.0.10', 80)?.service.id).toBe('orders.shop');
    // The instance Ribbon picked, as the forwarder reports it (an IPv4-mapped form too).
    expect(routes.lookup('10.0.7.2', 8080)).toMatchObject({ service: { id: 'orders.dc1.consul' }, port: { port: 80 }, kept: '10.0.7.2|8080' });
    expect(routes.lookup('::ffff:10.0.7.3', 8080)?.kept).toBe('10.0.7.3|8080');
    // Another port of the instance, or an address no endpoint has: not the service's.
    expect(routes.lookup('10.0.7.2', 9999)).toBeUndefined();
    expect(routes.lookup('10.0.7.9', 8080)).toBeUndefined();
    expect(routes.size).toBe(2 + 3);
    expect(routes.problems).toEqual([]);
  });

  it('never routes a pod address of a Kubernetes service, nor an endpoint of a registry service that did not opt in', () => {
    const routes = RouteTable.build([kubernetes, registry({ directDial: undefined })]);
    expect(routes.lookup('10.0.9.1', 8080)).toBeUndefined();
    expect(routes.lookup('10.0.7.1', 8080)).toBeUndefined();
    expect(routes.lookup('240.240.0.20', 80)?.service.id).toBe('orders.dc1.consul');
  });

  it('routes each port of a multi-port endpoint as the pool reaches it, keeping the endpoint by its key', () => {
    const multi = registry({
      ports: [
        { name: 'http', port: 80, protocol: 'http' },
        { name: 'admin', port: 9000, targetPort: 9090 },
      ],
      endpoints: [
        { address: '10.0.7.1', port: 8080, ports: { admin: 8081 } },
        { address: 'fd00::7', port: 8080 },
      ],
    });
    const routes = RouteTable.build([multi]);
    expect(routes.lookup('10.0.7.1', 8080)).toMatchObject({ port: { name: 'http' }, kept: '10.0.7.1|8080' });
    expect(routes.lookup('10.0.7.1', 8081)).toMatchObject({ port: { name: 'admin' }, kept: '10.0.7.1|8080' });
    expect(routes.lookup('fd00::7', 9090)).toMatchObject({ port: { name: 'admin' }, kept: 'fd00::7|8080' });
  });

  it('lets a VIP win over an endpoint at the same address:port, and gives an endpoint two services list to the smaller id, reported', () => {
    const eureka = registry({
      id: 'orders.eureka.eureka',
      source: 'eureka',
      registry: 'eureka',
      vips: [{ address: '240.240.0.21', allocation: 'mesh' }],
      endpoints: [
        { address: '10.0.7.1', port: 8080 },
        { address: '240.240.0.20', port: 80 },
      ],
      directDial: 'rebalance',
    });
    // Listed Eureka first: the rule does not depend on the order of the catalog.
    const routes = RouteTable.build([eureka, registry()]);
    expect(routes.lookup('10.0.7.1', 8080)).toMatchObject({ service: { id: 'orders.dc1.consul' }, kept: '10.0.7.1|8080' });
    expect(routes.lookup('240.240.0.20', 80)?.kept).toBeUndefined();
    expect(routes.problems).toEqual(['10.0.7.1 port 8080: an endpoint of orders.dc1.consul and orders.eureka.eureka; orders.dc1.consul takes its calls']);
  });
});

describe('direct dials', () => {
  it('keep: every connection stays on the endpoint the app dialled while it is usable', () => {
    const route = RouteTable.build([registry()]).lookup('10.0.7.3', 8080)!;
    const { pool } = poolFor(route);
    expect(tally(30, () => connect(pool, route))).toEqual(new Map([['10.0.7.3', 30]]));
  });

  it('keep: balances over the healthy endpoints while the dialled one fails its check, and returns to it once it passes', () => {
    const route = RouteTable.build([registry()]).lookup('10.0.7.3', 8080)!;
    const { pool } = poolFor(route);
    pool.setActiveHealth('10.0.7.3|8080', 'unhealthy');
    expect(tally(30, () => connect(pool, route))).toEqual(
      new Map([
        ['10.0.7.1', 15],
        ['10.0.7.2', 15],
      ]),
    );
    pool.setActiveHealth('10.0.7.3|8080', 'healthy');
    expect(connect(pool, route)).toBe('10.0.7.3');
  });

  it('keep: moves off an endpoint ejected after connect failures until its ejection ends on the clock', () => {
    const outlierDetection = { consecutiveConnectFailures: 2, baseEjectionTimeMs: 10_000, maxEjectionPercent: 50 };
    const route = RouteTable.build([registry({}, { outlierDetection })]).lookup('10.0.7.3', 8080)!;
    const { pool, clock } = poolFor(route);
    expect(connect(pool, route, 'connect-failure')).toBe('10.0.7.3');
    expect(connect(pool, route, 'connect-failure')).toBe('10.0.7.3');
    expect(new Set(Array.from({ length: 10 }, () => connect(pool, route)))).toEqual(new Set(['10.0.7.1', '10.0.7.2']));
    clock.advance(10_000);
    expect(connect(pool, route)).toBe('10.0.7.3');
  });

  it('keep: a connection whose dialled endpoint refuses fails over to another endpoint at once', () => {
    const route = RouteTable.build([registry()]).lookup('10.0.7.3', 8080)!;
    const { pool } = poolFor(route);
    const planner = new AttemptPlanner(pool, route.port.port, undefined, undefined, false, route.kept);
    expect(planner.next()!.address).toBe('10.0.7.3');
    expect(planner.retryAfterConnectFailure()).toBe(0);
    expect(['10.0.7.1', '10.0.7.2']).toContain(planner.next()!.address);
  });

  it('keep: an endpoint the registry marks unhealthy or draining (weight 0) is not kept', () => {
    const service = registry({
      endpoints: [
        { address: '10.0.7.1', port: 8080 },
        { address: '10.0.7.2', port: 8080, healthy: false },
        { address: '10.0.7.3', port: 8080, weight: 0 },
      ],
    });
    const routes = RouteTable.build([service]);
    const { pool } = poolFor(routes.lookup('10.0.7.2', 8080)!);
    expect(tally(5, () => connect(pool, routes.lookup('10.0.7.2', 8080)!))).toEqual(new Map([['10.0.7.1', 5]]));
    expect(tally(5, () => connect(pool, routes.lookup('10.0.7.3', 8080)!))).toEqual(new Map([['10.0.7.1', 5]]));
  });

  it("rebalance: connections to one endpoint's address spread over every usable endpoint", () => {
    const route = RouteTable.build([registry({ directDial: 'rebalance' })]).lookup('10.0.7.3', 8080)!;
    expect(route.kept).toBeUndefined();
    const { pool } = poolFor(route);
    expect(tally(30, () => connect(pool, route))).toEqual(
      new Map([
        ['10.0.7.1', 10],
        ['10.0.7.2', 10],
        ['10.0.7.3', 10],
      ]),
    );
  });
});

describe('the endpoint fallback (a socket load balancer rewrote the ClusterIP to a pod address)', () => {
  // orders.shop: ClusterIP 10.96.0.10 port 80 -> pods 10.0.9.1-2:8080.
  const headless = makeService([{ address: '10.0.9.2' }, { address: '10.0.9.3' }], {}, { id: 'orders-headless.shop', name: 'orders-headless' });
  const admin = makeService(
    [{ address: '10.0.9.1', port: 9000 }],
    {},
    { id: 'orders-admin.shop', name: 'orders-admin', vips: [{ address: '10.96.0.11', allocation: 'cluster-ip' }] },
  );

  it('routes the pod address:port of a service with a ClusterIP to that service, balanced, not kept', () => {
    const routes = RouteTable.build([kubernetes, admin], { endpointFallback: true });
    expect(routes.lookup('10.0.9.1', 8080)).toMatchObject({ service: { id: 'orders.shop' }, port: { port: 80 } });
    expect(routes.lookup('::ffff:10.0.9.2', 8080)?.service.id).toBe('orders.shop');
    // The same pod on another service's port is that service's.
    expect(routes.lookup('10.0.9.1', 9000)?.service.id).toBe('orders-admin.shop');
    const route = routes.lookup('10.0.9.1', 8080)!;
    expect(route.kept).toBeUndefined();
    const { pool } = poolFor(route);
    expect(tally(10, () => connect(pool, route))).toEqual(
      new Map([
        ['10.0.9.1', 5],
        ['10.0.9.2', 5],
      ]),
    );
    // A port no service's endpoint listens on, an address no endpoint has.
    expect(routes.lookup('10.0.9.1', 8081)).toBeUndefined();
    expect(routes.lookup('10.0.9.7', 8080)).toBeUndefined();
    expect(routes.isAmbiguous('10.0.9.7', 8080)).toBe(false);
  });

  it('is off unless asked: a pod address passes through as before', () => {
    const routes = RouteTable.build([kubernetes]);
    expect(routes.lookup('10.0.9.1', 8080)).toBeUndefined();
    expect(routes.isAmbiguous('10.0.9.1', 8080)).toBe(false);
  });

  it('passes through an endpoint two services list on the same port, and says it is ambiguous, whatever the catalog order', () => {
    for (const order of [
      [kubernetes, headless],
      [headless, kubernetes],
    ]) {
      const routes = RouteTable.build(order, { endpointFallback: true });
      // 10.0.9.2 is behind orders.shop and its headless service (a StatefulSet peer dialled on purpose).
      expect(routes.lookup('10.0.9.2', 8080)).toBeUndefined();
      expect(routes.isAmbiguous('10.0.9.2', 8080)).toBe(true);
      // Only orders.shop lists 10.0.9.1; only the headless service (no ClusterIP to rewrite) lists 10.0.9.3.
      expect(routes.lookup('10.0.9.1', 8080)?.service.id).toBe('orders.shop');
      expect(routes.lookup('10.0.9.3', 8080)).toBeUndefined();
      expect(routes.isAmbiguous('10.0.9.3', 8080)).toBe(false);
    }
  });

  it("never takes a registry service's endpoint, and leaves a direct dial and a VIP their own routes", () => {
    const consul = registry({ directDial: undefined, endpoints: [{ address: '10.0.9.1', port: 8080 }] });
    const routes = RouteTable.build([kubernetes, consul], { endpointFallback: true });
    // A registry service that did not opt in to direct dials still makes the pod address ambiguous.
    expect(routes.isAmbiguous('10.0.9.1', 8080)).toBe(true);
    expect(routes.lookup('10.0.9.1', 8080)).toBeUndefined();
    const dialled = RouteTable.build([kubernetes, registry({ endpoints: [{ address: '10.0.9.1', port: 8080 }] })], { endpointFallback: true });
    expect(dialled.lookup('10.0.9.1', 8080)).toMatchObject({ service: { id: 'orders.dc1.consul' }, kept: '10.0.9.1|8080' });
    expect(dialled.lookup('10.0.9.2', 8080)?.service.id).toBe('orders.shop');
    expect(RouteTable.build([kubernetes], { endpointFallback: true }).lookup('10.96.0.10', 80)?.service.id).toBe('orders.shop');
  });

  it('follows mesh.json: auto is on in eBPF mode only; on and off say so in every mode', () => {
    const mesh = (outbound: Record<string, unknown>, mode: string) =>
      MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', outbound, interception: { mode } });
    expect(mesh({}, 'iptables').outbound.endpointFallback).toBe('auto');
    expect(endpointFallbackEnabled(mesh({}, 'ebpf'))).toBe(true);
    expect(endpointFallbackEnabled(mesh({}, 'iptables'))).toBe(false);
    expect(endpointFallbackEnabled(mesh({}, 'cni'))).toBe(false);
    expect(endpointFallbackEnabled(mesh({ endpointFallback: 'on' }, 'iptables'))).toBe(true);
    expect(endpointFallbackEnabled(mesh({ endpointFallback: 'off' }, 'ebpf'))).toBe(false);
    expect(() => mesh({ endpointFallback: 'yes' }, 'ebpf')).toThrow(/endpointFallback/);
  });

  it("decides auto by the pod's own interception mode where it chose one, on and off still in every mode", () => {
    const mesh = (outbound: Record<string, unknown>, mode: string) =>
      MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', outbound, interception: { mode } });
    expect(endpointFallbackEnabled(mesh({}, 'ebpf'), 'iptables')).toBe(false);
    expect(endpointFallbackEnabled(mesh({}, 'ebpf'), 'cni')).toBe(false);
    expect(endpointFallbackEnabled(mesh({}, 'iptables'), 'ebpf')).toBe(true);
    expect(endpointFallbackEnabled(mesh({ endpointFallback: 'on' }, 'ebpf'), 'iptables')).toBe(true);
    expect(endpointFallbackEnabled(mesh({ endpointFallback: 'off' }, 'iptables'), 'ebpf')).toBe(false);
  });
});
