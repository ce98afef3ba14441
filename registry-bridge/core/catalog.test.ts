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
});
