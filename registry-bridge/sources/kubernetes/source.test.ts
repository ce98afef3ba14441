import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { defaultMesh, KubernetesSourceSchema, type Service, type SidecarConfig } from '../../../common/contract/index.js';
import type { KubeEvent } from '../../../common/kube-events.js';
import { createLogger } from '../../../common/log.js';
import type { CatalogUpdates } from '../../core/types.js';
import { KubernetesSource } from './source.js';

// An apiserver holding selector-less Services with one EndpointSlice each: lists in pages, watches
// held open with no event. The source against the real apiserver is test-e2e/bridge.test.ts's.
class ListingApiserver {
  private server?: Server;
  private readonly watches: ServerResponse[] = [];
  url = '';

  constructor(private readonly services: number) {}

  private collection(path: string): object[] {
    const names = Array.from({ length: this.services }, (_, i) => `svc-${i}`);
    if (path === '/api/v1/services')
      return names.map((name) => ({
        metadata: { name, namespace: 'shop', uid: `uid-${name}`, resourceVersion: '1' },
        spec: { clusterIP: 'None', ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] },
      }));
    if (path === '/apis/discovery.k8s.io/v1/endpointslices')
      return names.map((name, i) => ({
        metadata: { name: `${name}-1`, namespace: 'shop', resourceVersion: '1', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: [`10.1.${i >> 8}.${i & 255}`], conditions: { ready: true } }],
      }));
    return [];
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (url.searchParams.get('watch') === '1') {
        this.watches.push(res);
        return;
      }
      const all = this.collection(url.pathname);
      const start = Number(url.searchParams.get('continue') || 0);
      const limit = Number(url.searchParams.get('limit'));
      const next = start + limit < all.length ? String(start + limit) : undefined;
      res.end(JSON.stringify({ metadata: { resourceVersion: '1', ...(next ? { continue: next } : {}) }, items: all.slice(start, start + limit) }));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const watch of this.watches) watch.destroy();
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

const log = createLogger('kubernetes-source-test', 'silent');

describe('the Kubernetes source', () => {
  let api: ListingApiserver;
  let source: KubernetesSource | undefined;
  afterEach(async () => {
    await source?.stop();
    await api.stop();
  });

  it('reports its first list a part at a time, so sinks write while the rest is translated, and is synced only once all of it is in', async () => {
    api = await new ListingApiserver(1000).start();
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
      currentContext: 'c',
    });
    const started = new KubernetesSource({
      config: KubernetesSourceSchema.parse({ kind: 'kubernetes' }),
      kubeConfig,
      mesh: defaultMesh(),
      injectedPodSelector: 'flomesh.io/sidecar-injected=true',
      log,
    });
    source = started;
    const reported: string[] = [];
    // What a sink's I/O would see: the first turn of the event loop after the first service.
    let seenByTheNextTurn: { services: number; state: string } | undefined;
    let synced!: () => void;
    const allSynced = new Promise<void>((resolve) => (synced = resolve));
    const updates: CatalogUpdates = {
      upsertService(_source: string, service: Service) {
        if (reported.length === 0) setImmediate(() => (seenByTheNextTurn = { services: reported.length, state: started.status().state }));
        reported.push(service.id);
      },
      removeService() {},
      upsertSidecar() {},
      removeSidecar() {},
      synced() {
        reported.push('synced');
        synced();
      },
    };
    started.start(updates);
    await allSynced;

    expect(reported).toHaveLength(1001);
    expect(reported.at(-1)).toBe('synced');
    expect(new Set(reported.slice(0, -1)).size).toBe(1000);
    expect(seenByTheNextTurn!.services).toBeGreaterThan(0);
    expect(seenByTheNextTurn!.services).toBeLessThan(1000);
    expect(seenByTheNextTurn!.state).toBe('starting');
    expect(started.status()).toMatchObject({ state: 'synced', services: 1000, endpoints: 1000 });
  });
});

/** An apiserver whose collections are set by the test and whose watches carry the events it sends. */
class WatchingApiserver {
  private server?: Server;
  private readonly watches = new Map<string, ServerResponse[]>();
  private version = 1;
  url = '';

  constructor(private readonly collections: Record<string, object[]>) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const url = new URL(req.url!, 'http://x');
      res.writeHead(200, { 'content-type': 'application/json' });
      if (url.searchParams.get('watch') === '1') {
        const list = this.watches.get(url.pathname) ?? [];
        this.watches.set(url.pathname, [...list, res]);
        res.write('');
        return;
      }
      res.end(JSON.stringify({ metadata: { resourceVersion: '1' }, items: this.collections[url.pathname] ?? [] }));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** A watch event on the collection; resolves once some watch is there to carry it. */
  async send(path: string, type: 'ADDED' | 'MODIFIED' | 'DELETED', object: { metadata: Record<string, unknown> }): Promise<void> {
    for (let i = 0; i < 200 && !this.watches.get(path)?.length; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    const resourceVersion = String(++this.version);
    for (const res of this.watches.get(path) ?? [])
      res.write(`${JSON.stringify({ type, object: { ...object, metadata: { ...object.metadata, resourceVersion } } })}\n`);
  }

  async stop(): Promise<void> {
    for (const list of this.watches.values()) for (const res of list) res.destroy();
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

describe("the Kubernetes source and a pod's BGP ConfigMap", () => {
  let api: WatchingApiserver;
  let source: KubernetesSource | undefined;
  afterEach(async () => {
    await source?.stop();
    await api.stop();
  });

  const bgpYaml = (localAs: number) =>
    `localAs: ${localAs}\nrouterId: 192.0.2.10\npeers: [{ address: 192.0.2.1, remoteAs: 65000 }]\nvips: [{ prefix: 10.0.0.100/32, healthCheck: { protocol: readiness } }]\n`;
  const configMap = (data: Record<string, string>, name = 'edge-bgp') => ({ metadata: { name, namespace: 'shop', uid: `uid-${name}` }, data });
  const pod = (annotations: Record<string, string>) => ({
    metadata: { name: 'vip-0', namespace: 'shop', uid: 'uid-vip-0', labels: { 'flomesh.io/sidecar-injected': 'true' }, annotations },
    spec: { containers: [{ name: 'web' }] },
  });
  const named = { 'flomesh.io/bgp-config': 'edge-bgp', 'flomesh.io/bgp-vips': '10.0.0.100' };

  async function run(collections: Record<string, object[]>) {
    api = await new WatchingApiserver(collections).start();
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: 'fake', server: api.url, skipTLSVerify: true }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
      currentContext: 'c',
    });
    const published: (SidecarConfig['bgp'] | 'none')[] = [];
    const events: KubeEvent[] = [];
    let waiting: (() => void) | undefined;
    source = new KubernetesSource({
      config: KubernetesSourceSchema.parse({ kind: 'kubernetes' }),
      kubeConfig,
      mesh: defaultMesh(),
      injectedPodSelector: 'flomesh.io/sidecar-injected=true',
      log,
      raiseEvent: (event) => events.push(event),
    });
    source.start({
      upsertService() {},
      removeService() {},
      upsertSidecar(_source: string, _id: string, config: SidecarConfig) {
        published.push(config.bgp ?? 'none');
        waiting?.();
      },
      removeSidecar() {},
      synced() {},
    });
    /** The bgp section of the next sidecar.json published. */
    const next = async () => {
      const count = published.length;
      while (published.length === count) await new Promise<void>((resolve) => (waiting = resolve));
      return published.at(-1);
    };
    return { published, events, next };
  }

  it('publishes the section, again on every edit, and keeps the last good one over a bad edit with an Event naming the field', async () => {
    const { events, next } = await run({ '/api/v1/pods': [pod(named)], '/api/v1/configmaps': [configMap({ 'bgp.yaml': bgpYaml(65001) })] });
    expect(await next()).toMatchObject({ localAs: 65001, vips: [{ prefix: '10.0.0.100/32' }] });

    void api.send('/api/v1/configmaps', 'MODIFIED', configMap({ 'bgp.yaml': bgpYaml(65002) }));
    expect(await next()).toMatchObject({ localAs: 65002 });

    void api.send('/api/v1/configmaps', 'MODIFIED', configMap({ 'bgp.yaml': bgpYaml(0) }));
    expect(await next()).toMatchObject({ localAs: 65002 });
    expect(events.at(-1)).toMatchObject({
      type: 'Warning',
      reason: 'SidecarConfigProblem',
      subject: { kind: 'Pod', namespace: 'shop', name: 'vip-0' },
      message:
        'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml: localAs: must be an AS number, 1-4294967295; the last good bgp section stays in sidecar.json',
    });

    // The ConfigMap's BGP key removed: no longer one of ours, and the last good section stays.
    void api.send('/api/v1/configmaps', 'MODIFIED', configMap({ other: 'x' }));
    expect(await next()).toMatchObject({ localAs: 65002 });
    expect(events.at(-1)!.message).toMatch(/does not exist or has neither a bgp.yaml nor a bgp.json key; the last good bgp section stays/);

    // The annotation removed from the pod: no section.
    void api.send('/api/v1/pods', 'MODIFIED', pod({}));
    expect(await next()).toBe('none');
  });

  it('publishes without a section until the ConfigMap exists, then with it; a ConfigMap the pod does not name changes nothing', async () => {
    const { published, events, next } = await run({ '/api/v1/pods': [pod(named)] });
    expect(await next()).toBe('none');
    expect(events.at(-1)!.message).toBe(
      'ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) does not exist or has neither a bgp.yaml nor a bgp.json key; sidecar.json is published without a bgp section',
    );
    void api.send('/api/v1/configmaps', 'ADDED', configMap({ 'bgp.yaml': bgpYaml(65001) }, 'other-bgp'));
    void api.send(
      '/api/v1/configmaps',
      'ADDED',
      configMap({ 'bgp.json': JSON.stringify({ localAs: 65003, routerId: '192.0.2.10', peers: [{ address: '192.0.2.1', remoteAs: 65000 }], vips: [] }) }),
    );
    expect(await next()).toMatchObject({ localAs: 65003 });
    expect(published).toHaveLength(2);
  });
});
