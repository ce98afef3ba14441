import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { execa } from 'execa';
import { AppsV1Api, CoreV1Api, DiscoveryV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { startMeshComponents, type MeshComponents, getJson } from '../devenv/mesh.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';
import { demoDeployment, isPodReady, type ClientStats } from '../devenv/apps/workloads.js';

// The product as a user meets it: label a namespace, deploy, and services are called by name. Real
// control plane, pods that run (node simulator), the injector, the repo and the registry bridge
// as processes, sidecars in every pod. No catalog is published by hand.
const NS = 'shop';
const log = createLogger('mesh-test', 'silent');

function post(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', timeout: 3000 }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the mesh with pods that run', () => {
  let env: DevEnvironment;
  let mesh: MeshComponents;
  let core: CoreV1Api;
  let apps: AppsV1Api;

  const pods = async (app: string) => (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${app}` })).items;
  const clientStats = async () => {
    const ip = (await pods('client')).find(isPodReady)!.status!.podIP!;
    const stats = await getJson<ClientStats>(`http://${ip}:8081/stats`);
    if (!stats) throw new Error('the client did not answer');
    return stats;
  };
  const resetClient = async () => post(`http://${(await pods('client')).find(isPodReady)!.status!.podIP!}:8081/reset`);
  /** As the control plane: the repo's codebases and their versions. */
  const repoGet = (path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const tls = { ca: readFileSync(mesh.repoCaFile), cert: readFileSync(mesh.controlPlaneCert.certFile), key: readFileSync(mesh.controlPlaneCert.keyFile) };
      const req = httpsRequest(`${mesh.repoUrl}${path}`, { ...tls, agent: false, timeout: 3000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });
  const codebases = async () => (await repoGet('/api/v1/repo')).body.split('\n').filter((c) => c.startsWith('/flb/sidecars/pod.'));
  const versionOf = async (codebase: string) => (JSON.parse((await repoGet(`/api/v1/repo${codebase}`)).body) as { version: string }).version;
  const leader = async () => {
    for (const [i, url] of mesh.bridgeAdminUrls.entries()) if ((await getJson<{ leader: boolean }>(`${url}/status`))?.leader) return i;
    return undefined;
  };

  beforeAll(async () => {
    requireRoot('the mesh end-to-end test');
    env = await startDevEnvironment({
      log,
      nodes: [
        { name: 'mesh-a', zone: 'zone-a' },
        { name: 'mesh-b', zone: 'zone-b' },
      ],
      backoffBaseMs: 1000,
    });
    mesh = await startMeshComponents(env, { bridges: 2 });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: NS }));
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] } },
    });
    await apps.createNamespacedDeployment({ namespace: NS, body: demoDeployment('echo', 3, ['echo'], { name: 'http', containerPort: 8080 }) });
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }),
    });
    await eventually(
      'four pods Ready',
      async () => ((await pods('echo')).filter(isPodReady).length === 3 && (await pods('client')).filter(isPodReady).length === 1 ? true : undefined),
      120_000,
    );
  });
  afterAll(async () => {
    await mesh?.stop();
    await env?.stop();
  });

  it('injects pods that really start: the native sidecar, then iptables rules from the init container while it starts, the app once it is ready, probes through the rewritten ports', async () => {
    const [pod] = await pods('echo');
    const init = pod!.status!.initContainerStatuses!;
    expect(init.map((c) => c.name)).toEqual(['flb-sidecar', 'flb-init']);
    expect(init[0]).toMatchObject({ started: true, ready: true });
    expect(init[1]!.state?.terminated?.exitCode).toBe(0);
    const sidecarStarted = new Date(init[0]!.state!.running!.startedAt!).getTime();
    const initFinished = new Date(init[1]!.state!.terminated!.finishedAt!).getTime();
    expect(initFinished).toBeGreaterThanOrEqual(sidecarStarted);
    expect(new Date(pod!.status!.containerStatuses![0]!.state!.running!.startedAt!).getTime()).toBeGreaterThanOrEqual(initFinished);
    // The app's readiness probe goes to the sidecar's probe port, which runs the app's own probe.
    expect(pod!.spec!.containers[0]!.readinessProbe?.httpGet).toMatchObject({ port: 15902, path: '/app-health/echo/readiness' });
    expect(pod!.metadata!.labels?.['flomesh.io/sidecar-injected']).toBe('true');
    const netns = env.simulator.netnsOf(NS, pod!.metadata!.name!)!;
    const rules = (await execa('ip', ['netns', 'exec', netns, 'iptables-save', '-t', 'nat'])).stdout;
    expect(rules).toMatch(/-A FLB_OUT_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15001/);
    expect(rules).toMatch(/REDIRECT --to-ports 15003/);
    // kube-controller-manager built the EndpointSlice from the status the node simulator wrote.
    const discovery = env.plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    const slices = await discovery.listNamespacedEndpointSlice({ namespace: NS, labelSelector: 'kubernetes.io/service-name=echo' });
    expect(slices.items.flatMap((s) => s.endpoints ?? []).filter((e) => e.conditions?.ready)).toHaveLength(3);
  });

  it("keeps calls in the client's zone while it has endpoints there, and spreads them over every zone when the Service says locality none", async () => {
    const zoneOf = (pod: V1Pod) => (pod.spec!.nodeName === 'mesh-a' ? 'zone-a' : 'zone-b');
    const servers = (await pods('echo')).filter(isPodReady);
    const clientZone = zoneOf((await pods('client')).find(isPodReady)!);
    const local = servers.filter((p) => zoneOf(p) === clientZone).map((p) => p.metadata!.name!);
    expect(local.length).toBeGreaterThan(0);
    await resetClient();
    await new Promise((r) => setTimeout(r, 2000));
    // The sidecar knows its zone (sidecar.json) and the endpoints' (EndpointSlices, from the nodes' labels).
    expect(Object.keys((await clientStats()).byPod).sort()).toEqual([...local].sort());

    const svc = await core.readNamespacedService({ name: 'echo', namespace: NS });
    svc.metadata!.annotations = { ...svc.metadata!.annotations, 'flomesh.io/locality': 'none' };
    await core.replaceNamespacedService({ name: 'echo', namespace: NS, body: svc });
    await resetClient();
    await eventually('calls over all three pods', async () => (Object.keys((await clientStats()).byPod).length === 3 ? true : undefined), 20_000);
  });

  it('reaches every server pod by name in every search-list form and by ClusterIP, through the sidecar', async () => {
    const client = (await pods('client')).find(isPodReady)!;
    const svc = await core.readNamespacedService({ name: 'echo', namespace: NS });
    const clusterIp = svc.spec!.clusterIP!;
    const script = `
      const targets = process.argv.slice(1);
      const out = {};
      for (const t of targets) {
        out[t] = {};
        for (let i = 0; i < 30; i++) {
          const r = await fetch('http://' + t + '/').catch((e) => ({ ok: false, status: String(e.cause?.code ?? e) }));
          const who = r.ok ? r.headers.get('x-served-by') : 'error ' + r.status;
          out[t][who] = (out[t][who] ?? 0) + 1;
        }
      }
      console.log(JSON.stringify(out));`;
    const forms = ['echo', 'echo.shop', 'echo.shop.svc', 'echo.shop.svc.cluster.local', clusterIp];
    const result = await env.simulator.exec(NS, client.metadata!.name!, 'client', ['node', '--input-type=module', '-e', script, ...forms], 60_000);
    expect(result.stderr).toBe('');
    const spread = JSON.parse(result.stdout) as Record<string, Record<string, number>>;
    const servers = (await pods('echo')).map((p) => p.metadata!.name!).sort();
    for (const form of forms) expect({ form, reached: Object.keys(spread[form]!).sort() }).toEqual({ form, reached: servers });
    // The app's own resolver asks the sidecar's DNS (the captured port 53) and gets the ClusterIP.
    const getent = await env.simulator.exec(NS, client.metadata!.name!, 'client', ['getent', 'hosts', 'echo']);
    expect(getent.stdout).toContain(clusterIp);
  });

  it('spreads calls to five pods within seconds of a scale-up', async () => {
    await apps
      .patchNamespacedDeploymentScale({ name: 'echo', namespace: NS, body: { spec: { replicas: 5 } } }, {
        headers: { 'Content-Type': 'application/merge-patch+json' },
      } as never)
      .catch(async () => {
        const scale = await apps.readNamespacedDeploymentScale({ name: 'echo', namespace: NS });
        scale.spec = { replicas: 5 };
        await apps.replaceNamespacedDeploymentScale({ name: 'echo', namespace: NS, body: scale });
      });
    await eventually('five echo pods Ready', async () => ((await pods('echo')).filter(isPodReady).length === 5 ? true : undefined), 60_000);
    const readyAt = Date.now();
    await resetClient();
    let last: ClientStats | undefined;
    const stats = await eventually(
      'calls reaching five pods',
      async () => {
        const s = (last = await clientStats());
        return Object.values(s.byPod).filter((n) => n > 0).length >= 5 ? s : undefined;
      },
      20_000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; the client saw ${JSON.stringify(last)}`);
    });
    console.log(`calls reached all five pods ${Date.now() - readyAt} ms after the fifth was Ready: ${JSON.stringify(stats.byPod)}`);
    expect(stats.failed).toBe(0);
  });

  it('deletes a pod during a stream of requests and none fails', async () => {
    await resetClient();
    const victim = (await pods('echo')).find(isPodReady)!.metadata!.name!;
    await core.deleteNamespacedPod({ name: victim, namespace: NS });
    await eventually('the pod gone', async () => ((await pods('echo')).some((p) => p.metadata!.name === victim) ? undefined : true), 60_000);
    await eventually('five Ready again', async () => ((await pods('echo')).filter(isPodReady).length === 5 ? true : undefined), 60_000);
    // The stream goes on past the replacement's arrival until it has made at least 50 calls (the
    // deletion and the new pod can both take less time than 50 calls).
    const stats = await eventually(
      'at least 50 calls since the deletion',
      async () => {
        const now = await clientStats();
        return now.ok + now.failed >= 50 ? now : undefined;
      },
      30_000,
    );
    expect(stats.ok).toBeGreaterThanOrEqual(50);
    expect({ failed: stats.failed, lastError: stats.lastError }).toEqual({ failed: 0, lastError: undefined });
  });

  it('restarts the bridge mid-stream: no codebase deleted, nothing unchanged republished, sidecars keep routing', async () => {
    await resetClient();
    const before = await codebases();
    const versions = new Map(await Promise.all(before.map(async (c) => [c, await versionOf(c)] as const)));
    const meshVersion = await versionOf('/flb/mesh');
    for (let i = 0; i < mesh.bridgeAdminUrls.length; i++) await mesh.bridge(i)!.stop();
    for (let i = 0; i < mesh.bridgeAdminUrls.length; i++) await mesh.startBridge(i);
    await eventually('a bridge leading again', async () => ((await leader()) !== undefined ? true : undefined), 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    expect((await codebases()).sort()).toEqual([...before].sort());
    for (const [codebase, version] of versions) expect({ codebase, version: await versionOf(codebase) }).toEqual({ codebase, version });
    expect(await versionOf('/flb/mesh')).toBe(meshVersion);
    const stats = await clientStats();
    expect(stats.ok).toBeGreaterThan(20);
    expect(stats.failed).toBe(0);
  });

  it('with the leader killed (SIGKILL), the standby takes over and publishes the next change', async () => {
    const was = (await leader())!;
    const standby = 1 - was;
    await mesh.bridge(was)!.stop(0);
    await eventually(
      'the standby leading',
      async () => ((await getJson<{ leader: boolean }>(`${mesh.bridgeAdminUrls[standby]}/status`))?.leader ? true : undefined),
      30_000,
    );
    const meshVersion = Number(await versionOf('/flb/mesh'));
    await resetClient();
    const victim = (await pods('echo')).find(isPodReady)!.metadata!.name!;
    await core.deleteNamespacedPod({ name: victim, namespace: NS });
    await eventually('the new leader publishing the change', async () => (Number(await versionOf('/flb/mesh')) > meshVersion ? true : undefined), 20_000);
    await eventually('five Ready again', async () => ((await pods('echo')).filter(isPodReady).length === 5 ? true : undefined), 60_000);
    expect((await clientStats()).failed).toBe(0);
    await mesh.startBridge(was);
  });

  it('collects the codebases of pods deleted while every bridge was down', async () => {
    for (let i = 0; i < mesh.bridgeAdminUrls.length; i++) await mesh.bridge(i)!.stop();
    const victim = (await pods('echo')).find(isPodReady)!.metadata!.name!;
    await core.deleteNamespacedPod({ name: victim, namespace: NS });
    await eventually('the pod gone', async () => ((await pods('echo')).some((p) => p.metadata!.name === victim) ? undefined : true), 60_000);
    expect(await codebases()).toContain(`/flb/sidecars/pod.${NS}.${victim}`);
    await mesh.startBridge(0);
    await eventually('its codebase collected', async () => (!(await codebases()).includes(`/flb/sidecars/pod.${NS}.${victim}`) ? true : undefined), 30_000);
    await eventually(
      'the replacement published',
      async () => {
        const names = (await pods('echo')).map((p) => `/flb/sidecars/pod.${NS}.${p.metadata!.name}`);
        const have = await codebases();
        return names.every((n) => have.includes(n)) ? true : undefined;
      },
      60_000,
    );
  });
});
