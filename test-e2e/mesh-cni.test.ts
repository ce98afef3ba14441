import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { getJson, startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { CHECKOUT } from '../devenv/node-simulator/images.js';
import { startReaper, startServer, type ServerProcess } from '../devenv/processes.js';
import { eventually } from './harness/eventually.js';
import { requireRoot } from './harness/netns.js';
import { demoDeployment, isPodReady, type ClientStats } from '../devenv/apps/workloads.js';

// The mesh in CNI mode, as a cluster that cannot admit privileged init containers runs it: the
// node agent (`flb cni agent`) serves the mesh's CNI plugin, which `flb cni install` chained into
// the pod network's CNI configuration; the mesh settings say interception mode cni. Injected pods
// get their nat rules from the agent while their sandbox is made, and only an unprivileged check.
const NS = 'shop';
const PLAIN_NS = 'plain';
const NODE = 'cni-node';
const FLB = join(CHECKOUT, 'bin/flb.js');
const log = createLogger('mesh-cni-test', 'silent');

describe('the mesh in CNI mode: interception by the CNI plugin and node agent', () => {
  let env: DevEnvironment;
  let mesh: MeshComponents;
  let agent: ServerProcess;
  let core: CoreV1Api;
  // The node's side of CNI that is not the pod network's own: the plugin binary, the agent's socket and state.
  const node = mkdtempSync(join(tmpdir(), 'flb-mesh-cni-'));
  const reaper = startReaper(node);
  const binDir = join(node, 'bin');
  const socket = join(node, 'cni-agent.sock');
  let installed: { stdout: string; exitCode?: number };

  const pods = async (namespace: string, app: string) => (await core.listNamespacedPod({ namespace, labelSelector: `app=${app}` })).items;
  const natRules = async (namespace: string, pod: string) => {
    const netns = env.simulator.netnsOf(namespace, pod);
    if (!netns) throw new Error(`pod ${namespace}/${pod} has no network namespace on the simulator`);
    return (await execa('ip', ['netns', 'exec', netns, 'iptables-save', '-t', 'nat'])).stdout;
  };

  beforeAll(async () => {
    requireRoot('the mesh CNI end-to-end test');
    mkdirSync(binDir);
    env = await startDevEnvironment({
      log,
      nodes: [{ name: NODE, zone: 'zone-a' }],
      backoffBaseMs: 1000,
      podNetwork: { cniBinDirs: [binDir], cniEnv: { FLB_CNI_AGENT_SOCKET: socket, FLB_CNI_LOG: join(node, 'flb-cni.log') } },
    });
    // The agent first, as its DaemonSet would: once the plugin is chained, a sandbox without the agent fails (try again later).
    agent = startServer(
      'flb-cni-agent',
      process.execPath,
      [FLB, 'cni', 'agent', '--socket', socket, '--state-dir', join(node, 'state'), '--kubeconfig', env.plane.kubeconfigPath, '--node-name', NODE],
      join(node, 'cni-agent.log'),
      { ...process.env, FLB_LOG_FORMAT: 'json' },
    );
    await eventually('the CNI agent listening', async () => {
      if (!agent.isRunning()) throw new Error(`flb cni agent exited (${await agent.exited}):\n${agent.logTail()}`);
      return existsSync(socket) ? true : undefined;
    });
    installed = await execa(process.execPath, [FLB, 'cni', 'install', '--conf-dir', env.network.cniConfDir, '--bin-dir', binDir], { reject: false });

    mesh = await startMeshComponents(env, { mesh: { interception: { mode: 'cni' } } });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    const apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await core.createNamespace({ body: { metadata: { name: PLAIN_NS } } });
    for (const namespace of [NS, PLAIN_NS]) {
      await eventually(`the default ServiceAccount of ${namespace}`, () => core.readNamespacedServiceAccount({ name: 'default', namespace }));
    }
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] } },
    });
    await apps.createNamespacedDeployment({ namespace: NS, body: demoDeployment('echo', 2, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }, 5),
    });
    // The same CNI chain, a namespace without injection: the agent must leave this pod alone.
    await apps.createNamespacedDeployment({ namespace: PLAIN_NS, body: demoDeployment('echo', 1, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    await eventually(
      'the injected and the plain pods Ready',
      async () =>
        (await pods(NS, 'echo')).filter(isPodReady).length === 2 &&
        (await pods(NS, 'client')).filter(isPodReady).length === 1 &&
        (await pods(PLAIN_NS, 'echo')).filter(isPodReady).length === 1
          ? true
          : undefined,
      120_000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\nlast lines of the CNI agent's log:\n${agent.logTail()}`);
    });
  });
  afterAll(async () => {
    await mesh?.stop();
    // Pods go first: their CNI DEL still reaches the agent.
    await env?.stop();
    await agent?.stop();
    rmSync(node, { recursive: true, force: true });
    await reaper.dismiss();
  });

  it('flb cni install chained the mesh plugin last into the configuration the pod network reads', () => {
    expect(installed).toMatchObject({ exitCode: 0, stdout: expect.stringContaining(`installed into ${env.network.cniConfDir}`) as unknown });
    expect(env.network.conflist().plugins.map((p) => p.type)).toEqual(['bridge', 'flb-cni']);
    expect(existsSync(join(binDir, 'flb-cni'))).toBe(true);
  });

  it('injects no privileged init container: only the unprivileged check, which finds the redirect in place', async () => {
    const client = (await pods(NS, 'client')).find(isPodReady)!;
    const spec = client.spec!;
    expect(spec.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
    for (const c of [...spec.initContainers!, ...spec.containers]) {
      const security = c.securityContext ?? {};
      expect({ container: c.name, privileged: security.privileged ?? false, added: security.capabilities?.add ?? [] }).toEqual({
        container: c.name,
        privileged: false,
        added: [],
      });
    }
    expect(spec.initContainers![0]).toMatchObject({
      command: ['flb', 'cni', 'validate'],
      securityContext: { runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
    });
    const validation = client.status!.initContainerStatuses!.find((s) => s.name === 'flb-validation')!;
    expect(validation.state?.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(readFileSync(env.simulator.logFile(client, 'flb-validation')!, 'utf8')).toMatch(/traffic interception is in place/);
    expect(client.metadata!.labels?.['flomesh.io/sidecar-injected']).toBe('true');
  });

  it("gives the injected pods the mesh's nat rules from the agent, and the plain pod none", async () => {
    const injected = [...(await pods(NS, 'echo')), ...(await pods(NS, 'client'))];
    for (const pod of injected) {
      const rules = await natRules(NS, pod.metadata!.name!);
      expect(rules).toMatch(/-A FLB_OUT_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15001/);
      expect(rules).toMatch(/-A FLB_IN_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15003/);
      expect(rules).toMatch(/-A OUTPUT -p tcp -j FLB_OUTPUT/);
      expect(rules).toMatch(/-A OUTPUT -p udp -m udp --dport 53 -j FLB_DNS/);
    }
    const [plain] = await pods(PLAIN_NS, 'echo');
    expect(await natRules(PLAIN_NS, plain!.metadata!.name!)).not.toMatch(/FLB_/);
    // The agent names the sandboxes it programmed (the runtime's container id is the pod's uid here).
    const programmed = readFileSync(agent.logFile, 'utf8')
      .split('\n')
      .filter((line) => line.includes('interception rules applied'))
      .map((line) => (JSON.parse(line) as { container: string }).container);
    expect(programmed.sort()).toEqual(injected.map((p) => p.metadata!.uid!).sort());
  });

  it("calls by name go through the client's sidecar and reach every echo pod", async () => {
    const client = (await pods(NS, 'client')).find(isPodReady)!;
    const echoes = (await pods(NS, 'echo')).filter(isPodReady).map((p) => p.metadata!.name!);
    let last: ClientStats | undefined;
    await eventually(
      'calls reaching both echo pods',
      async () => {
        last = await getJson<ClientStats>(`http://${client.status!.podIP!}:8081/stats`);
        return last && echoes.every((name) => (last!.byPod[name] ?? 0) > 0) ? true : undefined;
      },
      30_000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; the client saw ${JSON.stringify(last)}`);
    });
    expect(Object.keys(last!.byPod).sort()).toEqual([...echoes].sort());
    // The client only knows the name: the sidecar resolved it (captured port 53) and balanced the ClusterIP.
    const getent = await env.simulator.exec(NS, client.metadata!.name!, 'client', ['getent', 'hosts', 'echo']);
    const svc = await core.readNamespacedService({ name: 'echo', namespace: NS });
    expect(getent.stdout).toContain(svc.spec!.clusterIP!);
  });
});
