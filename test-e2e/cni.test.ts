import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import { API_VERSION, MeshSchema, parseDocument, InterceptionSchema } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { CniAgent, encodeReply, RequestReader, type CniRequest } from '../cni/agent.js';
import { verifyRules } from '../cni/iptables.js';
import { repairPass } from '../cni/repair.js';
import { injectPod } from '../injector/inject.js';
import { CniError, CniRuntime, type Conflist, type Sandbox } from '../devenv/cni.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { eventually } from './harness/eventually.js';
import { createNetns, deleteNetns, removeStaleNamespaces, requireRoot, requireTools, type Netns } from './harness/netns.js';

/**
 * The CNI plugin driven as a container runtime drives it: chained after the Debian `bridge` and
 * `host-local` reference plugins, for pods served by the real kube-apiserver, with the node agent
 * programming the pod's namespace.
 */
// FLB_NATIVE_BUILD=asan: the AddressSanitizer build scripts/test.sh runs these tests against too.
const pluginBuild = fileURLToPath(new URL(`../cni/plugin/build/${process.env.FLB_NATIVE_BUILD ? `${process.env.FLB_NATIVE_BUILD}/` : ''}`, import.meta.url));
const conflist: Conflist = {
  cniVersion: '1.0.0',
  name: 'flb-test-net',
  plugins: [
    { type: 'bridge', bridge: 'flbtbr0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', ranges: [[{ subnet: '10.215.0.0/24' }]], dataDir: '' } },
    { type: 'flb-cni' },
  ],
};

/** BGP VIPs of the pod meshed-vip. */
const VIP = { v4: '10.216.9.100', v6: 'fd0f:216::100' };
const fixtures = fileURLToPath(new URL('./fixtures/', import.meta.url));

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
    return {
      containerId: `c-${pod}-${sandboxes.length}`,
      netns: ns.path,
      ifName: 'eth0',
      args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=${pod};K8S_POD_INFRA_CONTAINER_ID=x`,
    };
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
      getPod: async (namespace, name) =>
        core.readNamespacedPod({ namespace, name }).catch((e: { code?: number }) => (e.code === 404 ? undefined : Promise.reject(e))),
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
    for (const [name, meshed] of [
      ['meshed', true],
      ['meshed-gc', true],
      ['plain', false],
      ['meshed-vip', true],
    ] as const) {
      // meshed-vip's sidecar announces VIPs over BGP; its app port is left out of interception, so the test reaches the app without a sidecar.
      const annotations =
        name === 'meshed-vip' ? { 'flomesh.io/bgp-vips': `${VIP.v4},${VIP.v6}`, 'flomesh.io/inbound-port-exclusion-list': '9300' } : undefined;
      const pod: V1Pod = {
        metadata: { name, namespace: 'shop', ...(annotations ? { annotations } : {}) },
        spec: { containers: [{ name: 'app', image: 'example/app' }] },
      };
      const result = injectPod(
        pod,
        { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } },
        { mesh: cniMesh, nativeSidecars: true, version: 'test' },
      );
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

  it("ADD puts a pod's BGP VIPs on its lo once, traffic routed to them reaches the app serving them, and DEL takes them off", async () => {
    const vipPod = await sandbox('meshed-vip');
    const ns = sandboxes.find((n) => n.path === vipPod.netns)!;
    const vipsOnLo = async () =>
      (await ns.exec('ip', ['-o', 'address', 'show', 'dev', 'lo'])).stdout
        .split('\n')
        .map((line) => /inet6? (\S+)/.exec(line)?.[1])
        .filter((a) => a === `${VIP.v4}/32` || a === `${VIP.v6}/128`);
    const runs = await runtime.add(conflist, vipPod);
    expect(runs.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(await vipsOnLo()).toEqual([`${VIP.v4}/32`, `${VIP.v6}/128`]);
    // A repeated ADD (a runtime retrying) adds nothing twice and succeeds; CHECK sees the VIPs.
    expect(
      (await runtime.exec('ADD', 'flb-cni', { ...conflist.plugins[1], cniVersion: '1.0.0', name: conflist.name, prevResult: runs[0]!.result }, vipPod))
        .exitCode,
    ).toBe(0);
    expect(await vipsOnLo()).toEqual([`${VIP.v4}/32`, `${VIP.v6}/128`]);
    await runtime.check(conflist, vipPod);

    // The node routes the VIP to the pod's address, as a router that learnt it over BGP would.
    const podIp = /^(10\.215\.0\.\d+)\//.exec((runs[0]!.result as { ips: { address: string }[] }).ips[0]!.address)![1]!;
    await host.exec('ip', ['route', 'add', `${VIP.v4}/32`, 'via', podIp]);
    const app = execa('ip', [
      'netns',
      'exec',
      ns.name,
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      process.execPath,
      `${fixtures}intercept-vip-app.mjs`,
      '9300',
      VIP.v4,
    ]);
    try {
      await new Promise<void>((resolve, reject) => {
        app.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        app.catch(reject);
      });
      const reached = await host.exec(process.execPath, [`${fixtures}intercept-client.mjs`, 'tcp', VIP.v4, '9300']);
      expect(reached.stdout.trim()).toBe(`vip-app ${VIP.v4} from 10.215.0.1`);
    } finally {
      app.kill('SIGKILL');
      await app.catch(() => undefined);
    }

    await runtime.del(conflist, vipPod);
    expect(await vipsOnLo()).toEqual([]);
    expect(await flbChains(vipPod)).toEqual([]);
  });

  it('GC (spec 1.1) cleans attachments the runtime no longer has', async () => {
    const leftover = await sandbox('meshed-gc');
    await runtime.add(conflist, leftover);
    expect((await flbChains(leftover)).length).toBeGreaterThan(0);
    const gc = await runtime.exec(
      'GC',
      'flb-cni',
      { cniVersion: '1.1.0', name: 'flb-test-net', 'cni.dev/valid-attachments': [] },
      { containerId: '', netns: '', ifName: '', args: '' },
    );
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
    const run = await runtime.exec(
      'ADD',
      'flb-cni',
      { cniVersion: '1.0.0', name: 'x', prevResult: { cniVersion: '1.0.0' } },
      { containerId: 'c-x', netns: '/var/run/netns/flbt-missing', ifName: 'eth0', args: 'K8S_POD_NAMESPACE=shop;K8S_POD_NAME=meshed' },
    );
    expect(run.result).toMatchObject({ code: 4, msg: 'the network namespace /var/run/netns/flbt-missing does not exist' });
  });

  it('the repair loop deletes controller-owned pods whose validation failed, and labels the others', async () => {
    const apps = plane.kubeConfig.makeApiClient(AppsV1Api);
    const cniMesh = MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode: 'cni' } });
    const template: V1Pod = { metadata: { labels: { app: 'early' } }, spec: { nodeName: 'node-a', containers: [{ name: 'app', image: 'example/app' }] } };
    const injected = injectPod(
      template,
      { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } },
      { mesh: cniMesh, nativeSidecars: true, version: 'test' },
    );
    const podTemplate = jsonpatch.applyPatch(structuredClone(template), (injected as { patch: jsonpatch.Operation[] }).patch, true, false).newDocument;
    await apps.createNamespacedReplicaSet({
      namespace: 'shop',
      body: { metadata: { name: 'early' }, spec: { replicas: 1, selector: { matchLabels: { app: 'early' } }, template: podTemplate } },
    });
    await core.createNamespacedPod({
      namespace: 'shop',
      body: { ...structuredClone(podTemplate), metadata: { name: 'early-bare', labels: { role: 'bare' }, annotations: podTemplate.metadata!.annotations! } },
    });
    const first = await eventually(
      'the ReplicaSet pod',
      async () => (await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=early' })).items[0],
    );
    // No kubelet here: report, as a kubelet would, that flb-validation failed in both pods.
    const failValidation = async (name: string) => {
      const pod = await core.readNamespacedPod({ name, namespace: 'shop' });
      pod.status = {
        phase: 'Pending',
        initContainerStatuses: [
          {
            name: 'flb-validation',
            image: 'flomesh/flb-mesh:latest',
            imageID: '',
            ready: false,
            restartCount: 1,
            state: { terminated: { exitCode: 1, reason: 'Error' } },
          },
        ],
      };
      await core.replaceNamespacedPodStatus({ name, namespace: 'shop', body: pod });
    };
    await failValidation(first.metadata!.name!);
    await failValidation('early-bare');
    const result = await repairPass({ core, nodeName: 'node-a', mode: 'delete', log });
    expect(result).toEqual({ deleted: [`shop/${first.metadata!.name}`], labelled: ['shop/early-bare'] });
    const replacement = await eventually('a replacement pod', async () => {
      const pods = (await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=early' })).items.filter(
        (p) => p.metadata!.name !== first.metadata!.name && !p.metadata!.deletionTimestamp,
      );
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
      const error = await runtime.add(conflist, s).then(
        () => undefined,
        (e: unknown) => e,
      );
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

/**
 * The plugin against a stand-in agent that misbehaves on purpose (or, for the escaping, none at
 * all), run as a runtime runs it: CNI_* environment, the config on stdin, the result on stdout.
 */
describe('the CNI plugin when the agent misbehaves', () => {
  let host: Netns;
  let work: string;
  let socketPath: string;
  let server: Server;
  const sockets = new Set<Socket>();
  /** What the stand-in agent does with each connection. */
  let behave: (socket: Socket) => void = () => {};
  /** Requests it read whole. */
  const received: CniRequest[] = [];
  const sandbox: Sandbox = { containerId: 'c-hardening', netns: '/var/run/netns/flbt-none', ifName: 'eth0', args: '' };
  const runtime = (env: Record<string, string> = {}) =>
    new CniRuntime([pluginBuild], host.name, { FLB_CNI_AGENT_SOCKET: socketPath, FLB_CNI_LOG: join(work, 'cni.log'), ...env });
  /** Reads a whole request, then `then` (the agent's answer, or nothing). */
  const readRequest = (then: (socket: Socket, request: CniRequest) => void) => (socket: Socket) => {
    const reader = new RequestReader();
    socket.on('data', (chunk: Buffer) => {
      const outcome = reader.push(chunk);
      if (outcome && 'request' in outcome) {
        received.push(outcome.request);
        then(socket, outcome.request);
      }
    });
  };
  const config = { cniVersion: '1.0.0', name: 'flb-test-net', type: 'flb-cni', prevResult: { cniVersion: '1.0.0' } };
  /** A valid config of `size` bytes. */
  const configOfSize = (size: number) => {
    const text = JSON.stringify({ ...config, pad: '' });
    return `${text.slice(0, -2)}${'x'.repeat(size - text.length)}"}`;
  };

  beforeAll(async () => {
    requireRoot('the CNI plugin tests');
    await requireTools(['ip', 'strace', `${pluginBuild}flb-cni`]);
    host = await createNetns('plugin');
    work = mkdtempSync(join(tmpdir(), 'flb-cni-plugin-'));
    socketPath = join(work, 'agent.sock');
    server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      behave(socket);
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });
  afterEach(() => {
    for (const socket of sockets) socket.destroy();
    received.length = 0;
  });
  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    await deleteNetns(host);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('exits 1, not 0, when the agent answers an exit code above 255', async () => {
    const failure = JSON.stringify({ cniVersion: '1.0.0', code: 100, msg: 'from the agent' });
    behave = readRequest((socket) => socket.end(encodeReply({ exitCode: 256, stdout: failure })));
    const run = await runtime().exec('ADD', 'flb-cni', config, sandbox);
    expect(run.exitCode).toBe(1);
    expect(run.result).toEqual(JSON.parse(failure));
  });

  it('gives up within its deadline with "try again later" when the agent stops reading', async () => {
    behave = (socket) => socket.pause();
    const started = performance.now();
    // 3 MiB: far more than a Unix socket's buffer, so the plugin's sends block.
    const run = await runtime({ FLB_CNI_TIMEOUT_MS: '1000' }).exec('ADD', 'flb-cni', configOfSize(3 * 1024 * 1024), sandbox);
    expect(run.result).toEqual({
      cniVersion: '1.0.0',
      code: 11,
      msg: 'the flb-mesh CNI agent did not take the request within 1000 ms; is it overloaded or stuck?',
    });
    expect(run.exitCode).toBe(1);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it('gives up within its deadline when the agent reads the request but never answers', async () => {
    behave = readRequest(() => {});
    const started = performance.now();
    const run = await runtime({ FLB_CNI_TIMEOUT_MS: '1000' }).exec('ADD', 'flb-cni', config, sandbox);
    expect(run.result).toEqual({ cniVersion: '1.0.0', code: 11, msg: 'the flb-mesh CNI agent did not answer within 1000 ms; is it overloaded or stuck?' });
    expect(received).toHaveLength(1);
    expect(performance.now() - started).toBeLessThan(5000);
  });

  it('refuses a config above 4 MiB with a CNI error instead of passing on the first 4 MiB', async () => {
    behave = readRequest((socket, request) =>
      socket.end(encodeReply({ exitCode: 0, stdout: JSON.stringify({ cniVersion: '1.0.0', stdinBytes: request.stdin.length }) })),
    );
    const exactly = await runtime().exec('ADD', 'flb-cni', configOfSize(4 * 1024 * 1024), sandbox);
    expect(exactly.result).toEqual({ cniVersion: '1.0.0', stdinBytes: 4 * 1024 * 1024 });
    const larger = await runtime().exec('ADD', 'flb-cni', configOfSize(4 * 1024 * 1024 + 1), sandbox);
    expect(larger.result).toEqual({ cniVersion: '1.0.0', code: 7, msg: 'the network configuration on stdin is larger than 4 MiB' });
    expect(larger.exitCode).toBe(1);
    expect(received).toHaveLength(1);
  });

  it('reads stdin whole when a read is interrupted (EINTR)', async () => {
    behave = readRequest((socket, request) => socket.end(encodeReply({ exitCode: 0, stdout: request.stdin })));
    const plugin = `${pluginBuild}flb-cni`;
    const input = JSON.stringify(config);
    const env = {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c-eintr',
      CNI_NETNS: '',
      CNI_IFNAME: 'eth0',
      CNI_ARGS: '',
      CNI_PATH: pluginBuild,
      FLB_CNI_AGENT_SOCKET: socketPath,
      FLB_CNI_LOG: join(work, 'cni.log'),
    };
    // Which read() is the first of stdin (the sanitizer build's loader reads libraries first), then
    // the same run with that read failing with EINTR once, as a signal would make it.
    const trace = join(work, 'reads.trace');
    await execa('strace', ['-o', trace, '-e', 'trace=read', plugin], { input, env });
    const reads = readFileSync(trace, 'utf8')
      .split('\n')
      .filter((line) => line.startsWith('read('));
    const firstOfStdin = reads.findIndex((line) => line.startsWith('read(0,')) + 1;
    expect(firstOfStdin).toBeGreaterThan(0);
    const run = await execa('strace', ['-o', trace, '-e', 'trace=read', '-e', `inject=read:error=EINTR:when=${firstOfStdin}`, plugin], {
      input,
      env,
      reject: false,
    });
    expect(readFileSync(trace, 'utf8')).toContain('read(0, 0x');
    expect(readFileSync(trace, 'utf8')).toContain('= -1 EINTR (Interrupted system call) (INJECTED)');
    expect({ exitCode: run.exitCode, result: JSON.parse(run.stdout) as unknown }).toEqual({ exitCode: 0, result: config });
  });

  it('escapes the container id, socket path and version in its error result and its log line', async () => {
    const missingSocket = join(work, 'no "agent" \\ here\n.sock');
    const containerId = 'c-"quoted"\\\u0001';
    const log = join(work, 'escaping.log');
    const run = await new CniRuntime([pluginBuild], host.name, { FLB_CNI_AGENT_SOCKET: missingSocket, FLB_CNI_LOG: log }).exec(
      'ADD',
      'flb-cni',
      '{"cniVersion":"1.0.0\\",\\"code\\":0,\\"x\\":\\"","name":"x"}',
      { ...sandbox, containerId },
    );
    expect(run.exitCode).toBe(1);
    expect(run.result).toEqual({
      cniVersion: '1.0.0',
      code: 11,
      msg: `the flb-mesh CNI agent is not reachable at ${missingSocket} (No such file or directory); is the flb-mesh-cni DaemonSet running on this node?`,
    });
    const logged = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, string>);
    expect(logged).toEqual([expect.objectContaining({ level: 'error', command: 'ADD', container: containerId, msg: (run.result as { msg: string }).msg })]);
  });
});
