// The chart installed in CNI mode (mesh.interception.mode: cni) onto the test control plane with
// pods that run: its node agent DaemonSet runs on the simulated node as the kubelet would run it
// (host network, the node's CNI folders and /var/run/netns by hostPath), its installer chains the
// mesh's plugin into the pod network's CNI configuration, the control plane's own pods start
// through that chain, and injected pods get their interception rules from the agent, with no
// privileged init container. When the DaemonSet's pod stops, its preStop takes the plugin out of
// the chain, so the node starts pods again without the agent.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { getJson } from '../devenv/mesh.js';
import { demoDeployment, isPodReady, type ClientStats } from '../devenv/apps/workloads.js';
import { CHART_DIR, Helm } from './harness/chart.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';

const MESH_NS = 'flomesh';
const APP_NS = 'shop';
const PLAIN_NS = 'plain';
const NODE = 'chart-cni';

describe('the chart in CNI mode on the test control plane: the node agent DaemonSet and its plugin', () => {
  let env: DevEnvironment;
  let helm: Helm;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  // The node's CNI plugin folder the DaemonSet installs into (cni.binDir); its configuration folder is the pod network's.
  const binDir = mkdtempSync(join(tmpdir(), 'flb-chart-cni-bin-'));

  const pods = async (namespace: string, selector?: string) =>
    (await core.listNamespacedPod({ namespace, ...(selector ? { labelSelector: selector } : {}) })).items;
  const describePods = async (namespace: string) =>
    (await pods(namespace))
      .map((pod) => {
        const states = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].map((s) => {
          const file = env.simulator.logFile(pod, s.name);
          const tail = file && existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').slice(-5).join('\n      ') : '';
          return `  ${s.name}: ${JSON.stringify(s.state)}\n      ${tail}`;
        });
        return `${pod.metadata?.name}: ${pod.status?.phase} ready=${isPodReady(pod)} ${JSON.stringify(pod.status?.conditions?.filter((c) => c.status !== 'True'))}\n${states.join('\n')}`;
      })
      .join('\n');
  const waitOrExplain = async <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number) =>
    eventually(what, probe, timeoutMs).catch(async (error: unknown) => {
      throw new Error(
        `${(error as Error).message}\n${await describePods(MESH_NS)}\n${await describePods(APP_NS).catch(() => '')}\n${await describePods(PLAIN_NS).catch(() => '')}`,
        { cause: error },
      );
    });
  const pluginTypes = () => env.network.conflist().plugins.map((p) => p.type);
  const natRules = async (pod: V1Pod) => {
    const netns = env.simulator.netnsOf(pod.metadata!.namespace!, pod.metadata!.name!);
    if (!netns) throw new Error(`pod ${pod.metadata!.name} has no network namespace on the simulator`);
    return (await execa('ip', ['netns', 'exec', netns, 'iptables-save', '-t', 'nat'])).stdout;
  };

  beforeAll(async () => {
    requireRoot('the chart CNI end-to-end test');
    env = await startDevEnvironment({
      log: createLogger('chart-cni-test', 'silent'),
      nodes: [{ name: NODE, zone: 'zone-a' }],
      controlPlane: { apiserverArgs: ['--enable-aggregator-routing=true'] },
      serviceProxy: true,
      backoffBaseMs: 1000,
      // The runtime looks for plugins where the DaemonSet puts them; the plugin dials the agent's default socket.
      podNetwork: { cniBinDirs: [binDir] },
    });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    helm = new Helm(env.plane.kubeconfigPath);
  });
  afterAll(async () => {
    helm?.dispose();
    await env?.stop();
    rmSync(binDir, { recursive: true, force: true });
  });

  it("runs the agent on the node's network, chains the plugin into the pod network, and the control plane starts through it", async () => {
    const install = await helm.run([
      'install',
      'flb',
      CHART_DIR,
      '--namespace',
      MESH_NS,
      '--create-namespace',
      '--set',
      'mesh.interception.mode=cni',
      '--set',
      `cni.confDir=${env.network.cniConfDir}`,
      '--set',
      `cni.binDir=${binDir}`,
    ]);
    expect({ exitCode: install.exitCode, stderr: install.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const running = await waitOrExplain(
      'six control plane pods Ready',
      async () => {
        const ready = (await pods(MESH_NS)).filter(isPodReady);
        return ready.length === 6 ? ready : undefined;
      },
      150_000,
    );
    expect(running.map((p) => p.metadata!.labels!['app.kubernetes.io/name']).sort()).toEqual([
      'flb-bridge',
      'flb-bridge',
      'flb-cni-node',
      'flb-injector',
      'flb-injector',
      'flb-repo',
    ]);
    const agent = running.find((p) => p.metadata!.labels!['app.kubernetes.io/name'] === 'flb-cni-node')!;
    expect(agent.spec!.nodeName).toBe(NODE);
    expect(agent.spec!.hostNetwork).toBe(true);
    expect(pluginTypes()).toEqual(['bridge', 'flb-cni']);
    expect(existsSync(join(binDir, 'flb-cni'))).toBe(true);
  });

  it('injects pods with no privileged init container, gives them their rules from the agent, and their calls by name reach every echo pod', async () => {
    await core.createNamespace({ body: { metadata: { name: APP_NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: APP_NS }));
    await core.createNamespacedService({
      namespace: APP_NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] } },
    });
    await apps.createNamespacedDeployment({ namespace: APP_NS, body: demoDeployment('echo', 2, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    await apps.createNamespacedDeployment({
      namespace: APP_NS,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }, 5),
    });
    const ready = await waitOrExplain(
      'three app pods Ready',
      async () => {
        const all = (await pods(APP_NS)).filter(isPodReady);
        return all.length === 3 ? all : undefined;
      },
      120_000,
    );
    for (const pod of ready) {
      expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
      for (const c of [...pod.spec!.initContainers!, ...pod.spec!.containers]) {
        expect({ container: c.name, privileged: c.securityContext?.privileged ?? false, added: c.securityContext?.capabilities?.add ?? [] }).toEqual({
          container: c.name,
          privileged: false,
          added: [],
        });
      }
      const rules = await natRules(pod);
      expect(rules).toMatch(/-A FLB_OUT_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15001/);
      expect(rules).toMatch(/-A FLB_IN_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15003/);
    }
    // The mesh's own pods went through the same chain and were left alone.
    for (const pod of (await pods(MESH_NS)).filter((p) => !p.spec!.hostNetwork)) expect(await natRules(pod)).not.toMatch(/FLB_/);

    const client = ready.find((p) => p.metadata!.labels!.app === 'client')!;
    const echoes = ready.filter((p) => p.metadata!.labels!.app === 'echo').map((p) => p.metadata!.name!);
    let last: ClientStats | undefined;
    await waitOrExplain(
      'calls reaching both echo pods',
      async () => {
        last = await getJson<ClientStats>(`http://${client.status!.podIP!}:8081/stats`);
        return last && echoes.every((name) => (last!.byPod[name] ?? 0) > 0) ? true : undefined;
      },
      30_000,
    );
    expect(Object.keys(last!.byPod).sort()).toEqual([...echoes].sort());
  });

  it("takes its plugin out of the chain when the agent's pod stops, so the node starts pods again", async () => {
    await apps.deleteNamespacedDaemonSet({ name: 'flb-cni-node', namespace: MESH_NS });
    await waitOrExplain('the plugin out of the chain', async () => (pluginTypes().includes('flb-cni') ? undefined : true), 60_000);
    expect(pluginTypes()).toEqual(['bridge']);
    expect(existsSync(join(binDir, 'flb-cni'))).toBe(false);
    // With the plugin left and no agent, every new sandbox would fail: a pod of a plain namespace starts.
    await core.createNamespace({ body: { metadata: { name: PLAIN_NS } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: PLAIN_NS }));
    await apps.createNamespacedDeployment({ namespace: PLAIN_NS, body: demoDeployment('echo', 1, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    const [plain] = await waitOrExplain(
      'the plain pod Ready',
      async () => {
        const ready = (await pods(PLAIN_NS)).filter(isPodReady);
        return ready.length === 1 ? ready : undefined;
      },
      60_000,
    );
    expect(await natRules(plain!)).not.toMatch(/FLB_/);
  });
});
