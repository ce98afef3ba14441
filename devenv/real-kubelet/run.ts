// A real kubelet (v1.36, built from the pinned k8s.io/kubernetes module) with Debian's containerd
// 1.6 and runc, against the dev environment's control plane and flb-mesh's control plane (repo,
// bridge, injector), as one node named rk-node. No registry: every image is made or exported here
// and imported into containerd. Runs until Ctrl-C / SIGTERM, then deletes its pods and stops.
// Usage (as root, after scripts/setup.sh, `npm run build` and `node dist/devenv/images/main.js`):
//   devenv/real-kubelet/run.sh        (or: node dist/devenv/real-kubelet/run.js)
// See README.md beside it for what each step is for and what this machine needed.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../cache.js';
import { CHECKOUT } from '../node-simulator/images.js';
import { pinBridgeMac } from '../pod-network.js';
import type { ControlPlaneState } from './control-plane.js';

const ROOT = CHECKOUT;
const CACHE = cacheDir();
const WORK = process.env.FLB_REAL_KUBELET_DIR ?? '/tmp/flb-real-kubelet';
const RUN = '/run/flb-real-kubelet';
const NODE_NAME = 'rk-node';
const BRIDGE = 'rk0';
const GATEWAY = '10.88.7.1';
const SUBNET = '10.88.7.0/24';
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** The image builder's store (devenv/images/builder.ts's ImageStore), where flb-mesh's two images are. */
const STORE_ROOT = join(CACHE, 'containers/storage');
const STORE = ['--root', STORE_ROOT, '--runroot', `/run/flb-mesh-containers-${createHash('sha256').update(STORE_ROOT).digest('hex').slice(0, 8)}`];
/** A buildah store of this script's own, for the pause and demo images. */
const OWN_STORE = ['--root', join(WORK, 'buildah/storage'), '--runroot', join(RUN, 'buildah')];
const SOCKET = join(RUN, 'containerd.sock');
const KUBELET = join(CACHE, 'bin/kubelet');
const KUBECTL = join(CACHE, 'bin/kubectl');

/** A step that cannot go on: its message is printed, what was started is stopped, and the exit code is 1. */
class RunFailed extends Error {}
const step = (what: string) => process.stderr.write(`\n==> ${what}\n`);
const die = (why: string): never => {
  throw new RunFailed(why);
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** Runs a command with its stderr on ours; resolves with its stdout. */
const run = async (command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string } = {}) =>
  (await execa(command, args, { stderr: 'inherit', ...options })).stdout;
/** Runs a command whose failure changes nothing (a cleanup that finds nothing to clean). */
const attempt = async (command: string, args: string[]) => execa(command, args, { reject: false });
const succeeds = async (command: string, args: string[]) => (await attempt(command, args)).exitCode === 0;
/** Runs a command with all its output on our stderr (stdout is only for the KUBECONFIG line); resolves with its exit code. */
const runToStderr = (command: string, args: string[]) =>
  new Promise<number>((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 2, 2] });
    child.once('error', () => resolve(127));
    child.once('exit', (code) => resolve(code ?? 1));
  });
const onPath = (tool: string) => succeeds('sh', ['-c', `command -v ${tool}`]);

/** Processes whose command line names one of our folders: what a killed run left (containerd's shims, its children). */
function processesOfOurFolders(): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(`${WORK}/`) || cmdline.includes(`${RUN}/`)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The pods' processes: in the kubelet's cgroups (cgroupfs driver; one such kubelet per machine). */
function podProcesses(): number[] {
  const found: number[] = [];
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (entry.isDirectory()) walk(join(dir, entry.name));
      else if (entry.name === 'cgroup.procs') found.push(...readFileSync(join(dir, entry.name), 'utf8').split('\n').filter(Boolean).map(Number));
    }
  };
  const top = '/sys/fs/cgroup/pids';
  for (const name of existsSync(top) ? readdirSync(top) : []) if (name.startsWith('kubepods')) walk(join(top, name));
  return found;
}

const kill = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal);
  } catch {
    // gone already
  }
};

/** Unmounts what is mounted under our folders, deepest first. */
async function unmountOurs(): Promise<void> {
  const targets = (await attempt('findmnt', ['-rn', '-o', 'TARGET'])).stdout
    .split('\n')
    .filter((target) => target.startsWith(`${WORK}/`) || target.startsWith(`${RUN}/`))
    .sort()
    .reverse();
  for (const target of targets) await attempt('umount', ['-l', target]);
}

/**
 * What a run killed outright (SIGKILL: no cleanup) left: containerd's shims and the pods' processes
 * (they outlive containerd by design), their mounts and network namespaces, the bridge.
 */
async function removeLeftovers(): Promise<void> {
  for (const pid of processesOfOurFolders()) kill(pid, 'SIGKILL');
  for (const pid of podProcesses()) kill(pid, 'SIGKILL');
  await unmountOurs();
  const subnetPrefix = `inet ${GATEWAY.slice(0, GATEWAY.lastIndexOf('.'))}.`;
  for (const line of (await attempt('ip', ['netns', 'list'])).stdout.split('\n')) {
    const netns = line.split(' ')[0];
    if (!netns?.startsWith('cni-')) continue;
    if ((await attempt('ip', ['-n', netns, '-4', 'addr'])).stdout.includes(subnetPrefix)) await attempt('ip', ['netns', 'delete', netns]);
  }
  await attempt('ip', ['link', 'del', BRIDGE]);
  const meshFolders = existsSync(WORK) ? readdirSync(WORK).filter((name) => name.startsWith('mesh-')) : [];
  for (const path of [
    join(WORK, 'state.json'),
    join(WORK, 'kubelet'),
    join(WORK, 'containerd'),
    ...meshFolders.map((name) => join(WORK, name)),
    join(WORK, 'cni/ipam'),
    join(RUN, 'containerd'),
    SOCKET,
    `${SOCKET}.ttrpc`,
  ]) {
    rmSync(path, { recursive: true, force: true });
  }
}

/** A child in a process group of its own (Ctrl-C reaches only this script, which stops them in order), output to a file or ours. */
function startChild(command: string, args: string[], options: { log?: string; env?: NodeJS.ProcessEnv; pdeathsig: 'KILL' | 'TERM' }): ChildProcess {
  const fd = options.log ? openSync(options.log, 'w') : undefined;
  try {
    return spawn('setpriv', ['--pdeathsig', options.pdeathsig, '--', command, ...args], {
      stdio: fd === undefined ? ['ignore', 'inherit', 'inherit'] : ['ignore', fd, fd],
      detached: true,
      ...(options.env ? { env: options.env } : {}),
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
const isRunning = (child: ChildProcess | undefined): child is ChildProcess => child !== undefined && child.exitCode === null && child.signalCode === null;
const exited = (child: ChildProcess) => (isRunning(child) ? new Promise<void>((resolve) => child.once('exit', () => resolve())) : Promise.resolve());

/** The children, in the order they started; stopped in reverse. */
const children: ChildProcess[] = [];
let kubelet: ChildProcess | undefined;
let kubeconfig = '';
let cleaning: Promise<void> | undefined;

async function cleanup(): Promise<void> {
  if (isRunning(kubelet)) {
    process.stderr.write('    deleting the pods (the kubelet stops their containers and tears down their network)\n');
    await runToStderr(KUBECTL, ['--kubeconfig', kubeconfig, 'delete', 'pods', '--all', '--all-namespaces', '--wait', '--timeout=60s']);
    kubelet.kill('SIGTERM');
    await exited(kubelet);
  }
  if (existsSync(SOCKET) && lstatSync(SOCKET).isSocket()) {
    // What the kubelet had no time to garbage-collect: tasks (their shims) and containers (their rootfs mounts).
    const ctr = (...args: string[]) => attempt('ctr', ['-a', SOCKET, '-n', 'k8s.io', ...args]);
    for (const task of (await ctr('tasks', 'ls', '-q')).stdout.split('\n').filter(Boolean)) await ctr('tasks', 'rm', '-f', task);
    for (const container of (await ctr('containers', 'ls', '-q')).stdout.split('\n').filter(Boolean)) await ctr('containers', 'rm', container);
  }
  for (const child of [...children].reverse()) {
    if (isRunning(child)) child.kill('SIGTERM');
    await exited(child);
  }
  await unmountOurs();
  await removeLeftovers();
}
const cleanupOnce = () => (cleaning ??= cleanup());

async function buildKubelet(): Promise<void> {
  step("kubelet (built from test-e2e/servers/kube's pinned k8s.io/kubernetes, as setup.sh builds the apiserver)");
  const module = join(ROOT, 'test-e2e/servers/kube');
  const { Require = [] } = JSON.parse(await run('go', ['mod', 'edit', '-json'], { cwd: module })) as { Require?: { Path: string; Version: string }[] };
  const kubeVersion = Require.find((r) => r.Path === 'k8s.io/kubernetes')?.Version ?? die(`${module}/go.mod does not require k8s.io/kubernetes`);
  const built = existsSync(KUBELET) ? (await attempt(KUBELET, ['--version'])).stdout.trim() : '';
  if (built !== `Kubernetes ${kubeVersion}`) {
    const release = /^v(\d+)\.(\d+)\./.exec(kubeVersion) ?? die(`k8s.io/kubernetes is not at a release version (${kubeVersion})`);
    const ldflags = ['-s', '-w'];
    for (const pkg of ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version']) {
      ldflags.push(`-X ${pkg}.gitVersion=${kubeVersion}`, `-X ${pkg}.gitMajor=${release[1]}`, `-X ${pkg}.gitMinor=${release[2]}`);
    }
    // The kubelet needs two modules the apiserver does not (their go.sum lines are missing), so it is
    // built from a copy of the module that may add them.
    const copy = join(WORK, 'kube-module');
    rmSync(copy, { recursive: true, force: true });
    mkdirSync(copy, { recursive: true });
    for (const file of readdirSync(module)) if (['go.mod', 'go.sum'].includes(file) || file.endsWith('.go')) copyFileSync(join(module, file), join(copy, file));
    process.stderr.write('    building (cold: about 13 min on 2 busy cores, at nice 19)\n');
    await run(
      'nice',
      ['-n', '19', 'go', 'build', '-trimpath', `-ldflags=${ldflags.join(' ')}`, '-o', `${join(CACHE, 'bin')}/`, 'k8s.io/kubernetes/cmd/kubelet'],
      {
        cwd: copy,
        env: { ...process.env, GOCACHE: join(CACHE, 'go/build'), GOMODCACHE: join(CACHE, 'go/mod'), GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod -p=2' },
      },
    );
  }
  process.stderr.write(`${(await run(KUBELET, ['--version'])).trim()}\n`);
}

async function containerdAndRunc(): Promise<void> {
  step("containerd (Debian's 1.6) and runc");
  if (!(await onPath('containerd'))) {
    await run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'containerd'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  if (!(await onPath('runc'))) die('runc is missing (scripts/apt-packages.txt installs it)');
  process.stderr.write(`${(await run('containerd', ['--version'])).trim()}\n`);
}

const PAUSE_C = `#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
  for (;;) pause();
}
`;

async function images(): Promise<void> {
  step("images: a pause image, the demo image, and flb-mesh's two images from the builder's store");
  const dir = join(WORK, 'images');
  mkdirSync(dir, { recursive: true });
  const own = (...args: string[]) => run('buildah', [...OWN_STORE, ...args]);
  if (!existsSync(join(dir, 'pause.tar'))) {
    writeFileSync(join(dir, 'pause.c'), PAUSE_C);
    await run('gcc', ['-Os', '-static', '-s', '-o', join(dir, 'pause'), join(dir, 'pause.c')]);
    const container = (await own('from', 'scratch')).trim();
    await own('copy', container, join(dir, 'pause'), '/pause');
    await own('config', '--entrypoint', '["/pause"]', '--user', '65535:65535', container);
    await own('commit', '-q', container, 'localhost/flb-pause:local');
    await own('push', '-q', 'localhost/flb-pause:local', `docker-archive:${dir}/pause.tar:localhost/flb-pause:local`);
  }
  for (const image of ['flb-mesh', 'flb-mesh-control-plane']) {
    const reference = `docker.io/flomesh/${image}:${VERSION}`;
    if (!(await succeeds('buildah', [...STORE, 'inspect', '--type', 'image', reference]))) {
      die(`${reference} is not in ${CACHE}/containers: run node dist/devenv/images/main.js first`);
    }
    rmSync(join(dir, `${image}.tar`), { force: true });
    await run('buildah', [...STORE, 'push', '-q', reference, `docker-archive:${dir}/${image}.tar:${reference}`]);
  }
  // The demo apps are in the sidecar image (dist/devenv/apps); the demo image is that with their
  // entrypoint, as nobody: the sidecar image's user is the proxy UID (1500), whose traffic the mesh never
  // redirects, so a client running as it would bypass its sidecar (DNS included).
  const demo = `docker.io/flomesh/flb-demo:${VERSION}`;
  const container = (await own('from', '-q', `docker-archive:${dir}/flb-mesh.tar`)).trim();
  await execa('buildah', [
    ...OWN_STORE,
    'config',
    '--entrypoint',
    '["node","/opt/flb-mesh/dist/devenv/apps/demo.js"]',
    '--cmd',
    '[]',
    '--user',
    '65534:65534',
    container,
  ]);
  await own('commit', '-q', '--rm', container, demo);
  rmSync(join(dir, 'flb-demo.tar'), { force: true });
  await own('push', '-q', demo, `docker-archive:${dir}/flb-demo.tar:${demo}`);
}

async function podNetwork(): Promise<void> {
  step(`pod network: bridge ${BRIDGE} (${GATEWAY}) with Debian's bridge and host-local CNI plugins`);
  mkdirSync(join(WORK, 'cni/net.d'), { recursive: true });
  const conflist = {
    cniVersion: '1.0.0',
    name: BRIDGE,
    plugins: [
      {
        type: 'bridge',
        bridge: BRIDGE,
        isGateway: true,
        ipMasq: false,
        ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(WORK, 'cni/ipam') },
      },
    ],
  };
  writeFileSync(join(WORK, `cni/net.d/10-${BRIDGE}.conflist`), `${JSON.stringify(conflist, null, 2)}\n`);
  // Made before the first pod so that the repo can listen on the gateway address.
  if (!(await succeeds('ip', ['link', 'show', BRIDGE]))) {
    await run('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    await pinBridgeMac(BRIDGE);
  }
  if (!(await run('ip', ['addr', 'show', 'dev', BRIDGE])).includes(`inet ${GATEWAY}/`)) await run('ip', ['addr', 'add', `${GATEWAY}/24`, 'dev', BRIDGE]);
  await run('ip', ['link', 'set', BRIDGE, 'up']);
}

const CONTAINERD_CONFIG = `version = 2
root = "${WORK}/containerd/root"
state = "${RUN}/containerd"
[grpc]
  address = "${SOCKET}"
[ttrpc]
  address = "${SOCKET}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/flb-pause:local"
  # These machines' bounding set has no CAP_SYS_RESOURCE: a negative oom_score_adj (the kubelet
  # asks -998 for every sandbox) fails runc with "can't get final child's PID from pipe: EOF".
  # This clamps it to containerd's own (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${WORK}/cni/net.d"
`;

async function containerd(): Promise<void> {
  step(`containerd on ${SOCKET} (runc, cgroupfs, sandbox image localhost/flb-pause:local)`);
  rmSync(join(WORK, 'containerd'), { recursive: true, force: true });
  mkdirSync(join(WORK, 'containerd'), { recursive: true });
  writeFileSync(join(WORK, 'containerd/config.toml'), CONTAINERD_CONFIG);
  const child = startChild('containerd', ['--config', join(WORK, 'containerd/config.toml')], { log: join(WORK, 'containerd.log'), pdeathsig: 'KILL' });
  children.push(child);
  for (let i = 0; i < 100; i++) {
    if (await succeeds('ctr', ['-a', SOCKET, 'version'])) break;
    if (!isRunning(child)) die(`containerd stopped (log: ${WORK}/containerd.log)`);
    await sleep(200);
  }
  for (const tar of ['pause', 'flb-mesh', 'flb-mesh-control-plane', 'flb-demo']) {
    await execa('ctr', ['-a', SOCKET, '-n', 'k8s.io', 'images', 'import', join(WORK, 'images', `${tar}.tar`)]);
  }
  const imported = (await run('ctr', ['-a', SOCKET, '-n', 'k8s.io', 'images', 'ls', '-q'])).split('\n').filter((line) => line && !line.startsWith('sha256:'));
  process.stderr.write(`${imported.join('\n')}\n`);
}

async function controlPlane(): Promise<ControlPlaneState> {
  step("control plane (devenv/controlplane.ts) and flb-mesh's repo, bridge and injector (devenv/mesh.ts)");
  const stateFile = join(WORK, 'state.json');
  rmSync(stateFile, { force: true });
  // pdeathsig TERM: if this script is killed outright, the plane and the mesh still stop in order.
  const child = startChild(process.execPath, [join(ROOT, 'dist/devenv/real-kubelet/control-plane.js')], {
    env: { ...process.env, GATEWAY, WORK },
    pdeathsig: 'TERM',
  });
  children.push(child);
  for (let i = 0; i < 600 && !existsSync(stateFile); i++) {
    if (!isRunning(child)) die('the control plane did not start');
    await sleep(500);
  }
  if (!existsSync(stateFile)) die('the control plane did not start within 5 min');
  return JSON.parse(readFileSync(stateFile, 'utf8')) as ControlPlaneState;
}

async function startKubelet(state: ControlPlaneState): Promise<ChildProcess> {
  step(`kubelet as node ${NODE_NAME}`);
  mkdirSync(join(WORK, 'kubelet'), { recursive: true });
  writeFileSync(
    join(WORK, 'kubelet/config.yaml'),
    `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines mount cgroup v1 (v2 only at /sys/fs/cgroup/unified); 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://${SOCKET}
address: 127.0.0.1
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: false }
  x509: { clientCAFile: ${state.caFile} }
authorization: { mode: AlwaysAllow }
resolvConf: /etc/resolv.conf
podLogsDir: ${WORK}/kubelet/pod-logs
# The disk is shared and may be nearly full; nothing here may be evicted or garbage-collected.
evictionHard: { memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%" }
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`,
  );
  // The admin kubeconfig (system:masters) stands in for a node credential.
  const child = startChild(
    KUBELET,
    [
      `--config=${WORK}/kubelet/config.yaml`,
      `--kubeconfig=${state.kubeconfig}`,
      `--hostname-override=${NODE_NAME}`,
      `--root-dir=${WORK}/kubelet/root`,
      `--cert-dir=${WORK}/kubelet/pki`,
      '--v=2',
    ],
    { log: join(WORK, 'kubelet.log'), pdeathsig: 'KILL' },
  );
  children.push(child);
  const kubectl = (...args: string[]) => attempt(KUBECTL, ['--kubeconfig', state.kubeconfig, ...args]);
  // kubectl wait fails at once on a Node that does not exist yet: wait for the registration first.
  for (let i = 0; i < 120 && isRunning(child); i++) {
    if ((await kubectl('get', 'node', NODE_NAME)).exitCode === 0) break;
    await sleep(500);
  }
  if ((await runToStderr(KUBECTL, ['--kubeconfig', state.kubeconfig, 'wait', '--for=condition=Ready', `node/${NODE_NAME}`, '--timeout=120s'])) !== 0) {
    const errors = readFileSync(join(WORK, 'kubelet.log'), 'utf8')
      .split('\n')
      .filter((line) => /^[EF]\d{4}/.test(line))
      .slice(-20);
    process.stderr.write(`${errors.join('\n')}\n`);
    die(`node ${NODE_NAME} did not become Ready (log: ${WORK}/kubelet.log)`);
  }
  return child;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) die('run as root (containerd, runc, the bridge)');
  await removeLeftovers();
  for (const dir of [WORK, RUN, join(CACHE, 'bin')]) mkdirSync(dir, { recursive: true });
  await buildKubelet();
  await containerdAndRunc();
  await images();
  await podNetwork();
  await containerd();
  const state = await controlPlane();
  kubeconfig = state.kubeconfig;
  kubelet = await startKubelet(state);
  process.stderr.write(`
Ready. In another shell:
  export KUBECONFIG=${kubeconfig}
  ${KUBECTL} get nodes -o wide
Pods need spec.nodeName: ${NODE_NAME} (there is no scheduler) and local images (imagePullPolicy
IfNotPresent or Never): flomesh/flb-demo:${VERSION}, flomesh/flb-mesh:${VERSION}, flomesh/flb-mesh-control-plane:${VERSION}.
Logs: ${WORK}/kubelet.log, ${WORK}/containerd.log, pod logs in ${WORK}/kubelet/pod-logs. Ctrl-C stops it all.
`);
  process.stdout.write(`KUBECONFIG=${kubeconfig}\n`);
  await exited(kubelet);
  // The kubelet stopped by itself: this ends as it did (its exit code), once the rest is stopped.
  process.exitCode = kubelet.exitCode ?? 1;
}

let stoppingFor: NodeJS.Signals | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stoppingFor) return;
    stoppingFor = signal;
    void cleanupOnce().finally(() => process.exit(128 + (signal === 'SIGINT' ? 2 : 15)));
  });
}
try {
  await main();
  if (!stoppingFor) await cleanupOnce();
} catch (error) {
  if (!stoppingFor) {
    process.stderr.write(`\nreal-kubelet failed: ${error instanceof RunFailed ? error.message : String((error as Error).stack ?? error)}\n`);
    await cleanupOnce();
    process.exit(1);
  }
}
