import { describe, expect, it } from '@jest/globals';
import { API_VERSION, defaultMesh, type Mesh, type Service, type SidecarConfig } from '../../common/contract/index.js';
import { createLogger } from '../../common/log.js';
import { Catalog } from './catalog.js';
import type { Sink, SinkStatus } from './types.js';

const log = createLogger('catalog-test', 'silent');

class RecordingSink implements Sink {
  readonly name = 'rec';
  readonly kind = 'test';
  readonly calls: string[] = [];
  setMesh(mesh: Mesh) {
    this.calls.push(`mesh ${mesh.name}`);
  }
  setService(id: string, service: Service | undefined) {
    this.calls.push(service ? `service ${id} ${service.endpoints.length}` : `remove ${id}`);
  }
  setSidecar(id: string, config: SidecarConfig | undefined) {
    this.calls.push(config ? `sidecar ${id}` : `remove-sidecar ${id}`);
  }
  complete() {
    this.calls.push('complete');
  }
  async settled() {}
  async stop() {}
  status(): SinkStatus {
    return { name: this.name, kind: this.kind, address: '', pending: 0, writes: 0, failures: 0, lastWriteAt: 0 };
  }
}

const svc = (id: string, endpoints = 1, extra: Partial<Service> = {}): Service =>
  ({
    apiVersion: API_VERSION,
    kind: 'Service',
    id,
    name: id.split('.')[0],
    namespace: 'shop',
    source: 'kubernetes',
    ports: [{ port: 80, protocol: 'tcp' }],
    endpoints: Array.from({ length: endpoints }, (_, i) => ({ address: `10.244.0.${i + 1}`, port: 8080 })),
    ...extra,
  }) as Service;

const sidecar = (id: string) =>
  ({
    apiVersion: API_VERSION,
    kind: 'Sidecar',
    id,
    mesh: 'flb',
    identity: { kind: 'pod', namespace: 'shop', name: id.slice(9), serviceAccount: 'default' },
  }) as SidecarConfig;

describe('the catalog', () => {
  it('hands a sink that attaches the whole state, then only real changes; removals wait for every source to sync', () => {
    const catalog = new Catalog(['k8s', 'consul'], defaultMesh(), log);
    catalog.upsertService('k8s', svc('orders.shop'));
    catalog.upsertSidecar('k8s', 'pod.shop.a', sidecar('pod.shop.a'));
    const sink = new RecordingSink();
    catalog.attach([sink]);
    expect(sink.calls).toEqual(['mesh flb', 'service orders.shop 1', 'sidecar pod.shop.a']);
    catalog.upsertService('k8s', svc('orders.shop'));
    catalog.upsertService('k8s', svc('orders.shop', 2));
    catalog.synced('k8s');
    expect(sink.calls.slice(3)).toEqual(['service orders.shop 2']);
    catalog.synced('consul');
    expect(sink.calls.at(-1)).toBe('complete');
    catalog.removeService('k8s', 'orders.shop');
    expect(sink.calls.at(-1)).toBe('remove orders.shop');
  });

  it('refuses a service that breaks the contract or the mesh, and keeps what it had', () => {
    const rejected: string[] = [];
    const catalog = new Catalog(['static'], defaultMesh(), log, (_source, id, why) => rejected.push(`${id}: ${why}`));
    const sink = new RecordingSink();
    catalog.attach([sink]);
    catalog.upsertService(
      'static',
      svc('pay.static', 1, { source: 'static', namespace: undefined as never, vips: [{ address: '240.240.0.5', allocation: 'mesh' }] }),
    );
    catalog.upsertService(
      'static',
      svc('pay.static', 2, { source: 'static', namespace: undefined as never, vips: [{ address: '10.1.0.5', allocation: 'mesh' }] }),
    );
    expect(sink.calls).toEqual(['mesh flb', 'service pay.static 1']);
    expect(rejected).toEqual([expect.stringMatching(/^pay.static: vips\[0\].address: mesh-allocated VIP 10.1.0.5 is outside the mesh VIP ranges/)]);
  });

  it('resolves two sources reporting one id by their order in the BridgeConfig, not by which came last', () => {
    const catalog = new Catalog(['first', 'second'], defaultMesh(), log);
    const sink = new RecordingSink();
    catalog.attach([sink]);
    catalog.upsertService('second', svc('orders.shop', 3));
    catalog.upsertService('first', svc('orders.shop', 1));
    catalog.upsertService('second', svc('orders.shop', 5));
    expect(catalog.service('orders.shop')!.endpoints).toHaveLength(1);
    expect(catalog.stats.conflicts).toBe(1);
    catalog.removeService('second', 'orders.shop');
    expect(catalog.service('orders.shop')).toBeDefined();
  });

  it('keeps the state while detached (a standby) and gives it to the next leader', () => {
    const catalog = new Catalog(['k8s'], defaultMesh(), log);
    const first = new RecordingSink();
    catalog.attach([first]);
    catalog.synced('k8s');
    catalog.detach();
    catalog.upsertService('k8s', svc('orders.shop'));
    const next = new RecordingSink();
    catalog.attach([next]);
    expect(first.calls).toEqual(['mesh flb', 'complete']);
    expect(next.calls).toEqual(['mesh flb', 'service orders.shop 1', 'complete']);
  });

  const consul = (name: string, dc: string, extra: Partial<Service> = {}): Service =>
    svc(`${name}.${dc}.consul`, 1, {
      name,
      namespace: undefined as never,
      registry: dc,
      source: 'consul',
      hostnames: [`${name}.service.consul`, `${name}.service.${dc}.consul`],
      ...extra,
    });

  it('gives a registry service a VIP from the mesh range, the same after it left and came back', () => {
    const catalog = new Catalog(['consul'], defaultMesh(), log);
    catalog.upsertService('consul', consul('web', 'dc1'));
    const vip = catalog.service('web.dc1.consul')!.vips;
    expect(vip).toEqual([{ address: expect.stringMatching(/^240\.240\./), allocation: 'mesh' }]);
    catalog.removeService('consul', 'web.dc1.consul');
    catalog.upsertService('consul', consul('web', 'dc1'));
    expect(catalog.service('web.dc1.consul')!.vips).toEqual(vip);
    // A Kubernetes service keeps its ClusterIP and gets no mesh VIP.
    catalog.upsertService('consul', svc('orders.shop'));
    expect(catalog.service('orders.shop')!.vips).toEqual([]);
  });

  it('publishes the VIPs read back from the published catalog, not new ones, after a restart', () => {
    const before = new Catalog(['consul'], defaultMesh(), log);
    before.upsertService('consul', consul('a', 'dc1'));
    before.upsertService('consul', consul('b', 'dc1'));
    const published = new Map([...before.serviceIds()].map((id) => [id, before.service(id)!.vips[0]!.address]));
    // Swapped on purpose: what was published is what counts, whatever a fresh hash would say.
    const stored = new Map([
      ['a.dc1.consul', published.get('b.dc1.consul')!],
      ['b.dc1.consul', published.get('a.dc1.consul')!],
    ]);
    const after = new Catalog(['consul'], defaultMesh(), log);
    after.adoptStoredVips(stored);
    const sink = new RecordingSink();
    after.attach([sink]);
    after.upsertService('consul', consul('b', 'dc1'));
    after.upsertService('consul', consul('a', 'dc1'));
    expect(after.service('a.dc1.consul')!.vips[0]!.address).toBe(stored.get('a.dc1.consul'));
    expect(after.service('b.dc1.consul')!.vips[0]!.address).toBe(stored.get('b.dc1.consul'));
    // A replica that allocated before it read the catalog (a standby turned leader) moves to the stored VIPs.
    before.adoptStoredVips(stored);
    expect(before.service('a.dc1.consul')!.vips[0]!.address).toBe(stored.get('a.dc1.consul'));
    expect(before.service('b.dc1.consul')!.vips[0]!.address).toBe(stored.get('b.dc1.consul'));
  });

  it('gives a hostname two sources claim to the one listed first, whichever reported last, and back when it leaves', () => {
    const catalog = new Catalog(['dc1', 'dc2'], defaultMesh(), log);
    catalog.upsertService('dc2', consul('web', 'dc2'));
    expect(catalog.service('web.dc2.consul')!.hostnames).toEqual(['web.service.consul', 'web.service.dc2.consul']);
    catalog.upsertService('dc1', consul('web', 'dc1'));
    expect(catalog.service('web.dc1.consul')!.hostnames).toEqual(['web.service.consul', 'web.service.dc1.consul']);
    expect(catalog.service('web.dc2.consul')!.hostnames).toEqual(['web.service.dc2.consul']);
    expect(catalog.nameConflicts()).toEqual([{ hostname: 'web.service.consul', holder: 'web.dc1.consul', losers: ['web.dc2.consul'] }]);
    catalog.removeService('dc1', 'web.dc1.consul');
    expect(catalog.service('web.dc2.consul')!.hostnames).toEqual(['web.service.consul', 'web.service.dc2.consul']);
  });

  it('never lets a bare registry name shadow a Kubernetes Service of that name', () => {
    const catalog = new Catalog(['eureka', 'k8s'], defaultMesh(), log);
    const sink = new RecordingSink();
    catalog.attach([sink]);
    const orders = svc('orders.prod.eureka', 1, {
      name: 'ORDERS',
      namespace: undefined as never,
      registry: 'prod',
      source: 'eureka',
      hostnames: ['orders', 'orders.prod.eureka'],
    });
    catalog.upsertService('eureka', orders);
    expect(catalog.service('orders.prod.eureka')!.hostnames).toEqual(['orders', 'orders.prod.eureka']);
    catalog.upsertService('k8s', svc('orders.shop'));
    expect(catalog.service('orders.prod.eureka')!.hostnames).toEqual(['orders.prod.eureka']);
    expect(sink.calls.slice(-2)).toEqual(['service orders.shop 1', 'service orders.prod.eureka 1']);
    catalog.removeService('k8s', 'orders.shop');
    expect(catalog.service('orders.prod.eureka')!.hostnames).toEqual(['orders', 'orders.prod.eureka']);
  });
});
