import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, DiscoveryV1Api, type CoreV1Event } from '@kubernetes/client-node';
import { API_VERSION, BridgeConfigSchema, SIDECAR_INJECTED_LABEL, type BridgeConfig } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { startBridge, type Bridge } from '../registry-bridge/bridge.js';
import { Repo } from '../repo/repo.js';
import { startRepoServer, type RepoServer } from '../repo/server.js';
import { DiskStore } from '../repo/store/disk.js';
import { eventually } from './harness/eventually.js';

const log = createLogger('bridge-test', 'silent');
const NS = 'shop';
const CONTROL = 'flomesh';

describe('the registry bridge against a real apiserver and repo', () => {
  let plane: ControlPlane;
  let core: CoreV1Api;
  let discovery: DiscoveryV1Api;
  let dir: string;
  let repo: Repo;
  let server: RepoServer;
  const bridges: Bridge[] = [];

  const config = (): BridgeConfig =>
    BridgeConfigSchema.parse({
      apiVersion: API_VERSION,
      kind: 'BridgeConfig',
      mesh: { configMap: { namespace: CONTROL, name: 'flb-mesh' } },
      sources: [{ kind: 'kubernetes' }],
      sinks: [{ kind: 'repo', url: `http://127.0.0.1:${server.port}` }],
      leaderElection: { namespace: CONTROL, leaseDurationSeconds: 4, renewDeadlineSeconds: 3, retryPeriodSeconds: 1 },
      sidecars: { resyncSeconds: 10 },
    });
  const start = async (identity: string) => {
    const bridge = await startBridge({ config: config(), kubeConfig: plane.kubeConfig, log, identity });
    bridges.push(bridge);
    return bridge;
  };
  const stop = async (bridge: Bridge) => {
    await bridge.stop();
    bridges.splice(bridges.indexOf(bridge), 1);
  };
  const readJson = async <T>(codebase: string, path: string): Promise<T | undefined> => {
    const text = await repo.readFile(codebase, path);
    return text === undefined ? undefined : (JSON.parse(text.toString()) as T);
  };
  type Published = { endpoints: { address: string; port: number; healthy: boolean }[]; policy: { loadBalancer: { algorithm: string } } };
  const serviceFile = (id: string) => readJson<Published>('/flb/mesh', `/services/${id}.json`);
  const annotate = async (name: string, annotations: Record<string, string>) => {
    const svc = await core.readNamespacedService({ name, namespace: NS });
    svc.metadata!.annotations = annotations;
    await core.replaceNamespacedService({ name, namespace: NS, body: svc });
  };

  beforeAll(async () => {
    plane = await startControlPlane();
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    discovery = plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    for (const name of [NS, CONTROL]) await core.createNamespace({ body: { metadata: { name } } });
    dir = mkdtempSync(join(tmpdir(), 'flb-bridge-test-'));
    repo = await new Repo(await new DiskStore(dir).init()).load();
    server = await startRepoServer({ repo, host: '127.0.0.1', port: 0, log });
  });
  afterAll(async () => {
    for (const bridge of [...bridges]) await bridge.stop();
    await server?.close();
    await plane?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const legacySlice = (addresses: string[]) => ({
    metadata: { name: 'legacy-1', labels: { 'kubernetes.io/service-name': 'legacy' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: addresses.map((address) => ({ addresses: [address], conditions: { ready: true }, zone: 'zone-a' })),
  });

  it('publishes Services with their endpoints, one file per service, and follows a slice change', async () => {
    const bridge = await start('bridge-a');
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'legacy' }, spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }] } },
    });
    await discovery.createNamespacedEndpointSlice({ namespace: NS, body: legacySlice(['10.1.0.1', '10.1.0.2']) });
    const published = await eventually('legacy.shop published with two endpoints', async () => {
      const svc = await serviceFile('legacy.shop');
      return svc?.endpoints.length === 2 ? svc : undefined;
    });
    expect(published.endpoints.map((e) => e.address)).toEqual(['10.1.0.1', '10.1.0.2']);
    expect(await readJson('/flb/mesh', '/mesh.json')).toMatchObject({ kind: 'Mesh', name: 'flb' });

    const meshVersion = repo.get('/flb/mesh')!.version;
    await discovery.replaceNamespacedEndpointSlice({ name: 'legacy-1', namespace: NS, body: legacySlice(['10.1.0.1', '10.1.0.2', '10.1.0.3']) });
    await eventually('the third endpoint', async () => ((await serviceFile('legacy.shop'))?.endpoints.length === 3 ? true : undefined));
    expect(Number(repo.get('/flb/mesh')!.version)).toBeGreaterThan(Number(meshVersion));
    expect(bridge.status()).toMatchObject({ leader: true, sources: [{ name: 'kubernetes', state: 'synced' }] });
  });

  it('gives a bad policy annotation an Event and the default policy, never dropping the service', async () => {
    await annotate('legacy', { 'flomesh.io/load-balancer': 'fastest' });
    const event = await eventually('an Event on Service legacy', async () => {
      const events = await core.listNamespacedEvent({ namespace: NS });
      return events.items.find(
        (e: CoreV1Event) => e.involvedObject.kind === 'Service' && e.involvedObject.name === 'legacy' && e.reason === 'InvalidServiceForMesh',
      );
    });
    expect(event.message).toMatch(/loadBalancer.algorithm/);
    expect(event.message).toMatch(/default policy/);
    expect((await serviceFile('legacy.shop'))?.policy.loadBalancer.algorithm).toBe('round-robin');

    await annotate('legacy', { 'flomesh.io/load-balancer': 'least-request' });
    await eventually('the fixed policy published', async () =>
      (await serviceFile('legacy.shop'))?.policy.loadBalancer.algorithm === 'least-request' ? true : undefined,
    );
  });

  it("creates an injected pod's codebase when the pod appears and deletes it with the pod", async () => {
    const pod = (name: string) => ({
      metadata: { name, labels: { app: 'web', [SIDECAR_INJECTED_LABEL]: 'true' } },
      spec: { containers: [{ name: 'app', image: 'example/web:1', ports: [{ containerPort: 8080 }] }] },
    });
    await core.createNamespacedPod({ namespace: NS, body: pod('web-1') });
    await core.createNamespacedPod({ namespace: NS, body: { metadata: { name: 'plain' }, spec: { containers: [{ name: 'app', image: 'example/web:1' }] } } });
    const sidecar = await eventually('the codebase of web-1', () =>
      readJson<{ identity: { name: string }; inbound: { ports: { port: number }[] } }>('/flb/sidecars/pod.shop.web-1', '/sidecar.json'),
    );
    expect(sidecar.identity.name).toBe('web-1');
    expect(sidecar.inbound.ports.map((p) => p.port)).toEqual([8080]);
    expect(repo.get('/flb/sidecars/pod.shop.plain')).toBeUndefined();
    // It inherits the catalog from the mesh codebase.
    expect(repo.get('/flb/sidecars/pod.shop.web-1')!.base).toBe('/flb/mesh');

    await core.deleteNamespacedPod({ name: 'web-1', namespace: NS, gracePeriodSeconds: 0 });
    await eventually('the codebase of web-1 deleted', async () => (repo.get('/flb/sidecars/pod.shop.web-1') === undefined ? true : undefined));
  });

  it('puts the bgp section of the ConfigMap a pod names in its sidecar.json, publishes an edit, and keeps the last good one over a bad edit with an Event', async () => {
    const bgpYaml = (localAs: number) =>
      `localAs: ${localAs}\nrouterId: 192.0.2.10\npeers: [{ address: 192.0.2.1, remoteAs: 65000 }]\nvips:\n  - prefix: 10.0.0.100/32\n    healthCheck: { protocol: readiness }\n`;
    const setBgp = (localAs: number) =>
      core.replaceNamespacedConfigMap({ name: 'edge-bgp', namespace: NS, body: { metadata: { name: 'edge-bgp' }, data: { 'bgp.yaml': bgpYaml(localAs) } } });
    type WithBgp = { inbound: { ports: { port: number }[] }; bgp?: { localAs: number } };
    const sidecar = () => readJson<WithBgp>('/flb/sidecars/pod.shop.vip-1', '/sidecar.json');
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'edge-bgp' }, data: { 'bgp.yaml': bgpYaml(65001) } } });
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: {
          name: 'vip-1',
          labels: { [SIDECAR_INJECTED_LABEL]: 'true' },
          annotations: { 'flomesh.io/bgp-config': 'edge-bgp', 'flomesh.io/bgp-vips': '10.0.0.100' },
        },
        spec: { containers: [{ name: 'app', image: 'example/web:1', ports: [{ containerPort: 8080 }] }] },
      },
    });
    const first = await eventually('the bgp section in the sidecar.json of vip-1', async () => (await sidecar())?.bgp);
    expect(first).toMatchObject({
      localAs: 65001,
      routerId: '192.0.2.10',
      peers: [{ address: '192.0.2.1', remoteAs: 65000, port: 179 }],
      vips: [{ prefix: '10.0.0.100/32', healthCheck: { protocol: 'readiness' } }],
    });
    expect((await sidecar())!.inbound.ports.map((p) => p.port)).toEqual([8080]);

    await setBgp(65002);
    await eventually('the edited section published', async () => ((await sidecar())?.bgp?.localAs === 65002 ? true : undefined));

    await setBgp(0);
    const event = await eventually('a Warning Event on pod vip-1', async () => {
      const events = await core.listNamespacedEvent({ namespace: NS });
      return events.items.find((e: CoreV1Event) => e.involvedObject.kind === 'Pod' && e.involvedObject.name === 'vip-1' && e.message?.includes('localAs'));
    });
    expect(event).toMatchObject({ type: 'Warning', reason: 'SidecarConfigProblem' });
    expect(event.message).toContain('ConfigMap shop/edge-bgp (annotation flomesh.io/bgp-config) key bgp.yaml: localAs: must be an AS number, 1-4294967295');
    expect(event.message).toContain('the last good bgp section stays in sidecar.json');
    expect((await sidecar())?.bgp?.localAs).toBe(65002);

    await core.deleteNamespacedPod({ name: 'vip-1', namespace: NS, gracePeriodSeconds: 0 });
    await eventually('the codebase of vip-1 deleted', async () => (repo.get('/flb/sidecars/pod.shop.vip-1') === undefined ? true : undefined));
  });

  it('after a restart deletes no codebase and republishes nothing unchanged; collects codebases of pods deleted while it was down', async () => {
    const pod = (name: string) => ({
      metadata: { name, labels: { [SIDECAR_INJECTED_LABEL]: 'true' } },
      spec: { containers: [{ name: 'app', image: 'example/web:1' }] },
    });
    await core.createNamespacedPod({ namespace: NS, body: pod('keep') });
    await core.createNamespacedPod({ namespace: NS, body: pod('gone') });
    await eventually('both codebases', async () => (repo.get('/flb/sidecars/pod.shop.keep') && repo.get('/flb/sidecars/pod.shop.gone') ? true : undefined));
    const before = { mesh: repo.get('/flb/mesh')!.version, keep: repo.get('/flb/sidecars/pod.shop.keep')!.version };
    await stop(bridges[0]!);
    await core.deleteNamespacedPod({ name: 'gone', namespace: NS, gracePeriodSeconds: 0 });

    const restarted = await start('bridge-b');
    await eventually(
      'the restarted bridge leading and synced',
      async () => (restarted.status().leader && restarted.status().sources[0]!.state === 'synced' ? true : undefined),
      30_000,
    );
    await restarted.settled();
    await eventually('the codebase of the pod deleted meanwhile collected', async () =>
      repo.get('/flb/sidecars/pod.shop.gone') === undefined ? true : undefined,
    );
    expect(repo.get('/flb/sidecars/pod.shop.keep')!.version).toBe(before.keep);
    expect(repo.get('/flb/mesh')!.version).toBe(before.mesh);
  });

  it('with two replicas one leads; when it stops the standby takes over and keeps publishing', async () => {
    const standby = await start('bridge-c');
    const leader = bridges.find((b) => b !== standby)!;
    await eventually('the standby synced', async () => (standby.status().sources[0]!.state === 'synced' ? true : undefined));
    expect(leader.status().leader).toBe(true);
    expect(standby.status().leader).toBe(false);
    await stop(leader);
    await eventually('the standby leading', async () => (standby.status().leader ? true : undefined), 15_000);
    await discovery.replaceNamespacedEndpointSlice({ name: 'legacy-1', namespace: NS, body: legacySlice(['10.1.0.9']) });
    await eventually('the new leader publishing the change', async () =>
      (await serviceFile('legacy.shop'))?.endpoints.map((e) => e.address).join() === '10.1.0.9' ? true : undefined,
    );
    expect(repo.get('/flb/sidecars/pod.shop.keep')).toBeDefined();
  });

  it('keeps the last good mesh settings when the ConfigMap is edited badly, with an Event on it', async () => {
    const bridge = bridges[0]!;
    await core.createNamespacedConfigMap({
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: shopmesh\n` } },
    });
    await eventually('mesh.json naming shopmesh', async () =>
      (await readJson<{ name: string }>('/flb/mesh', '/mesh.json'))?.name === 'shopmesh' ? true : undefined,
    );
    await core.replaceNamespacedConfigMap({
      name: 'flb-mesh',
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: shopmesh\nproxyUid: 0\n` } },
    });
    const event = await eventually('an Event on the mesh ConfigMap', async () => {
      const events = await core.listNamespacedEvent({ namespace: CONTROL });
      return events.items.find((e) => e.involvedObject.name === 'flb-mesh' && e.reason === 'InvalidMeshSettings');
    });
    expect(event.message).toMatch(/proxyUid: must not be root/);
    expect(bridge.status().mesh.problem).toMatch(/proxyUid/);
    expect(await readJson('/flb/mesh', '/mesh.json')).toMatchObject({ name: 'shopmesh', proxyUid: 1500 });
    // Deleted: the last good settings stay published (the sidecars and the injector keep them too).
    await core.deleteNamespacedConfigMap({ name: 'flb-mesh', namespace: CONTROL });
    await eventually('the deletion seen', async () => (bridge.status().mesh.problem?.includes('was deleted') ? true : undefined));
    await bridge.settled();
    expect(await readJson('/flb/mesh', '/mesh.json')).toMatchObject({ name: 'shopmesh', proxyUid: 1500 });
  });

  it('started with the ConfigMap missing, publishes the mesh.json sidecars already hold, not the defaults', async () => {
    for (const bridge of [...bridges]) await stop(bridge);
    expect(await readJson('/flb/mesh', '/mesh.json')).toMatchObject({ name: 'shopmesh' });
    const bridge = await start('bridge-without-settings');
    await eventually('leading', async () => (bridge.status().leader ? true : undefined), 30_000);
    await eventually('the sinks attached', async () => (bridge.status().sinks.length > 0 ? true : undefined));
    await bridge.settled();
    expect(bridge.status().mesh).toMatchObject({ name: 'shopmesh', problem: expect.stringMatching(/does not exist/) });
    expect(await readJson('/flb/mesh', '/mesh.json')).toMatchObject({ name: 'shopmesh', proxyUid: 1500 });
    // Good settings, once they come, win over what was published.
    await core.createNamespacedConfigMap({
      namespace: CONTROL,
      body: { metadata: { name: 'flb-mesh' }, data: { 'mesh.yaml': `apiVersion: ${API_VERSION}\nkind: Mesh\nname: newmesh\n` } },
    });
    await eventually('mesh.json naming newmesh', async () =>
      (await readJson<{ name: string }>('/flb/mesh', '/mesh.json'))?.name === 'newmesh' ? true : undefined,
    );
  });
});
