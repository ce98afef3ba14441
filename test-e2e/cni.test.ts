import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import { API_VERSION, MeshSchema, parseDocument, InterceptionSchema } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { CniAgent } from '../cni/agent.js';
import { verifyRules } from '../cni/iptables.js';
import { repairPass } from '../cni/repair.js';
import { injectPod } from '../injector/inject.js';
import { CniError, CniRuntime, type Conflist, type Sandbox } from './harness/cni-runtime.js';
import { startControlPlane, type ControlPlane } from './harness/controlplane.js';
import { eventually } from './harness/eventually.js';
import { createNetns, deleteNetns, removeStaleNamespaces, requireRoot, requireTools, type Netns } from './harness/netns.js';

/**
 * The CNI plugin driven as a container runtime drives it: chained after the Debian `bridge` and
 * `host-local` reference plugins, for pods served by the real kube-apiserver, with the node agent
 * programming the pod's namespace.
 */
const pluginBuild = fileURLToPath(new URL('../cni/plugin/build/', import.meta.url));
const conflist: Conflist = {
  cniVersion: '1.0.0',
  name: 'flb-test-net',
  plugins: [
    { type: 'bridge', bridge: 'flbtbr0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.215.0.0/24' }]], dataDir: '' } },
    { type: 'flb-cni' },
  ],
};

describe('the CNI plugin and node agent', () => {
  let plane: ControlPlane;
  let core: CoreV1Api;
  let host: Netns;
  const sandboxes: Netns[] = [];
  let agent: CniAgent;
  let runtime: CniRuntime;
  let work: string;
  const log = createLogger('cni-test', 'error');

  const sandbox = async (pod: string): Promise<Sandbox> => {
    const ns = await createNetns(pod.slice(0, 8));
    sandboxes.push(ns);
    return { containerId: `c-${pod}-${sandboxes.length}`, netns: ns.path, ifName: 'eth0', args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=x` };
  };
  const flbChains = async (s: Sandbox) => {
    const ns = sandboxes.find((n) => n.path === s.netns)!;
    return (await ns.exec('iptables-save', ['-t', 'nat'])).stdout.split('\n').filter((l) => l.includes('FLB_'));
  };
  const startAgent = async () => {
    agent = new CniAgent({
      socketPath: join(work, 'agent.sock'),
      stateDir: join(work, 'state'),
      log,
      getPod: async (namespace, name) => core.readNamespacedPod({ namespace, name }).catch((e: { code?: number }) => (e.code === 404 ? undefined : Promise.reject(e))),
    });
    await agent.start();
  };

  beforeAll(async () => {
    requireRoot('the CNI tests');
    await requireTools(['ip', 'nsenter', 'iptables-save', '/usr/lib/cni/bridge', '/usr/lib/cni/host-local', `${pluginBuild}flb-cni`]);
    await removeStaleNamespaces();
    work = mkdtempSync(join(tmpdir(), 'flb-cni-test-'));
    conflist.plugins[0]!.ipam = { type: 'host-local', ranges: [[{ subnet: '10.215.0.0/24' }]], dataDir: join(work, 'ipam') };
    plane = await startControlPlane();
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('ServiceAccount default', () => core.readNamespacedServiceAccount({ name: 'default', namespace: 'shop' }));
    // Pods as the injector makes them in CNI mode (and one without a sidecar).
    const cniMesh = MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode: 'cni' } });
    for (const [name, meshed] of [['meshed', true], ['meshed-gc', true], ['plain', false]] as const) {
      const pod: V1Pod = { metadata: { name, namespace: 'shop' }, spec: { containers: [{ name: 'app', image: 'example/app' }] } };
      const result = injectPod(pod, { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } }, { mesh: cniMesh, nativeSidecars: true, version: 'test' });
      const body = meshed && result.action === 'inject' ? (jsonpatch.applyPatch(structuredClone(pod), result.patch, true, false).newDocument as V1Pod) : pod;
      await core.createNamespacedPod({ namespace: 'shop', body });
    }
    host = await createNetns('node');
    runtime = new CniRuntime(['/usr/lib/cni', pluginBuild], host.name, { FLB_CNI_AGENT_SOCKET: join(work, 'agent.sock'), FLB_CNI_LOG: join(work, 'cni.log') });
    await startAgent();
  });
  afterAll(async () => {
    await agent?.stop();
    for (const ns of sandboxes) await deleteNetns(ns);
    await deleteNetns(host);
    await plane?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('answers VERSION itself, with spec 1.0.0 and 1.1.0', async () => {
    const run = await runtime.exec('VERSION', 'flb-cni', { cniVersion: '1.0.0' }, { containerId: '', netns: '', ifName: '', args: '' });
    expect(run.result).toEqual({ cniVersion: '1.1.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  let meshed: Sandbox;
  it('ADD: programs a meshed pod and passes prevResult through unchanged', async () => {
    meshed = await sandbox('meshed');
    const runs = await runtime.add(conflist, meshed);
    expect(runs.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(runs[1]!.result).toEqual(runs[0]!.result);
    expect(JSON.stringify(runs[0]!.result)).toContain('10.215.0.');
    const pod = await core.readNamespacedPod({ name: 'meshed', namespace: 'shop' });
    const settings = parseDocument(InterceptionSchema, JSON.parse(pod.metadata!.annotations!['flomesh.io/interception']!), 'annotation');
    expect((await verifyRules(settings, { netns: meshed.netns })).problems).toEqual([]);
    await runtime.check(conflist, meshed);
  });

  it('does nothing for a pod without a sidecar', async () => {
    const plain = await sandbox('plain');
    await runtime.add(conflist, plain);
    expect(await flbChains(plain)).toEqual([]);
  });

  it('DEL removes what ADD made, and DEL of something never added succeeds', async () => {
    await runtime.del(conflist, meshed);
    expect(await flbChains(meshed)).toEqual([]);
    await runtime.del(conflist, meshed);
    await runtime.del(conflist, { containerId: 'never-added', netns: '/var/run/netns/does-not-exist', ifName: 'eth0', args: '' });
  });

  it('GC (spec 1.1) cleans attachments the runtime no longer has', async () => {
    const leftover = await sandbox('meshed-gc');
    await runtime.add(conflist, leftover);
    expect((await flbChains(leftover)).length).toBeGreaterThan(0);
    const gc = await runtime.exec('GC', 'flb-cni', { cniVersion: '1.1.0', name: 'flb-test-net', 'cni.dev/valid-attachments': [] }, { containerId: '', netns: '', ifName: '', args: '' });
    expect(gc.exitCode).toBe(0);
    expect(await flbChains(leftover)).toEqual([]);
    const status = await runtime.exec('STATUS', 'flb-cni', { cniVersion: '1.1.0', name: 'flb-test-net' }, { containerId: '', netns: '', ifName: '', args: '' });
    expect(status.exitCode).toBe(0);
  });

  it.each([
    ['a config that is not JSON', '{"cniVersion": "1.0.0", ', 6, /not JSON/],
    ['an unknown CNI version', JSON.stringify({ cniVersion: '9.9.9', name: 'x', prevResult: {} }), 1, /CNI version 9.9.9 is not supported/],
    ['no prevResult (not chained)', JSON.stringify({ cniVersion: '1.0.0', name: 'x' }), 7, /chained plugin/],
  ])('refuses %s with a CNI error result', async (_what, stdin, code, message) => {
    const s = await sandbox('meshed');
    const run = await runtime.exec('ADD', 'flb-cni', stdin, s);
    expect(run.exitCode).toBe(1);
    expect(run.result).toMatchObject({ code, msg: expect.stringMatching(message) });
    expect(await flbChains(s)).toEqual([]);
  });

  it('refuses a missing network namespace', async () => {
    const run = await runtime.exec('ADD', 'flb-cni', { cniVersion: '1.0.0', name: 'x', prevResult: { cniVersion: '1.0.0' } }, { containerId: 'c-x', netns: '/var/run/netns/flbt-missing', ifName: 'eth0', args: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=meshed' });
    expect(run.result).toMatchObject({ code: 4, msg: 'the network namespace /var/run/netns/flbt-missing does not exist' });
  });

  it('the repair loop deletes controller-owned pods whose validation failed, and labels the others', async () => {
    const apps = plane.kubeConfig.makeApiClient(AppsV1Api);
    const cniMesh = MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode: 'cni' } });
    const template: V1Pod = { metadata: { labels: { app: 'early' } }, spec: { nodeName: 'node-a', containers: [{ name: 'app', image: 'example/app' }] } };
    const injected = injectPod(template, { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } }, { mesh: cniMesh, nativeSidecars: true, version: 'test' });
    const podTemplate = jsonpatch.applyPatch(structuredClone(template), (injected as { patch: jsonpatch.Operation[] }).patch, true, false).newDocument;
    await apps.createNamespacedReplicaSet({ namespace: 'shop', body: { metadata: { name: 'early' }, spec: { replicas: 1, selector: { matchLabels: { app: 'early' } }, template: podTemplate } } });
    await core.createNamespacedPod({ namespace: 'shop', body: { ...structuredClone(podTemplate), metadata: { name: 'early-bare', labels: { role: 'bare' }, annotations: podTemplate.metadata!.annotations! } } });
    const first = await eventually('the ReplicaSet pod', async () => (await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=early' })).items[0]);
    // No kubelet here: report, as a kubelet would, that flb-validation failed in both pods.
    const failValidation = async (name: string) => {
      const pod = await core.readNamespacedPod({ name, namespace: 'shop' });
      pod.status = {
        phase: 'Pending',
        initContainerStatuses: [
          { name: 'flb-validation', image: 'flomesh/flb-mesh:latest', imageID: '', ready: false, restartCount: 1, state: { terminated: { exitCode: 1, reason: 'Error' } } },
        ],
      };
      await core.replaceNamespacedPodStatus({ name, namespace: 'shop', body: pod });
    };
    await failValidation(first.metadata!.name!);
    await failValidation('early-bare');
    const result = await repairPass({ core, nodeName: 'node-a', mode: 'delete', log });
    expect(result).toEqual({ deleted: [`shop/${first.metadata!.name}`], labelled: ['shop/early-bare'] });
    const replacement = await eventually('a replacement pod', async () => {
      const pods = (await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=early' })).items.filter((p) => p.metadata!.name !== first.metadata!.name && !p.metadata!.deletionTimestamp);
      return pods[0];
    });
    expect(replacement.spec!.nodeName).toBe('node-a');
    expect((await core.readNamespacedPod({ name: 'early-bare', namespace: 'shop' })).metadata!.labels).toMatchObject({ 'flomesh.io/cni-repair': 'broken' });
    const events = await core.listNamespacedEvent({ namespace: 'shop', fieldSelector: 'reason=InterceptionMissing' });
    expect(events.items.map((e) => e.involvedObject.name).sort()).toEqual([first.metadata!.name, 'early-bare'].sort());
    // A second pass finds nothing more to do.
    expect(await repairPass({ core, nodeName: 'node-a', mode: 'delete', log })).toEqual({ deleted: [], labelled: [] });
  });

  it('fails ADD clearly when the agent is down, so no pod starts without its rules', async () => {
    await agent.stop();
    try {
      const s = await sandbox('meshed');
      const error = await runtime.add(conflist, s).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(CniError);
      expect((error as CniError).result).toMatchObject({ code: 11, msg: expect.stringContaining('the flb-mesh CNI agent is not reachable') });
      expect(await flbChains(s)).toEqual([]);
      // The plugin logs to its file; stdout carried only the result.
      expect(readFileSync(join(work, 'cni.log'), 'utf8')).toContain('"level":"error","command":"ADD"');
    } finally {
      await startAgent();
    }
  });
});
