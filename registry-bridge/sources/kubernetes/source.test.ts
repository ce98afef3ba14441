import { afterEach, describe, expect, it } from '@jest/globals';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { defaultMesh, KubernetesSourceSchema, type Service } from '../../../common/contract/index.js';
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
