// The Consul sink end to end: the bridge (a Kubernetes source, a Consul source reading the same
// Consul, a Consul sink) between a real apiserver and a real Consul v1.16.1 (-dev). Services carry
// hand-made EndpointSlices: what is asserted is what Consul's catalog and health endpoints answer
// for them (addresses, ports, readiness), which pods that run would only make slower.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CoreV1Api, DiscoveryV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, type BridgeConfig } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startConsul, type ConsulAgent } from '../devenv/consul.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startBridge, type Bridge } from '../registry-bridge/bridge.js';
import { nodeIndexOf, nodeNameOf } from '../registry-bridge/sinks/consul/registrations.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-sinks-consul-test', process.env.FLB_TEST_LOG === '1' ? 'debug' : 'silent');
const NS = 'shop';
const CONTROL = 'flomesh';
/** The sink's first node and its others' prefix. */
const NODE = 'flb-local';
/** The node a Service's instances are on, of the sink's `nodes`. */
const nodeOf = (catalogId: string, nodes = 16) => nodeNameOf(NODE, nodeIndexOf(catalogId, nodes));
/** Where the Kubernetes sink shows Consul's services. */
const SINK_NS = 'registry';

interface CatalogEntry {
  Node: string;
  Address: string;
  ServiceID: string;
  ServiceAddress: string;
  ServicePort: number;
  ServiceTags: string[];
  ServiceMeta: Record<string, string>;
  ModifyIndex: number;
}
interface HealthEntry {
  Service: { ID: string; Address: string; Port: number };
  Checks: { CheckID: string; Status: string; ModifyIndex: number }[];
}

describe('the Consul and Kubernetes sinks against a real Consul and apiserver', () => {
  let plane: ControlPlane;
  let consul: ConsulAgent;
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  let bridge: Bridge | undefined;

  const config = (consulSourceAddress = consul.url, nodes?: number): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [
        { kind: 'kubernetes' },
        // Reads the Consul the sink writes: what the sink wrote must never come back as a Consul service.
        { kind: 'consul', address: consulSourceAddress, waitSeconds: 2, staleAfterSeconds: 4, sweepIntervalSeconds: 1, removeAfterSeconds: 0 },
      ],
      sinks: [
        { kind: 'consul', address: consul.url, resyncSeconds: 5, ...(nodes ? { nodes } : {}) },
        { kind: 'kubernetes', namespace: SINK_NS },
      ],
      leaderElection: { namespace: CONTROL, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1 },
    });
  const start = async (identity: string, consulSourceAddress?: string, nodes?: number) => {
    bridge = await startBridge({ config: config(consulSourceAddress, nodes), kubeConfig: plane.kubeConfig, log, identity });
    return bridge;
  };
  const catalog = async (name: string) => ((await consul.api('GET', `/v1/catalog/service/${name}`)).body as CatalogEntry[]) ?? [];
  const health = async (name: string, passing = false) =>
    ((await consul.api('GET', `/v1/health/service/${name}${passing ? '?passing=true' : ''}`)).body as HealthEntry[]) ?? [];
  // Consul's rule: an instance without an address of its own is at its node's.
  const addresses = async (name: string) => (await catalog(name)).map((e) => `${e.ServiceAddress || e.Address}:${e.ServicePort}`).sort();
  const passing = async (name: string) => (await health(name, true)).map((e) => e.Service.Address).sort();

  const service = (name: string) => ({
    metadata: { name },
    spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
  });
  const slice = (name: string, endpoints: [string, boolean][]) => ({
    metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: endpoints.map(([address, ready]) => ({ addresses: [address], conditions: { ready } })),
  });

  beforeAll(async () => {
    [plane, consul] = await Promise.all([startControlPlane(), startConsul()]);
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    discovery = plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    for (const name of [NS, CONTROL, SINK_NS]) await core.createNamespace({ body: { metadata: { name } } });
    await core.createNamespacedConfigMap({
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: flb\n` } },
    });
  });
  afterAll(async () => {
    await bridge?.stop();
    await consul?.stop();
    await plane?.stop();
  });

  it('registers a Kubernetes Service in the catalog at its pod addresses, with a check that is its readiness', async () => {
    await core.createNamespacedService({ namespace: NS, body: service('web') });
    await discovery.createNamespacedEndpointSlice({
      namespace: NS,
      body: slice('web', [
        ['10.244.1.1', true],
        ['10.244.1.2', true],
        ['10.244.1.3', false],
      ]),
    });
    await start('bridge-a');
    await eventually('web in Consul with three instances', async () => ((await catalog('web')).length === 3 ? true : undefined));
    const entries = await catalog('web');
    expect(entries.map((e) => `${e.Node} ${e.ServiceAddress}:${e.ServicePort}`).sort()).toEqual([
      `${nodeOf('web.shop')} 10.244.1.1:8080`,
      `${nodeOf('web.shop')} 10.244.1.2:8080`,
      `${nodeOf('web.shop')} 10.244.1.3:8080`,
    ]);
    expect(entries[0]).toMatchObject({
      ServiceTags: ['k8s'],
      ServiceMeta: { 'flomesh-origin': 'kubernetes', 'external-source': 'kubernetes', 'external-k8s-ns': NS, 'flomesh-service': 'web.shop' },
    });
    // The not-ready pod is listed, critical: Consul clients asking for passing instances do not get it.
    expect(await passing('web')).toEqual(['10.244.1.1', '10.244.1.2']);
    const checks = (await health('web')).map((e) => `${e.Service.Address} ${e.Checks.find((c) => c.CheckID.endsWith(':readiness'))?.Status}`).sort();
    expect(checks).toEqual(['10.244.1.1 passing', '10.244.1.2 passing', '10.244.1.3 critical']);
  });

  it('follows a scale-up, a scale-down and readiness, writing only the check when only readiness moved', async () => {
    const before = new Map((await catalog('web')).map((e) => [e.ServiceID, e.ModifyIndex]));
    await discovery.replaceNamespacedEndpointSlice({
      name: 'web-1',
      namespace: NS,
      body: slice('web', [
        ['10.244.1.1', true],
        ['10.244.1.3', true],
        ['10.244.1.4', true],
        ['10.244.1.5', false],
      ]),
    });
    await eventually('web scaled', async () =>
      (await addresses('web')).join() === '10.244.1.1:8080,10.244.1.3:8080,10.244.1.4:8080,10.244.1.5:8080' ? true : undefined,
    );
    await eventually('readiness followed', async () => ((await passing('web')).join() === '10.244.1.1,10.244.1.3,10.244.1.4' ? true : undefined));
    const after = new Map((await catalog('web')).map((e) => [e.ServiceID, e.ModifyIndex]));
    // 10.244.1.1 did not change and 10.244.1.3 only became ready: neither service entry was written again.
    for (const id of ['web.shop-10-244-1-1-8080', 'web.shop-10-244-1-3-8080']) expect(after.get(id)).toBe(before.get(id));
  });

  it('never imports back what it wrote: the Consul source reading the same Consul sees no web', async () => {
    await eventually('the consul source synced', async () =>
      bridge!.status().sources.find((s) => s.kind === 'consul')!.state === 'synced' ? true : undefined,
    );
    // A sweep and a few blocking rounds go by.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect([...bridge!.catalog.serviceIds()].filter((id) => id.endsWith('.consul'))).toEqual([]);
    expect(bridge!.status().sources.find((s) => s.kind === 'consul')).toMatchObject({ services: 0, errors: 0 });
  });

  it('writes nothing when restarted, and deletes nothing before every source listed once', async () => {
    await bridge!.settled();
    const indexes = async () =>
      (await health('web'))
        .flatMap((e) => e.Checks.map((c) => `${e.Service.ID} ${c.CheckID} ${c.ModifyIndex}`))
        .concat((await catalog('web')).map((e) => `${e.ServiceID} ${e.ModifyIndex}`))
        .sort();
    const before = await indexes();
    await bridge!.stop();
    // While it is down, a Service goes away; the new bridge's Consul source never lists (nothing answers there).
    await core.deleteNamespacedService({ name: 'web', namespace: NS });
    await start('bridge-b', 'http://127.0.0.1:1');
    await eventually('leading, with the kubernetes source synced', async () => {
      const s = bridge!.status();
      return s.leader && s.sinks.length > 0 && s.sources.find((x) => x.kind === 'kubernetes')!.state === 'synced' ? true : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(bridge!.status().sources.find((x) => x.kind === 'consul')!.state).toBe('starting');
    expect(await indexes()).toEqual(before);
    expect(bridge!.status().sinks.find((x) => x.kind === 'consul')).toMatchObject({ writes: 0, failures: 0 });
  });

  it('deregisters a deleted Service once every source has listed, and only what it wrote', async () => {
    // Someone's own instance on the bridge's node, and another registration of the name elsewhere: never touched.
    await consul.api('PUT', '/v1/catalog/register', {
      Node: nodeOf('web.shop'),
      Address: '127.0.0.1',
      Service: { ID: 'web-by-hand', Service: 'web', Address: '10.9.0.1', Port: 9000 },
    });
    await consul.api('PUT', '/v1/catalog/register', { Node: 'vm-1', Address: '10.9.0.2', Service: { ID: 'web-vm', Service: 'web', Port: 9000 } });
    await bridge!.stop();
    await start('bridge-c');
    await eventually(
      'only the instances the bridge did not write are left',
      async () => {
        return (await addresses('web')).join() === '10.9.0.1:9000,10.9.0.2:9000' ? true : undefined;
      },
      15_000,
    );
    await bridge!.settled();
    expect(bridge!.status().sinks.find((x) => x.kind === 'consul')).toMatchObject({ writes: 4, failures: 0 });
  });

  const sliceEndpoints = async (name: string) =>
    (await discovery.listNamespacedEndpointSlice({ namespace: SINK_NS, labelSelector: `kubernetes.io/service-name=${name}` })).items
      .flatMap((slice) => slice.endpoints.map((e) => `${e.addresses[0]}:${slice.ports?.[0]?.port} ${e.conditions?.ready ? 'ready' : 'not ready'}`))
      .sort();
  const registerPay = async () => {
    await consul.api('PUT', '/v1/catalog/register', {
      Node: 'vm-2',
      Address: '10.9.1.1',
      Service: { ID: 'pay-1', Service: 'pay', Port: 7000 },
      Checks: [{ CheckID: 'service:pay-1', Name: 'pay', Status: 'passing', ServiceID: 'pay-1' }],
    });
    await consul.api('PUT', '/v1/catalog/register', {
      Node: 'vm-3',
      Address: '10.9.1.2',
      Service: { ID: 'pay-2', Service: 'pay', Port: 7000 },
      Checks: [{ CheckID: 'service:pay-2', Name: 'pay', Status: 'critical', ServiceID: 'pay-2' }],
    });
  };

  it("shows a Consul service as a headless Service with EndpointSlices, labelled as the bridge's", async () => {
    await registerPay();
    const svc = await eventually('Service registry/pay', () => core.readNamespacedService({ name: 'pay', namespace: SINK_NS }));
    expect(svc.spec).toMatchObject({ clusterIP: 'None', ports: [{ port: 7000, targetPort: 7000, protocol: 'TCP' }] });
    expect(svc.spec?.selector).toBeUndefined();
    expect(svc.metadata?.labels).toMatchObject({ 'flomesh.io/origin': 'consul', 'app.kubernetes.io/managed-by': 'flb-bridge' });
    await eventually('its endpoints', async () => ((await sliceEndpoints('pay')).length === 2 ? true : undefined));
    expect(await sliceEndpoints('pay')).toEqual(['10.9.1.1:7000 ready', '10.9.1.2:7000 not ready']);
    const slices = await discovery.listNamespacedEndpointSlice({ namespace: SINK_NS, labelSelector: 'kubernetes.io/service-name=pay' });
    expect(slices.items[0]!.metadata?.labels).toMatchObject({
      'endpointslice.kubernetes.io/managed-by': 'flb-bridge.flomesh.io',
      'flomesh.io/origin': 'consul',
    });
  });

  it('creates nothing twice around a loop: Consul -> Kubernetes -> Consul and Kubernetes -> Consul -> Kubernetes', async () => {
    // registry/pay is not imported by the Kubernetes source, so the Consul sink does not register it back.
    await core.createNamespacedService({ namespace: NS, body: service('api') });
    await discovery.createNamespacedEndpointSlice({ namespace: NS, body: slice('api', [['10.244.2.1', true]]) });
    await eventually('api in Consul', async () => ((await addresses('api')).length === 1 ? true : undefined));
    await bridge!.settled();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect((await catalog('pay')).map((e) => e.ServiceID).sort()).toEqual(['pay-1', 'pay-2']);
    expect(bridge!.catalog.service('pay.registry')).toBeUndefined();
    // shop/api went to Consul; the Consul source skips it, so no registry/api Service appears.
    expect(bridge!.catalog.service('api.dc1.consul')).toBeUndefined();
    await expect(core.readNamespacedService({ name: 'api', namespace: SINK_NS })).rejects.toMatchObject({ code: 404 });
  });

  it("leaves a user's Service with the same name alone and reports it with an Event on it", async () => {
    await core.createNamespacedService({ namespace: SINK_NS, body: { metadata: { name: 'cart' }, spec: { ports: [{ port: 1234 }] } } });
    await consul.api('PUT', '/v1/catalog/register', { Node: 'vm-4', Address: '10.9.2.1', Service: { ID: 'cart-1', Service: 'cart', Port: 8000 } });
    const event = await eventually('a Warning Event on registry/cart', async () => {
      const events = await core.listNamespacedEvent({ namespace: SINK_NS });
      return events.items.find((e: CoreV1Event) => e.involvedObject.name === 'cart' && e.reason === 'ServiceNameTaken');
    });
    expect(event).toMatchObject({ type: 'Warning', message: expect.stringContaining('is not the bridge') });
    expect(bridge!.status().sinks.find((x) => x.kind === 'kubernetes')!.lastError).toMatch(/registry\/cart/);
    const cart = await core.readNamespacedService({ name: 'cart', namespace: SINK_NS });
    expect(cart.spec?.ports?.map((p) => p.port)).toEqual([1234]);
    expect(cart.metadata?.labels ?? {}).toEqual({});
    expect(await sliceEndpoints('cart')).toEqual([]);
  });

  it('deletes the Service and its slices when the Consul service is deregistered', async () => {
    await consul.api('PUT', '/v1/catalog/deregister', { Node: 'vm-2', ServiceID: 'pay-1' });
    await consul.api('PUT', '/v1/catalog/deregister', { Node: 'vm-3', ServiceID: 'pay-2' });
    await eventually('registry/pay gone', async () => {
      try {
        await core.readNamespacedService({ name: 'pay', namespace: SINK_NS });
        return undefined;
      } catch (error) {
        return (error as { code?: number }).code === 404 ? true : undefined;
      }
    });
    expect(await sliceEndpoints('pay')).toEqual([]);
    // The user's Service stays.
    expect((await core.readNamespacedService({ name: 'cart', namespace: SINK_NS })).spec?.ports?.[0]?.port).toBe(1234);
  });

  it('a standby that takes over from the leader neither duplicates nor drops a registration, and writes nothing', async () => {
    await bridge!.settled();
    const standby = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity: 'bridge-standby' });
    try {
      await eventually('the standby synced', async () => (standby.status().sources.every((x) => x.state === 'synced') ? true : undefined));
      expect(standby.status()).toMatchObject({ leader: false, sinks: [] });
      const consulState = async () => (await catalog('api')).map((e) => `${e.ServiceID} ${e.ServiceAddress}:${e.ServicePort} ${e.ModifyIndex}`).sort();
      const kubeState = async () =>
        (await core.listNamespacedService({ namespace: SINK_NS })).items.map((x) => `${x.metadata?.name} ${x.metadata?.resourceVersion}`).sort();
      const before = { consul: await consulState(), kube: await kubeState(), slices: await sliceEndpoints('web') };
      expect(before.consul).toHaveLength(1);
      await bridge!.stop();
      bridge = standby;
      await eventually(
        'the standby leads with its sinks',
        async () => (standby.status().leader && standby.status().sinks.length === 2 ? true : undefined),
        20_000,
      );
      await standby.settled();
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await standby.settled();
      expect(await consulState()).toEqual(before.consul);
      expect(await kubeState()).toEqual(before.kube);
      expect(await sliceEndpoints('web')).toEqual(before.slices);
      expect(standby.status().sinks.map((x) => `${x.kind} ${x.writes}`)).toEqual(['consul 0', 'kubernetes 0']);
      // The only failures are the user's cart Service, still in the way, retried with backoff.
      expect(standby.status().sinks[0]!.failures).toBe(0);
      expect(standby.status().sinks[1]!.lastError).toMatch(/registry\/cart exists and is not the bridge's/);
    } finally {
      if (bridge !== standby) await standby.stop();
    }
  });

  it('a restart while the Consul source cannot list deletes none of the Services the Kubernetes sink wrote', async () => {
    await bridge!.settled();
    const web = await core.readNamespacedService({ name: 'web', namespace: SINK_NS });
    expect(web.metadata?.labels?.['flomesh.io/origin']).toBe('consul');
    const slicesBefore = await sliceEndpoints('web');
    expect(slicesBefore.length).toBeGreaterThan(0);
    await bridge!.stop();
    await start('bridge-e', 'http://127.0.0.1:1');
    await eventually('leading, with the kubernetes source synced', async () => {
      const s = bridge!.status();
      return s.leader && s.sinks.length === 2 && s.sources.find((x) => x.kind === 'kubernetes')!.state === 'synced' ? true : undefined;
    });
    await new Promise((resolve) => setTimeout(resolve, 2000));
    expect(bridge!.status().sources.find((x) => x.kind === 'consul')!.state).toBe('starting');
    expect((await core.readNamespacedService({ name: 'web', namespace: SINK_NS })).metadata?.resourceVersion).toBe(web.metadata?.resourceVersion);
    expect(await sliceEndpoints('web')).toEqual(slicesBefore);
    expect(bridge!.status().sinks.find((x) => x.kind === 'kubernetes')!.writes).toBe(0);
  });

  it('registers a Service of 40 endpoints in transactions of 32 instances, each written as a registration alone writes it', async () => {
    const endpoints = Array.from({ length: 40 }, (_, i): [string, boolean] => [`10.244.2.${i + 1}`, i % 10 !== 0]);
    await core.createNamespacedService({ namespace: NS, body: service('wide') });
    await discovery.createNamespacedEndpointSlice({ namespace: NS, body: slice('wide', endpoints) });
    await eventually('wide in Consul with 40 instances', async () => ((await catalog('wide')).length === 40 ? true : undefined));
    await bridge!.settled();
    const entries = await catalog('wide');
    // A transaction is one Raft entry: its instances share a ModifyIndex (40 registrations alone carry 40).
    expect(new Set(entries.map((e) => e.ModifyIndex)).size).toBeLessThanOrEqual(2);
    for (const entry of entries)
      expect(entry).toMatchObject({
        Node: nodeOf('wide.shop'),
        ServicePort: 8080,
        ServiceTags: ['k8s'],
        ServiceMeta: { 'flomesh-origin': 'kubernetes', 'flomesh-writer': `${NODE}/consul`, 'flomesh-service': 'wide.shop', 'external-k8s-ns': NS },
        ServiceWeights: { Passing: 1, Warning: 1 },
      });
    expect(await passing('wide')).toEqual(
      endpoints
        .filter(([, ready]) => ready)
        .map(([address]) => address)
        .sort(),
    );
    const checks = (await health('wide')).map((e) => e.Checks.find((c) => c.CheckID === `${e.Service.ID}:readiness`) as unknown as Record<string, string>);
    expect(new Set(checks.map((c) => `${c.ServiceName} ${c.Name}`))).toEqual(new Set(['wide Kubernetes readiness']));
    expect(bridge!.status().sinks.find((x) => x.kind === 'consul')).toMatchObject({ failures: 0, pending: 0 });
  });

  it('moves every instance when its nodes go from 16 to 2, never missing from the catalog, and deregisters the nodes it emptied', async () => {
    const ours = async () =>
      ((await consul.api('GET', `/v1/catalog/nodes?node-meta=${encodeURIComponent(`flomesh-writer:${NODE}/consul`)}`)).body as { Node: string }[]).map(
        (n) => n.Node,
      );
    const oursOn = async (node: string) =>
      (
        (await consul.api('GET', `/v1/catalog/node-services/${node}`)).body as { Services: CatalogEntry[] & { Meta: Record<string, string> }[] } | null
      )?.Services.filter((s) => (s as unknown as { Meta: Record<string, string> }).Meta['flomesh-writer'] === `${NODE}/consul`) ?? [];
    const before = await ours();
    expect(before).toEqual(expect.arrayContaining([nodeOf('wide.shop')]));
    await bridge!.stop();
    // Sampled through the move: wide's 40 instances always listed (each written on its new node before it left the old).
    let sampling = true;
    const counts: number[] = [];
    const sampler = (async () => {
      while (sampling) {
        counts.push(new Set((await catalog('wide')).map((e) => e.ServiceID)).size);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await start('bridge-nodes', undefined, 2);
    await eventually(
      'wide and web on their nodes of 2',
      async () => {
        const wide = await catalog('wide');
        const web = (await catalog('web')).filter((e) => e.ServiceMeta['flomesh-writer'] === `${NODE}/consul`);
        return wide.length === 40 && wide.every((e) => e.Node === nodeOf('wide.shop', 2)) && web.every((e) => e.Node === nodeOf('web.shop', 2))
          ? true
          : undefined;
      },
      20_000,
    );
    await bridge!.settled();
    await eventually('the nodes it emptied deregistered', async () => {
      const left = await ours();
      for (const node of left) if (![NODE, `${NODE}-1`].includes(node) && (await oursOn(node)).length > 0) return undefined;
      return left.length < before.length ? true : undefined;
    });
    sampling = false;
    await sampler;
    expect(counts.length).toBeGreaterThan(5);
    expect(Math.min(...counts)).toBe(40);
    // Someone's own instance stays where it was registered.
    expect(await addresses('web')).toEqual(expect.arrayContaining(['10.9.0.1:9000', '10.9.0.2:9000']));
    expect(bridge!.status().sinks.find((x) => x.kind === 'consul')).toMatchObject({ failures: 0, pending: 0 });
  });
});
