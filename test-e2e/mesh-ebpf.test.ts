import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { checkFeatures, status, type Status } from '../bpf/loader.js';
import { PrivateBpffs } from '../devenv/cni.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { getJson, startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { mountPointsOf } from '../devenv/node-simulator/cgroups.js';
import { CHECKOUT } from '../devenv/node-simulator/images.js';
import { startReaper, startServer, type ServerProcess } from '../devenv/processes.js';
import { eventually } from './harness/eventually.js';
import { requireRoot, requireTools } from './harness/netns.js';
import { demoDeployment, isPodReady, type ClientStats } from '../devenv/apps/workloads.js';

// The mesh in eBPF mode on the node simulator: the node agent (`flb cni agent`) serves the mesh's
// CNI plugin and, at the first eBPF pod, loads the programs onto the simulated node's own cgroup
// (never the machine's root) with pins in a bpffs of the run's own; every container of the node's
// pods is in that cgroup. Injected pods get only the unprivileged check: outbound and DNS go to the
// sidecar by the programs, inbound by the one rule the agent writes. One client chose CNI mode
// (flomesh.io/interception-mode: cni): the same agent writes the iptables rules in its namespace instead.
const NS = 'shop';
const NODE = 'ebpf-node';
const MESH = `flbt-${process.pid}`;
const FLB = join(CHECKOUT, 'bin/flb.js');
const log = createLogger('mesh-ebpf-test', 'silent');

/** The sidecar's connection counters by "direction service" (its metrics port, 15010, which interception leaves alone). */
async function connections(podIp: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${podIp}:15010/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  const counts: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('flb_sidecar_connections_total{')) continue;
    const label = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(line)?.[1];
    const key = `${label('direction')} ${label('service')}`;
    counts[key] = (counts[key] ?? 0) + Number(line.split(' ').pop());
  }
  return counts;
}

/** What the kernel still holds of the mesh's programs: their ids, and those of their maps and links. */
async function kernelObjects(loaded: Status): Promise<{ programs: number[]; maps: number[]; links: number[] }> {
  const list = async (kind: 'prog' | 'map' | 'link') =>
    JSON.parse((await execa('bpftool', ['-j', kind, 'show'])).stdout || '[]') as { id: number; map_ids?: number[] }[];
  const programIds = new Set(loaded.programs.map((p) => p.programId));
  const linkIds = new Set(loaded.programs.map((p) => p.linkId));
  const [programs, maps, links] = [await list('prog'), await list('map'), await list('link')];
  const mapIds = new Set(programs.filter((p) => programIds.has(p.id)).flatMap((p) => p.map_ids ?? []));
  return {
    programs: programs.filter((p) => programIds.has(p.id)).map((p) => p.id),
    maps: maps.filter((m) => mapIds.has(m.id)).map((m) => m.id),
    links: links.filter((l) => linkIds.has(l.id)).map((l) => l.id),
  };
}

describe('the mesh in eBPF mode: interception by the programs the node agent loads', () => {
  let env: DevEnvironment;
  let mesh: MeshComponents | undefined;
  let agent: ServerProcess | undefined;
  let bpffs: PrivateBpffs | undefined;
  let core: CoreV1Api;
  let cgroup: string;
  // The node's side of CNI that is not the pod network's own: the plugin binary, the agent's socket and state.
  const node = mkdtempSync(join(tmpdir(), 'flb-mesh-ebpf-'));
  const reaper = startReaper(node);
  const binDir = join(node, 'bin');
  const socket = join(node, 'cni-agent.sock');

  const pods = async (app: string) => (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${app}` })).items;
  const readyPods = async (app: string) => (await pods(app)).filter(isPodReady);
  /** The client's stats once its calls have reached every one of `servers` (what it saw, when they never do). */
  const callsReachEvery = async (client: V1Pod, servers: V1Pod[], what: string): Promise<ClientStats> => {
    let last: ClientStats | undefined;
    await eventually(
      what,
      async () => {
        last = await getJson<ClientStats>(`http://${client.status!.podIP!}:8081/stats`);
        return last && servers.every((p) => (last!.byPod[p.metadata!.name!] ?? 0) > 0) ? true : undefined;
      },
      30_000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; the client saw ${JSON.stringify(last)}`);
    });
    return last!;
  };
  const natRules = async (pod: V1Pod) => {
    const netns = env.simulator.netnsOf(NS, pod.metadata!.name!);
    if (!netns) throw new Error(`pod ${pod.metadata!.name} has no network namespace on the simulator`);
    return (await execa('ip', ['netns', 'exec', netns, 'iptables-save', '-t', 'nat'])).stdout;
  };
  const stopAll = async () => {
    await mesh?.stop();
    mesh = undefined;
    // Pods go first: their CNI DEL still reaches the agent.
    await env?.stop();
    await agent?.stop();
    agent = undefined;
    await bpffs?.unmount();
    bpffs = undefined;
  };

  beforeAll(async () => {
    requireRoot('the mesh eBPF end-to-end test');
    await requireTools(['bpftool', 'findmnt', 'iptables-save']);
    mkdirSync(binDir);
    bpffs = await PrivateBpffs.mount();
    env = await startDevEnvironment({
      log,
      nodes: [{ name: NODE, zone: 'zone-a' }],
      backoffBaseMs: 1000,
      podNetwork: { cniBinDirs: [binDir], cniEnv: { FLB_CNI_AGENT_SOCKET: socket, FLB_CNI_LOG: join(node, 'flb-cni.log') } },
    });
    cgroup = env.simulator.cgroupOf(NODE)!;
    const features = await checkFeatures({ ...(cgroup ? { cgroup } : {}), bpffs: bpffs.path });
    if (!cgroup || !features.ok) {
      throw new Error(
        `eBPF mode cannot run on the simulated node: ${cgroup ? features.missing.join('; ') : 'the simulator found no cgroup v2 hierarchy (its log says why)'}`,
      );
    }
    // The agent first, as its DaemonSet would: once the plugin is chained, a sandbox without the agent fails (try again later).
    agent = startServer(
      'flb-cni-agent',
      process.execPath,
      [
        FLB,
        'cni',
        'agent',
        '--socket',
        socket,
        '--state-dir',
        join(node, 'state'),
        '--kubeconfig',
        env.plane.kubeconfigPath,
        '--node-name',
        NODE,
        '--mesh',
        MESH,
        '--bpf-cgroup',
        cgroup,
        '--bpffs',
        bpffs.path,
      ],
      join(node, 'cni-agent.log'),
      { ...process.env, FLB_LOG_FORMAT: 'json' },
    );
    await eventually('the CNI agent listening', async () => {
      if (!agent!.isRunning()) throw new Error(`flb cni agent exited (${await agent!.exited}):\n${agent!.logTail()}`);
      return existsSync(socket) ? true : undefined;
    });
    await execa(process.execPath, [FLB, 'cni', 'install', '--conf-dir', env.network.cniConfDir, '--bin-dir', binDir]);

    mesh = await startMeshComponents(env, { mesh: { interception: { mode: 'ebpf' } } });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    const apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually(`the default ServiceAccount of ${NS}`, () => core.readNamespacedServiceAccount({ name: 'default', namespace: NS }));
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] } },
    });
    await apps.createNamespacedDeployment({ namespace: NS, body: demoDeployment('echo', 2, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    await apps.createNamespacedDeployment({
      namespace: NS,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }, 5),
    });
    const cniClient = demoDeployment('client-cni', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }, 5);
    cniClient.spec!.template.metadata!.annotations = { 'flomesh.io/interception-mode': 'cni' };
    await apps.createNamespacedDeployment({ namespace: NS, body: cniClient });
    // A pod whose traffic is not intercepted fails its validation, and would only be retried: said at once.
    const validationFailed = (pod: V1Pod) =>
      pod.status?.initContainerStatuses?.some(
        (s) => s.name === 'flb-validation' && [s.state?.terminated, s.lastState?.terminated].some((t) => t !== undefined && t.exitCode !== 0),
      );
    const outcome = await eventually(
      'the injected pods Ready',
      async () => {
        const all = [...(await pods('echo')), ...(await pods('client')), ...(await pods('client-cni'))];
        const failed = all.find(validationFailed);
        if (failed) return { failed };
        return all.filter(isPodReady).length === 4 ? { failed: undefined } : undefined;
      },
      120_000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\nlast lines of the CNI agent's log:\n${agent?.logTail()}`);
    });
    if (outcome.failed) {
      const validation = env.simulator.logFile(outcome.failed, 'flb-validation');
      throw new Error(`pod ${outcome.failed.metadata!.name} failed its flb-validation:\n${validation ? readFileSync(validation, 'utf8').trim() : '(no log)'}`);
    }
  });
  afterAll(async () => {
    await stopAll();
    rmSync(node, { recursive: true, force: true });
    await reaper.dismiss();
  });

  it("loads the programs onto the node's cgroup at the first eBPF pod and registers each injected pod, with only the inbound rule", async () => {
    const loaded = await status({ mesh: MESH, bpffs: bpffs!.path });
    expect(loaded).toMatchObject({ loaded: true, complete: true, cgroup, namespaces: 3 });
    const injected = [...(await pods('echo')), ...(await pods('client'))];
    for (const pod of injected) {
      // Every container of the pod is in the node's cgroup, under the pod's own folder, as a kubelet places them.
      expect(readFileSync(join(cgroup, 'kubepods', `pod${pod.metadata!.uid}`, 'cgroup.procs'), 'utf8').trim()).not.toBe('');
      const rules = await natRules(pod);
      expect(rules).toMatch(/-A FLB_IN_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15003/);
      expect(rules).not.toMatch(/FLB_OUTPUT|FLB_OUT_REDIRECT|FLB_DNS/);
    }
    const registered = readFileSync(agent!.logFile, 'utf8')
      .split('\n')
      .filter((line) => line.includes('registered with the eBPF programs'))
      .map((line) => (JSON.parse(line) as { container: string }).container);
    expect(registered.sort()).toEqual(injected.map((p) => p.metadata!.uid!).sort());
  });

  it('injects no privileged init container: only the unprivileged check, which finds the redirect in place', async () => {
    const [client] = await readyPods('client');
    const spec = client!.spec!;
    expect(spec.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
    for (const c of [...spec.initContainers!, ...spec.containers]) {
      const security = c.securityContext ?? {};
      expect({ container: c.name, privileged: security.privileged ?? false, added: security.capabilities?.add ?? [] }).toEqual({
        container: c.name,
        privileged: false,
        added: [],
      });
    }
    const validation = client!.status!.initContainerStatuses!.find((s) => s.name === 'flb-validation')!;
    expect(validation.state?.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(readFileSync(env.simulator.logFile(client!, 'flb-validation')!, 'utf8')).toMatch(/traffic interception is in place/);
  });

  it("calls by name go out through the client's sidecar and in through each echo pod's inbound port", async () => {
    const [client] = await readyPods('client');
    const echoes = await readyPods('echo');
    const last = await callsReachEvery(client!, echoes, 'calls reaching both echo pods');
    expect(Object.keys(last.byPod).sort()).toEqual(echoes.map((p) => p.metadata!.name!).sort());
    // The client only knows the name: its sidecar answered the DNS query (UDP 53, redirected by the programs).
    const getent = await env.simulator.exec(NS, client!.metadata!.name!, 'client', ['getent', 'hosts', 'echo']);
    const svc = await core.readNamespacedService({ name: 'echo', namespace: NS });
    expect(getent.stdout).toContain(svc.spec!.clusterIP!);
    // Counted by the client's sidecar for the Service, and by each echo pod's inbound listener (15003) for its port.
    expect((await connections(client!.status!.podIP!))['outbound echo.shop']).toBeGreaterThan(0);
    for (const echo of echoes) expect((await connections(echo.status!.podIP!))['inbound http']).toBeGreaterThan(0);
  });

  it('a pod that chose CNI mode gets the whole rule set in its namespace, is not registered, and reaches the echo pods by name', async () => {
    const [client] = await readyPods('client-cni');
    expect(client!.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
    expect(JSON.parse(client!.metadata!.annotations!['flomesh.io/interception']!)).toMatchObject({ mode: 'cni' });
    const rules = await natRules(client!);
    expect(rules).toMatch(/-A FLB_OUT_REDIRECT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j REDIRECT --to-ports 15001/);
    expect(rules).toMatch(/-A FLB_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053/);
    // The eBPF programs leave it alone: only the two echo pods and the eBPF client are registered.
    expect(await status({ mesh: MESH, bpffs: bpffs!.path })).toMatchObject({ namespaces: 3 });
    const outcomes = readFileSync(agent!.logFile, 'utf8')
      .split('\n')
      .filter((line) => line.includes(client!.metadata!.uid!))
      .map((line) => JSON.parse(line) as { msg: string; mode?: string })
      .filter((line) => line.mode !== undefined);
    expect(outcomes).toEqual([expect.objectContaining({ mode: 'cni', msg: 'interception rules applied' })]);
    const echoes = await readyPods('echo');
    await callsReachEvery(client!, echoes, 'calls from the CNI-mode client reaching both echo pods');
    expect((await connections(client!.status!.podIP!))['outbound echo.shop']).toBeGreaterThan(0);
  });

  it('leaves nothing of the run in the kernel, the bpffs or the cgroups once stopped', async () => {
    const loaded = await status({ mesh: MESH, bpffs: bpffs!.path });
    const bpffsPath = bpffs!.path;
    const root = join(cgroup, '..');
    expect(await kernelObjects(loaded)).toMatchObject({ programs: expect.arrayContaining([expect.any(Number)]) as unknown });
    await stopAll();
    expect(await mountPointsOf('bpf')).not.toContain(bpffsPath);
    expect(existsSync(root)).toBe(false);
    // The kernel frees programs and maps an RCU grace period after their last pin or descriptor.
    await eventually(
      'the programs, maps and links freed',
      async () => {
        const left = await kernelObjects(loaded);
        return left.programs.length + left.maps.length + left.links.length === 0 ? true : undefined;
      },
      5_000,
    );
  });
});
