// Consul and Eureka services called by name from a pod, through its sidecar: the real Consul
// v1.16.1, the run's shared Eureka server (Spring Cloud Netflix), the real control plane, pods that
// run (node simulator), the repo, the bridge (with a Consul and a Eureka source, and a Consul and a
// Eureka sink) and the injector as processes. The services' instances are two echo pods with no
// Kubernetes Service: only the registries know them, as they know a VM's or another platform's
// instances. The last describe checks the other direction (issue 18): a Kubernetes Service with
// pods that run, written into the same Consul and Eureka by the same bridge's sinks.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startConsul, type ConsulAgent } from '../devenv/consul.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { getJson, startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { EurekaRestClient, getJson as getEurekaJson, sharedEurekaServer, type EurekaServer } from './harness/eureka.js';
import { startDiscoveryClient, type DiscoveryClient } from './harness/eureka-discovery.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';
import { demoDeployment, isPodReady } from '../devenv/apps/workloads.js';

const NS = 'shop';
const GRACE_SECONDS = 3;
const STALE_SECONDS = 10;
const log = createLogger('mesh-consul-test', 'silent');

interface ConsulCatalogEntry {
  ServiceID: string;
  ServiceAddress: string;
  ServicePort: number;
  ServiceTags: string[];
  ServiceMeta: Record<string, string>;
}
interface ConsulHealthEntry {
  Service: { ID: string; Address: string; Port: number };
  Checks: { ServiceID: string; Status: string }[];
}
interface EurekaJsonInstance {
  ipAddr: string;
  hostName: string;
  status: string;
  port: { $: number };
}

describe('Consul and Eureka services called by name from a pod through its sidecar', () => {
  let env: DevEnvironment;
  let consul: ConsulAgent;
  let eureka: EurekaServer;
  let eurekaClient: EurekaRestClient;
  let mesh: MeshComponents;
  let core: CoreV1Api;

  const pods = async (app: string) => (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${app}` })).items;
  /** Calls each target 20 times from the client pod (its own fetch, through its sidecar): who answered, by target. */
  const callFromClient = async (targets: string[]) => {
    const client = (await pods('client')).find(isPodReady)!;
    const script = `
      const out = {};
      for (const t of process.argv.slice(1)) {
        out[t] = {};
        for (let i = 0; i < 20; i++) {
          const r = await fetch('http://' + t + '/', { signal: AbortSignal.timeout(3000) }).catch((e) => ({ ok: false, status: String(e.cause?.code ?? e.name) }));
          const who = r.ok ? r.headers.get('x-served-by') : 'error ' + r.status;
          out[t][who] = (out[t][who] ?? 0) + 1;
        }
      }
      console.log(JSON.stringify(out));`;
    const result = await env.simulator.exec(NS, client.metadata!.name!, 'client', ['node', '--input-type=module', '-e', script, ...targets], 90_000);
    return JSON.parse(result.stdout) as Record<string, Record<string, number>>;
  };
  const registerPod = async (pod: V1Pod, status: string) => {
    const name = pod.metadata!.name!;
    const r = await consul.api('PUT', '/v1/catalog/register', {
      Node: `node-${name}`,
      Address: pod.status!.podIP!,
      Service: { ID: `legacy-${name}`, Service: 'legacy', Port: 8080, Meta: { protocol: 'http' } },
      Checks: [{ CheckID: `service:legacy-${name}`, Name: 'legacy health', Status: status, ServiceID: `legacy-${name}` }],
    });
    expect(r).toMatchObject({ status: 200, body: true });
  };

  beforeAll(async () => {
    requireRoot('the mesh-with-Consul end-to-end test');
    [env, consul, eureka] = await Promise.all([
      startDevEnvironment({ log, nodes: [{ name: 'mesh-a', zone: 'zone-a' }], backoffBaseMs: 1000 }),
      startConsul(),
      sharedEurekaServer(),
    ]);
    eurekaClient = new EurekaRestClient(eureka.url);
    mesh = await startMeshComponents(env, {
      registrySources: [
        { kind: 'consul', address: consul.url, removeAfterSeconds: GRACE_SECONDS, waitSeconds: 5, staleAfterSeconds: STALE_SECONDS },
        { kind: 'eureka', servers: [eureka.url], intervalSeconds: 1 },
      ],
      // Into the registries its sources read (the last describe): Kubernetes Services of this namespace only.
      registrySinks: [
        { kind: 'consul', address: consul.url, namespaces: { include: [NS] }, resyncSeconds: 5 },
        { kind: 'eureka', servers: [eureka.url], namespaces: { include: [NS] }, renewalIntervalSeconds: 1, leaseDurationSeconds: 3 },
      ],
    });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    const apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: NS }));
    await apps.createNamespacedDeployment({ namespace: NS, body: demoDeployment('legacy', 2, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    // The client's own loop is not used here; it is a pod with a sidecar to call from.
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: demoDeployment(
        'client',
        1,
        ['client', '--url', 'http://127.0.0.1:8081/healthz', '--interval-ms', '5000'],
        { name: 'stats', containerPort: 8081 },
        5,
      ),
    });
    // A Kubernetes Service with pods that run, for the Consul and Eureka sinks (last describe); started with the others to share their wait.
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
    });
    await apps.createNamespacedDeployment({ namespace: NS, body: demoDeployment('echo', 2, ['echo'], { name: 'http', containerPort: 8080 }, 1) });
    // On a timeout the error names the pods not Ready yet and their state.
    await eventually(
      'five pods Ready (legacy 2, client 1, echo 2)',
      async () => {
        const all = (await core.listNamespacedPod({ namespace: NS })).items;
        const notReady = all.filter((p) => !isPodReady(p));
        if (all.length === 5 && notReady.length === 0) return true;
        throw new Error(
          `${all.length} pods; not Ready: ${notReady.map((p) => `${p.metadata!.name} ${p.status?.phase} ${JSON.stringify(p.status?.containerStatuses?.map((c) => c.state))}`).join('; ')}`,
        );
      },
      120_000,
    );
  });
  afterAll(async () => {
    eurekaClient?.close();
    await mesh?.stop();
    await env?.stop();
    await consul?.stop();
    // A server this run still holds keeps jest from exiting (bridge-eureka.test.ts stops it too).
    await eureka?.stop();
  });

  it('reaches every instance by each of its names: <svc>.service.consul, <svc>.service.<dc>.consul, the catalog id', async () => {
    for (const pod of await pods('legacy')) await registerPod(pod, 'passing');
    const names = ['legacy.service.consul:8080', 'legacy.service.dc1.consul:8080', 'legacy.dc1.consul:8080'];
    const instances = (await pods('legacy')).map((p) => p.metadata!.name!).sort();
    // Until the sidecar holds the catalog file the name does not resolve; then every form spreads.
    const spread = await eventually(
      'calls by every name reaching both instances',
      async () => {
        const result = await callFromClient(names);
        return names.every((n) => instances.every((i) => (result[n]![i] ?? 0) > 0)) ? result : undefined;
      },
      60_000,
      1000,
    );
    for (const name of names) expect({ name, reached: Object.keys(spread[name]!).sort() }).toEqual({ name, reached: instances });
  });

  it('sends nothing to an instance whose Consul check turns critical', async () => {
    const [down, up] = (await pods('legacy')).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
    await registerPod(down!, 'critical');
    const result = await eventually(
      `calls reaching only ${up!.metadata!.name}`,
      async () => {
        const r = await callFromClient(['legacy.service.consul:8080']);
        return Object.keys(r['legacy.service.consul:8080']!).join() === up!.metadata!.name ? r : undefined;
      },
      30_000,
      500,
    );
    expect(result['legacy.service.consul:8080']).toEqual({ [up!.metadata!.name!]: 20 });
  });

  const byName = async () => (await pods('legacy')).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
  const registerInEureka = async (pod: V1Pod, status: 'UP' | 'DOWN') =>
    eurekaClient.register({ app: 'orders', instanceId: `orders-${pod.metadata!.name}`, ipAddr: pod.status!.podIP!, port: 8080, status });

  it('reaches every instance of a Eureka application by its lower-cased name and its catalog id', async () => {
    // Registered as a Spring client does it: app ORDERS; clients dial http://orders/ (port 80).
    for (const pod of await byName()) await registerInEureka(pod, 'UP');
    const names = ['orders', 'orders.eureka.eureka'];
    const instances = (await byName()).map((p) => p.metadata!.name!);
    const spread = await eventually(
      'calls by both names reaching both instances',
      async () => {
        const result = await callFromClient(names);
        return names.every((n) => instances.every((i) => (result[n]![i] ?? 0) > 0)) ? result : undefined;
      },
      60_000,
      1000,
    );
    for (const name of names) expect({ name, reached: Object.keys(spread[name]!).sort() }).toEqual({ name, reached: instances });
  });

  it('sends nothing to a Eureka instance marked DOWN', async () => {
    const [down, up] = await byName();
    await registerInEureka(down!, 'DOWN');
    const result = await eventually(
      `calls to orders reaching only ${up!.metadata!.name}`,
      async () => {
        const r = await callFromClient(['orders']);
        return Object.keys(r.orders!).join() === up!.metadata!.name ? r : undefined;
      },
      30_000,
      500,
    );
    expect(result.orders).toEqual({ [up!.metadata!.name!]: 20 });
  });

  it('keeps one name in Consul and in Eureka apart: orders.service.consul is the Consul service, orders the Eureka application', async () => {
    // The Eureka app orders has only the second pod UP now; Consul's orders gets only the first.
    const [first, second] = await byName();
    const r = await consul.api('PUT', '/v1/catalog/register', {
      Node: `node-orders-${first!.metadata!.name}`,
      Address: first!.status!.podIP!,
      Service: { ID: 'orders-consul', Service: 'orders', Port: 8080, Meta: { protocol: 'http' } },
      Checks: [{ CheckID: 'service:orders-consul', Name: 'orders health', Status: 'passing', ServiceID: 'orders-consul' }],
    });
    expect(r).toMatchObject({ status: 200, body: true });
    const names = ['orders.service.consul:8080', 'orders.dc1.consul:8080', 'orders', 'orders.eureka.eureka'];
    const result = await eventually(
      'the Consul orders reachable by its names',
      async () => {
        const calls = await callFromClient(names);
        return Object.keys(calls['orders.service.consul:8080']!).join() === first!.metadata!.name ? calls : undefined;
      },
      30_000,
      1000,
    );
    expect(result).toEqual({
      'orders.service.consul:8080': { [first!.metadata!.name!]: 20 },
      'orders.dc1.consul:8080': { [first!.metadata!.name!]: 20 },
      orders: { [second!.metadata!.name!]: 20 },
      'orders.eureka.eureka': { [second!.metadata!.name!]: 20 },
    });
    // Different hostnames, so no claim to settle: the bridge counts no conflict.
    const status = await getJson<{ catalog: { conflicts: number } }>(`${mesh.bridgeAdminUrls[0]}/status`);
    expect(status?.catalog).toMatchObject({ conflicts: 0 });
  });

  it('stops resolving a Eureka application in the pod once its last instance is cancelled', async () => {
    const client = (await pods('client')).find(isPodReady)!;
    const resolves = async (name: string) => (await env.simulator.exec(NS, client.metadata!.name!, 'client', ['getent', 'hosts', name])).exitCode === 0;
    expect(await resolves('orders')).toBe(true);
    for (const pod of await byName()) await eurekaClient.cancel('orders', `orders-${pod.metadata!.name}`);
    // Eureka's rule (registry-bridge/README.md): no grace, the app goes with the delta that cancels its last instance.
    await eventually('orders no longer resolving in the pod', async () => ((await resolves('orders')) ? undefined : true), 30_000, 250);
    expect(await resolves('orders.eureka.eureka')).toBe(false);
    expect(await resolves('orders.service.consul')).toBe(true);
  });

  it('keeps routing to the last known instances while Consul is away for a minute', async () => {
    const [, up] = (await pods('legacy')).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
    await consul.halt();
    const haltedAt = Date.now();
    const consulSource = async () => {
      const status = await getJson<{ sources: { kind: string; state: string }[] }>(`${mesh.bridgeAdminUrls[0]}/status`);
      return status?.sources.find((x) => x.kind === 'consul');
    };
    await eventually('the bridge reporting Consul stale', async () => ((await consulSource())?.state === 'stale' ? true : undefined), 60_000, 1000);
    expect((await callFromClient(['legacy.service.consul:8080']))['legacy.service.consul:8080']).toEqual({ [up!.metadata!.name!]: 20 });
    // Away for a minute, as the issue has it: every retry and backoff of the bridge's watches has run many times by then.
    await new Promise((r) => setTimeout(r, Math.max(0, haltedAt + 60_000 - Date.now())));
    expect(await consulSource()).toMatchObject({ state: 'stale' });
    expect((await callFromClient(['legacy.service.consul:8080']))['legacy.service.consul:8080']).toEqual({ [up!.metadata!.name!]: 20 });
    // Back (empty: a dev agent keeps nothing) and registered again as it was.
    await consul.resume();
    const [down] = (await pods('legacy')).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
    await registerPod(down!, 'critical');
    await registerPod(up!, 'passing');
    await eventually('the bridge reporting Consul synced', async () => ((await consulSource())?.state === 'synced' ? true : undefined), 30_000, 500);
    expect((await callFromClient(['legacy.service.consul:8080']))['legacy.service.consul:8080']).toEqual({ [up!.metadata!.name!]: 20 });
  }, 150_000);

  it('stops resolving the name after the grace once the service is deregistered, not before', async () => {
    const client = (await pods('client')).find(isPodReady)!;
    const resolves = async () => (await env.simulator.exec(NS, client.metadata!.name!, 'client', ['getent', 'hosts', 'legacy.service.consul'])).exitCode === 0;
    expect(await resolves()).toBe(true);
    const deregisteredAt = Date.now();
    for (const pod of await pods('legacy')) {
      expect(await consul.api('PUT', '/v1/catalog/deregister', { Node: `node-${pod.metadata!.name}` })).toMatchObject({ status: 200 });
    }
    // Within the grace the name still answers (the VIP, with no endpoint left).
    expect(await resolves()).toBe(true);
    const gone = await eventually(
      'legacy.service.consul no longer resolving in the pod',
      async () => ((await resolves()) ? undefined : Date.now()),
      30_000,
      250,
    );
    expect(gone - deregisteredAt).toBeGreaterThanOrEqual(GRACE_SECONDS * 1000);
  });

  // The sinks (issue 18) with pods that run: the echo Deployment's pods are Ready through the real
  // readiness path (kubelet probe, sidecar probe port, the app's /healthz), so what reaches Consul
  // and Eureka is what the EndpointSlice controller made of them. The mesh's one bridge writes
  // them, as a user runs it: its sinks write this namespace's Services into the two registries its
  // Consul and Eureka sources read, and those sources must never import back what the sinks wrote.
  // The sinks have run since the file's start, through Consul's minute away and its return empty.
  describe('the Consul and Eureka sinks with pods that run', () => {
    /** An app discovering through eureka-js-client, as a Spring Cloud client does (UP instances only). */
    let springClient: DiscoveryClient;
    let deployments: AppsV1Api;

    const echoAddresses = async () =>
      (await pods('echo'))
        .filter(isPodReady)
        .map((p) => `${p.status!.podIP!}:8080`)
        .sort();
    const consulCatalog = async () => ((await consul.api('GET', '/v1/catalog/service/echo')).body as ConsulCatalogEntry[] | undefined) ?? [];
    const consulPassing = async () =>
      (((await consul.api('GET', '/v1/health/service/echo?passing=true')).body as ConsulHealthEntry[] | undefined) ?? [])
        .map((e) => `${e.Service.Address}:${e.Service.Port}`)
        .sort();
    const consulChecks = async () =>
      (((await consul.api('GET', '/v1/health/service/echo')).body as ConsulHealthEntry[] | undefined) ?? [])
        .map((e) => `${e.Service.Address}:${e.Service.Port} ${e.Checks.find((c) => c.ServiceID === e.Service.ID)?.Status}`)
        .sort();
    /** What the server holds of ECHO: `ipAddr:port status`. */
    const eurekaHeld = async () => {
      const answer = await getEurekaJson(`${eureka.url}apps/ECHO`);
      if (answer.status === 404) return [];
      return (JSON.parse(answer.body) as { application: { instance: EurekaJsonInstance[] } }).application.instance
        .map((i) => `${i.ipAddr}:${i.port.$} ${i.status}`)
        .sort();
    };
    const discovered = () => springClient.discovered('ECHO');
    /** Waits until Consul lists `listed` (default: the Ready ones) and both registries hand out exactly the Ready addresses `ready()` names. */
    const bothFollow = async (what: string, ready: () => Promise<string[]>, listed?: string[]) => {
      let want: string[] = [];
      await eventually(
        what,
        async () => {
          want = await ready();
          const [inConsul, passing] = await Promise.all([consulCatalog(), consulPassing()]);
          const registered = inConsul.map((e) => `${e.ServiceAddress}:${e.ServicePort}`).sort();
          const state = { registered, passing, discovered: discovered() };
          const expected = { registered: listed ?? want, passing: want, discovered: want };
          if (JSON.stringify(state) === JSON.stringify(expected)) return true;
          throw new Error(`have ${JSON.stringify(state)}, want ${JSON.stringify(expected)}`);
        },
        60_000,
        250,
      );
      return want;
    };

    beforeAll(async () => {
      deployments = env.plane.kubeConfig.makeApiClient(AppsV1Api);
      springClient = await startDiscoveryClient(eureka);
    });
    afterAll(() => springClient?.stop());

    it("registers the Deployment's Ready pods in Consul (catalog and passing health) and as UP Eureka instances a Spring-style client discovers", async () => {
      const want = await bothFollow('echo in Consul and Eureka at its two pods', echoAddresses);
      expect(want).toHaveLength(2);
      // Written by the mesh's own bridge: its /status (what `flb bridge status` prints) lists both sinks, caught up.
      const sinks = await eventually('both sinks caught up in the bridge status', async () => {
        const status = await getJson<{ sinks: { kind: string; pending: number }[] }>(`${mesh.bridgeAdminUrls[0]}/status`);
        const registries = status?.sinks.filter((sink) => sink.kind !== 'repo');
        return registries?.every((sink) => sink.pending === 0) ? registries : undefined;
      });
      expect(sinks.map((sink) => sink.kind).sort()).toEqual(['consul', 'eureka']);
      const entries = await consulCatalog();
      for (const entry of entries) {
        expect(entry).toMatchObject({
          ServiceTags: ['k8s'],
          ServiceMeta: { 'flomesh-origin': 'kubernetes', 'external-source': 'kubernetes', 'external-k8s-ns': NS, 'flomesh-service': `echo.${NS}` },
        });
      }
      expect(await eurekaHeld()).toEqual(want.map((a) => `${a} UP`));
      const instance = (JSON.parse((await getEurekaJson(`${eureka.url}apps/ECHO`)).body) as { application: { instance: EurekaJsonInstance[] } }).application
        .instance[0]!;
      expect(instance).toMatchObject({
        vipAddress: 'echo',
        dataCenterInfo: { name: 'MyOwn' },
        metadata: { 'flomesh-origin': 'kubernetes', 'flomesh-service': `echo.${NS}` },
      });
    });

    it('follows a scale to 3 in both', async () => {
      const scale = await deployments.readNamespacedDeploymentScale({ name: 'echo', namespace: NS });
      await deployments.replaceNamespacedDeploymentScale({ name: 'echo', namespace: NS, body: { ...scale, spec: { replicas: 3 } } });
      await eventually('three echo pods Ready', async () => ((await echoAddresses()).length === 3 ? true : undefined), 60_000);
      expect(await bothFollow('three instances in Consul and Eureka', echoAddresses)).toHaveLength(3);
    });

    it('a pod whose app turns unready: its Consul check goes critical and its Eureka instance DOWN, the instances stay listed', async () => {
      const [unready, ...others] = (await pods('echo')).filter(isPodReady).sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!));
      const failed = await env.simulator.exec(NS, unready!.metadata!.name!, 'echo', [
        'node',
        '--input-type=module',
        '-e',
        "const r = await fetch('http://127.0.0.1:8080/healthz/fail', { method: 'POST' }); process.exit(r.ok ? 0 : 1);",
      ]);
      expect(failed.exitCode).toBe(0);
      const unreadyAddress = `${unready!.status!.podIP!}:8080`;
      const readyAddresses = others.map((p) => `${p.status!.podIP!}:8080`).sort();
      await eventually('the pod NotReady', async () => ((await echoAddresses()).includes(unreadyAddress) ? undefined : true), 30_000);
      await bothFollow(
        'only the two Ready pods passing in Consul and discovered from Eureka, all three listed',
        async () => readyAddresses,
        [...readyAddresses, unreadyAddress].sort(),
      );
      expect(await consulChecks()).toEqual([...readyAddresses.map((a) => `${a} passing`), `${unreadyAddress} critical`].sort());
      await eventually('the instance DOWN in Eureka', async () =>
        (await eurekaHeld()).join() === [...readyAddresses.map((a) => `${a} UP`), `${unreadyAddress} DOWN`].sort().join() ? true : undefined,
      );
    });

    it("is never imported back by the same bridge's Consul and Eureka sources reading those registries", async () => {
      const client = (await pods('client')).find(isPodReady)!;
      const resolves = async (name: string) => (await env.simulator.exec(NS, client.metadata!.name!, 'client', ['getent', 'hosts', name])).exitCode === 0;
      // Services registered by hand after the sinks' writes: once the pod resolves them, the mesh's sources have read past echo.
      const [somePod] = await pods('legacy');
      const r = await consul.api('PUT', '/v1/catalog/register', {
        Node: 'node-loopcheck',
        Address: somePod!.status!.podIP!,
        Service: { ID: 'loopcheck-1', Service: 'loopcheck', Port: 8080 },
        Checks: [{ CheckID: 'service:loopcheck-1', Name: 'loopcheck', Status: 'passing', ServiceID: 'loopcheck-1' }],
      });
      expect(r).toMatchObject({ status: 200, body: true });
      await eurekaClient.register({ app: 'loopcheck', instanceId: 'loopcheck-1', ipAddr: somePod!.status!.podIP!, port: 8080 });
      await eventually(
        'both hand-made services resolving in the pod',
        async () => ((await resolves('loopcheck.service.consul')) && (await resolves('loopcheck.eureka.eureka')) ? true : undefined),
        30_000,
        500,
      );
      expect({ consul: await resolves('echo.service.consul'), eureka: await resolves('echo.eureka.eureka') }).toEqual({ consul: false, eureka: false });
      await consul.api('PUT', '/v1/catalog/deregister', { Node: 'node-loopcheck' });
      await eurekaClient.cancel('loopcheck', 'loopcheck-1');
    });

    it('deregisters from both once the Deployment and its Service are deleted', async () => {
      await deployments.deleteNamespacedDeployment({ name: 'echo', namespace: NS });
      await core.deleteNamespacedService({ name: 'echo', namespace: NS });
      await eventually(
        'echo gone from Consul and Eureka',
        async () => ((await consulCatalog()).length === 0 && (await eurekaHeld()).length === 0 && discovered().length === 0 ? true : undefined),
        60_000,
        250,
      );
    });
  });
});
