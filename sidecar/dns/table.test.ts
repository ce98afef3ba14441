import { describe, expect, it } from '@jest/globals';
import { buildDnsTable, reverseName } from './table.js';
import { orders, service } from './testing/fixtures.js';

const payments = service({
  id: 'payments.eureka-prod.eureka',
  name: 'PAYMENTS',
  registry: 'eureka-prod',
  source: 'eureka',
  hostnames: ['payments', 'payments.eureka'],
  vips: [{ address: '240.240.0.17', allocation: 'mesh' }],
});
const search = ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];

describe('the DNS table', () => {
  it("answers a Kubernetes service's cluster name and what the search list builds from `orders` and `orders.shop`", () => {
    const table = buildDnsTable([orders], [], search);
    expect(table.lookup('orders.shop.svc.cluster.local')).toEqual({ a: ['10.96.14.20'], aaaa: [], srv: [], ptr: [] });
    expect(table.lookup('ORDERS.Shop.svc.cluster.local.')?.a).toEqual(['10.96.14.20']);
    // `orders.shop` is asked as orders.shop.shop.svc.cluster.local first: not ours, upstream says NXDOMAIN.
    expect(table.lookup('orders.shop.shop.svc.cluster.local')).toBeUndefined();
    expect(table.lookup('orders.shop.svc.cluster.local.shop.svc.cluster.local')).toBeUndefined();
    // Another namespace's `orders` is kube-dns's, not ours.
    expect(table.lookup('orders.default.svc.cluster.local')).toBeUndefined();
    expect(table.lookup('orders')).toBeUndefined();
  });

  it('answers registry hostnames as they are and with each search domain, but an exact name wins', () => {
    const clash = service({
      id: 'payments.shop',
      name: 'payments',
      namespace: 'shop',
      source: 'kubernetes',
      vips: [{ address: '10.96.0.99', allocation: 'cluster-ip' }],
    });
    const table = buildDnsTable([payments, clash], [], search);
    expect(table.lookup('payments')?.a).toEqual(['240.240.0.17']);
    expect(table.lookup('payments.eureka')?.a).toEqual(['240.240.0.17']);
    expect(table.lookup('payments.cluster.local')?.a).toEqual(['240.240.0.17']);
    expect(table.lookup('payments.eureka.cluster.local')?.a).toEqual(['240.240.0.17']);
    // The Kubernetes service payments.shop is an exact name.
    expect(table.lookup('payments.shop.svc.cluster.local')?.a).toEqual(['10.96.0.99']);
    expect(table.problems).toEqual([]);
  });

  it("leaves every searched name under svc.<cluster domain> to kube-dns: a registry's bare name never shadows a Service the catalog lacks", () => {
    // No Kubernetes service in the catalog: Service payments in shop lives in a namespace the bridge
    // does not export, and the pod in shop dialling `payments` must reach it.
    const table = buildDnsTable([payments], [], search);
    for (const name of [
      'payments.shop.svc.cluster.local',
      'payments.svc.cluster.local',
      // `payments.eureka` + svc.cluster.local is Service payments in namespace eureka.
      'payments.eureka.svc.cluster.local',
      'payments.eureka.shop.svc.cluster.local',
      'payments.eureka-prod.eureka.svc.cluster.local',
    ])
      expect([name, table.lookup(name)]).toEqual([name, undefined]);
    expect(table.lookup('payments')?.a).toEqual(['240.240.0.17']);
    expect(table.lookup('payments.cluster.local')?.a).toEqual(['240.240.0.17']);
    // Under another cluster domain, the same rule there.
    const corp = buildDnsTable([payments], [], ['shop.svc.corp.example', 'svc.corp.example', 'corp.example', 'example.com'], { clusterDomain: 'corp.example' });
    expect(corp.lookup('payments.shop.svc.corp.example')).toBeUndefined();
    expect(corp.lookup('payments.corp.example')?.a).toEqual(['240.240.0.17']);
    expect(corp.lookup('payments.example.com')?.a).toEqual(['240.240.0.17']);
  });

  it('publishes SRV for named ports, pointing at the name it was asked under', () => {
    const table = buildDnsTable([orders, payments], [], search);
    expect(table.lookup('_http._tcp.orders.shop.svc.cluster.local')?.srv).toEqual([{ port: 80, name: 'orders.shop.svc.cluster.local' }]);
    expect(table.lookup('_grpc._tcp.orders.shop.svc.cluster.local')?.srv).toEqual([{ port: 9090, name: 'orders.shop.svc.cluster.local' }]);
    // A single unnamed port has no SRV record (as in Kubernetes).
    expect([...table.names()].filter(([n]) => n.includes('payments') && n.startsWith('_'))).toEqual([]);
  });

  it("merges sidecar.json's records by name, and they beat a service's hostname", () => {
    const table = buildDnsTable(
      [payments],
      [
        { name: 'db.internal', type: 'A', address: '192.168.1.50' },
        { name: 'db.internal', type: 'AAAA', address: 'fd00::50' },
        { name: 'payments', type: 'A', address: '192.168.1.60' },
        { name: 'bad.internal', type: 'A', address: 'fd00::1' },
      ],
      [],
    );
    expect(table.lookup('db.internal')).toEqual({ a: ['192.168.1.50'], aaaa: ['fd00::50'], srv: [], ptr: [] });
    expect(table.lookup('payments')?.a).toEqual(['192.168.1.60']);
    expect(table.lookup('payments.eureka')?.a).toEqual(['240.240.0.17']);
    expect(table.lookup('bad.internal')).toBeUndefined();
    expect(table.problems).toEqual(
      expect.arrayContaining([expect.stringContaining('bad.internal'), expect.stringContaining('payments: claimed by record payments')]),
    );
  });

  it('splits VIPs by family, answers reverse names, and leaves services without a VIP to upstream', () => {
    const dual = service({
      id: 'dual.static',
      name: 'dual',
      source: 'static',
      hostnames: ['dual.example'],
      vips: [
        { address: '240.240.0.18', allocation: 'mesh' },
        { address: 'fd00::18', allocation: 'mesh' },
      ],
    });
    const headless = service({ id: 'db.shop', name: 'db', namespace: 'shop', source: 'kubernetes' });
    const table = buildDnsTable([dual, headless, orders], [], []);
    expect(table.lookup('dual.example')).toMatchObject({ a: ['240.240.0.18'], aaaa: ['fd00::18'] });
    expect(table.lookup('db.shop.svc.cluster.local')).toBeUndefined();
    expect(table.problems).toEqual([expect.stringContaining('db.shop: no virtual IP')]);
    expect(table.lookup('20.14.96.10.in-addr.arpa')?.ptr).toEqual(['orders.shop.svc.cluster.local']);
    expect(table.lookup(reverseName('fd00::18'))?.ptr).toEqual(['dual.example']);
    expect(reverseName('fd00::18')).toBe(`8.1.0.0.${'0.'.repeat(24)}0.0.d.f.ip6.arpa`);
  });

  it('uses the cluster domain it is given, and a local Kubernetes service beats one imported from another cluster', () => {
    const remote = service({
      id: 'orders.shop.west',
      name: 'orders',
      namespace: 'shop',
      source: 'cluster:west',
      vips: [{ address: '240.240.1.1', allocation: 'mesh' }],
    });
    const table = buildDnsTable([remote, orders], [], [], { clusterDomain: 'corp.example' });
    expect(table.lookup('orders.shop.svc.corp.example')?.a).toEqual(['10.96.14.20']);
    expect(table.lookup('orders.shop.svc.cluster.local')).toBeUndefined();
    expect(table.problems).toEqual([expect.stringContaining('claimed by service orders.shop and service orders.shop.west')]);
  });
});
