import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CoreV1Api } from '@kubernetes/client-node';
import { execa } from 'execa';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { request, type RequestOptions } from 'node:https';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../common/log.js';
import { defaultCgroup } from '../bpf/loader.js';
import { PrivateBpffs } from '../devenv/cni.js';
import { isAlive } from './harness/leftovers.js';
import { createCertificateAuthority, issueCertificate, type KeyPair } from '../common/pki.js';
import { API_VERSION } from '../common/contract/primitives.js';
import { InterceptionSchema } from '../common/contract/interception.js';
import { buildImages, IMAGES, ImageStore, megabytes, type BuiltImage } from '../devenv/images/builder.js';
import { PodNetwork, type PodSandbox } from '../devenv/pod-network.js';
import { CONTROL_PLANE_CN } from '../repo/auth.js';
import { Publisher } from '../registry-bridge/sinks/repo-publisher.js';
import { startControlPlane, type ControlPlane } from '../devenv/controlplane.js';
import { eventually } from './harness/eventually.js';
import { requireRoot, requireTools } from './harness/netns.js';
import { ContainerRuntime, type Container } from './harness/runc.js';

/**
 * The images built from images/Dockerfile on this machine (no Docker engine: mmdebstrap bases,
 * buildah, cached by their inputs) and run by runc as a kubelet's runtime would: the control-plane
 * image's repo serves over TLS in a pod of its own; in a second pod the sidecar image's init
 * container writes the nat rules and its sidecar, reading its codebase from that repo with a
 * ServiceAccount token, answers /ready on its readiness probe port.
 */
describe('container images, built here and run with runc', () => {
  const store = new ImageStore();
  const images = new Map<string, BuiltImage>();
  let buildSeconds = 0;
  let plane: ControlPlane;
  let network: PodNetwork;
  let relay: Server;
  const relayed = new Set<Socket>();
  let runtime: ContainerRuntime;
  let work: string;
  let repoPod: PodSandbox;
  let appPod: PodSandbox;
  let repo: Container;
  let init: Container;
  let sidecar: Container | undefined;
  const ca = createCertificateAuthority('flb-images-test-ca');
  const controlPlaneClient = issueCertificate(ca, { commonName: CONTROL_PLANE_CN, usage: 'client' });
  const REPO_UID = 65532;
  const PROXY_UID = 1500;

  const repoCall = (path: string, cert?: KeyPair) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const options: RequestOptions = {
        host: repoPod.ip,
        port: 6060,
        path,
        ca: ca.certPem,
        agent: false,
        ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
      };
      const req = request(options, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('timed out')));
      req.end();
    });

  const httpCall = (host: string, port: number, path: string) =>
    new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpGet({ host, port, path, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    });

  const uidOf = async (container: Container) => /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${await container.pid()}/status`, 'utf8'))?.[1];

  beforeAll(async () => {
    requireRoot('the image tests (buildah, runc, network namespaces)');
    await requireTools(['mmdebstrap', 'buildah', 'runc', 'iptables-nft-save', 'nsenter']);
    const started = Date.now();
    for (const image of await buildImages({ store, onProgress: (message) => process.stderr.write(`images: ${message}\n`) })) images.set(image.name, image);
    buildSeconds = (Date.now() - started) / 1000;

    work = mkdtempSync(join(tmpdir(), 'flb-images-'));
    network = await PodNetwork.create({ dir: work });
    plane = await startControlPlane({ extraServingAddresses: [network.gateway] });
    // The apiserver listens on loopback, which pods cannot reach: a relay on the gateway, as the node simulator has.
    const apiserver = new URL(plane.server);
    relay = createServer((client) => {
      const upstream = connect(Number(apiserver.port), apiserver.hostname);
      relayed.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      for (const socket of [client, upstream])
        socket.on('error', () => (socket === client ? upstream : client).destroy()).on('close', () => relayed.delete(socket));
    });
    await new Promise<void>((resolve) => relay.listen(0, network.gateway, resolve));
    runtime = await ContainerRuntime.create(store);

    // The repo's pod: a StatefulSet's would have a volume for its data and a Secret with its certificates.
    repoPod = await network.addPod({ uid: 'repo-0', namespace: 'flomesh', name: 'flb-repo-0' });
    const secrets = join(work, 'repo-secrets');
    const data = join(work, 'repo-data');
    mkdirSync(secrets);
    mkdirSync(data);
    chownSync(data, REPO_UID, REPO_UID);
    const serving = issueCertificate(ca, { commonName: 'flb-repo', usage: 'server', dnsNames: ['flb-repo.flomesh.svc'], ipAddresses: [repoPod.ip] });
    writeFileSync(join(secrets, 'tls.crt'), serving.certPem);
    writeFileSync(join(secrets, 'tls.key'), serving.keyPem, { mode: 0o644 });
    writeFileSync(join(secrets, 'ca.crt'), ca.certPem);
    const relayAddress = relay.address() as { port: number };
    writeFileSync(
      join(secrets, 'kubeconfig'),
      readFileSync(plane.kubeconfigPath, 'utf8').replaceAll(plane.server, `https://${network.gateway}:${relayAddress.port}`),
    );
    repo = await runtime.start({
      name: 'repo',
      image: IMAGES['control-plane'].reference,
      args: [
        'repo',
        '--listen',
        `${repoPod.ip}:6060`,
        '--data-dir',
        '/var/lib/flb-repo',
        ...['--tls-cert', '/etc/flb-repo/tls.crt', '--tls-key', '/etc/flb-repo/tls.key'],
        ...['--client-ca', '/etc/flb-repo/ca.crt', '--kubeconfig', '/etc/flb-repo/kubeconfig'],
      ],
      netnsPath: repoPod.netnsPath,
      mounts: [
        { source: secrets, destination: '/etc/flb-repo', readOnly: true },
        { source: data, destination: '/var/lib/flb-repo' },
      ],
    });
    await repo.whileRunning(eventually('the repo answers over TLS', () => repoCall('/api/v1/repo', controlPlaneClient)));
  }, 45 * 60_000);

  afterAll(async () => {
    await runtime?.stopAll();
    for (const socket of relayed) socket.destroy();
    await new Promise<void>((resolve) => (relay ? relay.close(() => resolve()) : resolve()));
    if (appPod) await network.removePod(appPod, { uid: 'web', namespace: 'shop', name: 'web' });
    if (repoPod) await network.removePod(repoPod, { uid: 'repo-0', namespace: 'flomesh', name: 'flb-repo-0' });
    await network?.close();
    await plane?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    if (images.size) {
      console.log(
        [
          `images (${buildSeconds.toFixed(1)} s to build or find them up to date):`,
          ...[...images.values()].map(
            (image) =>
              `  ${image.reference.padEnd(50)} ${megabytes(image.sizeBytes).padStart(7)}  ${image.built ? `built in ${Math.round(image.seconds)} s` : 'up to date'}`,
          ),
        ].join('\n'),
      );
    }
  });

  it('builds both images tagged with the version the injector injects, non-root by default, with no compiler or npm', async () => {
    const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    expect([...images.values()].map((image) => image.reference).sort()).toEqual(
      [`docker.io/flomesh/flb-mesh-control-plane:${version}`, `docker.io/flomesh/flb-mesh:${version}`].sort(),
    );
    const users = await Promise.all(
      [...images.values()].map(
        async (image) =>
          (JSON.parse(await store.buildah(['inspect', '--type', 'image', image.reference])) as { OCIv1: { config: { User: string } } }).OCIv1.config.User,
      ),
    );
    expect(users.sort()).toEqual([`${PROXY_UID}:${PROXY_UID}`, `${REPO_UID}:${REPO_UID}`].sort());
    for (const tool of ['usr/bin/gcc', 'usr/bin/cc', 'usr/bin/npm', 'usr/include/node/node_api.h'])
      expect([tool, existsSync(join(repo.rootfs, tool))]).toEqual([tool, false]);
    expect(existsSync(join(repo.rootfs, 'usr/bin/node'))).toBe(true);
    // Every UID the mesh runs as has a name (os.userInfo() and `id` work) and no writable home.
    const passwd = readFileSync(join(repo.rootfs, 'etc/passwd'), 'utf8');
    const named = (uid: number) => new RegExp(`^([^:]+):x:${uid}:${uid}:[^:]*:/nonexistent:`, 'm').exec(passwd)?.[1];
    expect([PROXY_UID, PROXY_UID + 1, REPO_UID].map(named)).toEqual(['flb-proxy', 'flb-validation', 'flb']);
  });

  it('a warm build finds both images up to date and builds nothing', async () => {
    const started = Date.now();
    const again = await buildImages({ store });
    expect(again.map((image) => [image.name, image.built, image.id])).toEqual([...images.values()].map((image) => [image.name, false, image.id]));
    console.log(`images: a warm build took ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  it('serves the repo over TLS from the control-plane image, as a non-root user, refusing a client without credentials', async () => {
    expect(await uidOf(repo)).toBe(String(REPO_UID));
    expect((await repoCall('/api/v1/repo')).status).toBe(401);
    const listed = await repoCall('/api/v1/repo', controlPlaneClient);
    expect(listed.status).toBe(200);
  });

  it("the control-plane image has what the CNI agent's eBPF mode loads: `flb bpf check` passes there, given the host's cgroup v2 and bpffs as the chart mounts them", async () => {
    const cgroup = defaultCgroup();
    if (!cgroup) throw new Error('this host mounts no cgroup v2 hierarchy: the eBPF check in the image needs one');
    // As the chart's agent sees the node when `cni.ebpf.cgroup` names the hierarchy
    // (charts/flb-mesh/templates/cni.yaml): root, bpffs at /sys/fs/bpf, that hierarchy at
    // /host/cgroup2. (Its default, auto, reads the host's /proc/1/mountinfo through hostPID, which
    // this runtime's own PID namespace cannot give; bpf/loader.test covers it.) Read-only: it loads nothing.
    const check = await runtime.start({
      name: 'bpf-check',
      image: IMAGES['control-plane'].reference,
      args: ['bpf', 'check', '--json', '--cgroup', '/host/cgroup2', '--bpffs', '/sys/fs/bpf'],
      user: { uid: 0, gid: 0 },
      netnsPath: repoPod.netnsPath,
      mounts: [
        { source: cgroup, destination: '/host/cgroup2', readOnly: true },
        { source: '/sys/fs/bpf', destination: '/sys/fs/bpf', readOnly: true },
      ],
    });
    const exitCode = await check.exited;
    const report = check
      .log()
      .split('\n')
      .find((line) => line.startsWith('{"ok"'));
    expect({ exitCode, report: report && (JSON.parse(report) as unknown) }).toMatchObject({
      exitCode: 0,
      report: { ok: true, missing: [], cgroup: '/host/cgroup2', bpffs: '/sys/fs/bpf' },
    });
  });

  it("the control-plane image's bpftool loads the programs its build compiled, attaching them to a cgroup, and unloads them leaving nothing", async () => {
    // The image's own clang, libbpf headers and bpftool (not the host's, which the bpf tests use)
    // against this kernel's verifier; in a cgroup and a bpffs of the test's own, never the machine's root.
    const root = defaultCgroup();
    if (!root) throw new Error('this host mounts no cgroup v2 hierarchy: loading the programs needs one');
    for (const name of readdirSync(root).filter((n) => n.startsWith('flb-images-'))) {
      if (!isAlive(Number(name.slice('flb-images-'.length)))) rmdirSync(join(root, name));
    }
    const cgroup = join(root, `flb-images-${process.pid}`);
    mkdirSync(cgroup);
    const bpffs = await PrivateBpffs.mount();
    const attached = async () =>
      (JSON.parse((await execa('bpftool', ['-j', 'cgroup', 'show', cgroup])).stdout || '[]') as { name?: string }[]).map((p) => p.name ?? '?').sort();
    const inImage = async (name: string, args: string[]) => {
      const container = await runtime.start({
        name,
        image: IMAGES['control-plane'].reference,
        args: ['bpf', ...args, '--mesh', 'images-test', '--bpffs', '/sys/fs/bpf'],
        user: { uid: 0, gid: 0 },
        capabilities: ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_ADMIN'],
        netnsPath: repoPod.netnsPath,
        mounts: [
          { source: cgroup, destination: '/host/cgroup2', readOnly: true },
          { source: bpffs.path, destination: '/sys/fs/bpf' },
        ],
      });
      return { exitCode: await container.exited, log: container.log() };
    };
    try {
      const loaded = await inImage('bpf-load', ['load', '--cgroup', '/host/cgroup2']);
      expect(loaded).toMatchObject({ exitCode: 0, log: expect.stringContaining('loaded: mesh images-test, cgroup /host/cgroup2') });
      expect(await attached()).toEqual(expect.arrayContaining(['flb_connect4', 'flb_connect6', 'flb_getsockopt', 'flb_sockops']));
      const unloaded = await inImage('bpf-unload', ['unload']);
      expect(unloaded).toMatchObject({ exitCode: 0 });
      // maps.debug and progs.debug are the kernel's own (bpf_preload's iterators, in every new bpffs).
      expect({ attached: await attached(), pins: readdirSync(bpffs.path).filter((f) => !f.endsWith('.debug')) }).toEqual({ attached: [], pins: [] });
    } finally {
      await bpffs.unmount();
      rmdirSync(cgroup);
    }
  });

  it("the sidecar image's init container writes the pod's nat rules; its sidecar reads its codebase from the repo and is ready", async () => {
    const core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'shop' } } });
    await eventually('ServiceAccount default', () => core.readNamespacedServiceAccount({ name: 'default', namespace: 'shop' }));
    const pod = await core.createNamespacedPod({
      namespace: 'shop',
      body: { metadata: { name: 'web' }, spec: { containers: [{ name: 'app', image: 'example/app' }] } },
    });
    const token = (
      await core.createNamespacedServiceAccountToken({
        name: 'default',
        namespace: 'shop',
        body: {
          spec: { audiences: ['flb-repo'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: 'web', uid: pod.metadata!.uid! } },
        },
      })
    ).status!.token;
    appPod = await network.addPod({ uid: 'web', namespace: 'shop', name: 'web' });

    const publisher = new Publisher({
      url: `https://${repoPod.ip}:6060`,
      tls: { ca: ca.certPem, cert: controlPlaneClient.certPem, key: controlPlaneClient.keyPem },
      log: createLogger('publish', 'warn'),
      batchMs: 0,
    });
    publisher.setMesh(new Map([['/mesh.json', JSON.stringify({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb' })]]));
    publisher.setSidecar(
      'pod.shop.web',
      new Map([
        [
          '/sidecar.json',
          JSON.stringify({
            apiVersion: API_VERSION,
            kind: 'Sidecar',
            id: 'pod.shop.web',
            mesh: 'flb',
            identity: { kind: 'pod', namespace: 'shop', name: 'web', serviceAccount: 'default' },
          }),
        ],
      ]),
    );
    await publisher.settled();
    publisher.stop();

    // flb-init, as the injector writes it: root with NET_ADMIN and NET_RAW only.
    const interception = InterceptionSchema.parse({ version: 1, mode: 'iptables', ipv6: 'disabled' });
    init = await runtime.start({
      name: 'flb-init',
      image: IMAGES.sidecar.reference,
      command: ['flb', 'iptables', 'apply'],
      env: { FLB_INTERCEPTION: JSON.stringify(interception) },
      user: { uid: 0, gid: 0 },
      capabilities: ['NET_ADMIN', 'NET_RAW'],
      netnsPath: appPod.netnsPath,
    });
    expect([await init.exited, init.log().slice(-2000)]).toEqual([0, expect.anything()]);
    const nat = (await execa('nsenter', [`--net=${appPod.netnsPath}`, '--', 'iptables-nft-save', '-t', 'nat'])).stdout;
    expect(nat).toContain(`-A OUTPUT -p tcp -j FLB_OUTPUT`);
    expect(nat).toMatch(/-A FLB_OUTPUT -m owner --uid-owner 1500 -j RETURN/);
    expect(nat).toContain('--to-ports 15001');

    // flb-validation from the same image, unprivileged and not the proxy's UID: its test connection is redirected.
    const validation = await runtime.start({
      name: 'flb-validation',
      image: IMAGES.sidecar.reference,
      command: ['flb', 'cni', 'validate'],
      env: { FLB_INTERCEPTION: JSON.stringify(interception) },
      user: { uid: PROXY_UID + 1, gid: PROXY_UID + 1 },
      netnsPath: appPod.netnsPath,
    });
    expect([await validation.exited, validation.log().slice(-2000)]).toEqual([0, expect.stringContaining('traffic interception is in place')]);

    // flb-sidecar, as the injector writes it: the proxy UID, no capability, the repo's token and CA mounted.
    const access = join(work, 'repo-access');
    const state = join(work, 'sidecar-state');
    mkdirSync(access);
    mkdirSync(state);
    chownSync(state, PROXY_UID, PROXY_UID);
    writeFileSync(join(access, 'token'), token);
    writeFileSync(join(access, 'ca.crt'), ca.certPem);
    sidecar = await runtime.start({
      name: 'flb-sidecar',
      image: IMAGES.sidecar.reference,
      command: ['flb', 'sidecar'],
      env: {
        POD_NAME: 'web',
        POD_NAMESPACE: 'shop',
        POD_IP: appPod.ip,
        FLB_REPO_URL: `https://${repoPod.ip}:6060`,
        FLB_REPO_TOKEN_FILE: '/var/run/secrets/flomesh.io/repo/token',
        FLB_REPO_CA_FILE: '/var/run/secrets/flomesh.io/repo/ca.crt',
        FLB_STATE_DIR: '/var/lib/flb',
      },
      netnsPath: appPod.netnsPath,
      mounts: [
        { source: access, destination: '/var/run/secrets/flomesh.io/repo', readOnly: true },
        { source: state, destination: '/var/lib/flb' },
      ],
    });
    const ready = await sidecar.whileRunning(
      eventually("the sidecar's readiness probe port", async () => {
        const answer = await httpCall(appPod.ip, 15902, '/ready');
        if (answer.status !== 200) throw new Error(`${answer.status} ${answer.text}`);
        return answer;
      }),
    );
    expect(ready.text).toMatch(/^ready/);
    expect(await uidOf(sidecar)).toBe(String(PROXY_UID));
  });
});
