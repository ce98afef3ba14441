// One pod on the simulated node, run the way the kubelet runs it: sandbox (network namespace
// through CNI), volumes, init containers one after another, native sidecars (init containers with
// restartPolicy Always) started in order and waited on by their startup probe before the next one,
// then the app containers, each after the previous one's postStart hook; probes; restarts with
// back-off; and on deletion preStop hooks and termination in Kubernetes' order (app containers,
// then native sidecars in reverse), before the final delete that frees the pod's name.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import type { CoreV1Api, V1Container, V1ContainerState, V1ContainerStateTerminated, V1LifecycleHandler, V1Pod, V1PodSpec } from '@kubernetes/client-node';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from '../../common/log.js';
import type { PodNetwork, PodSandbox } from '../pod-network.js';
import { effectiveCapabilities, execInContainer, prepareMountTargets, startContainerProcess, type ContainerProcessSpec, type Mount } from './containers.js';
import { containerEnv, EnvError, homeDirectory, type EnvSources } from './env.js';
import { CHECKOUT, containerArgv, ImagePullError } from './images.js';
import { ProbeRunner, resolvePort } from './probes.js';
import { podStatus, type ContainerRole, type ContainerView } from './status.js';
import type { NodeCgroups } from './cgroups.js';
import { PodVolumes, VolumeError } from './volumes.js';

export interface PodWorkerContext {
  core: CoreV1Api;
  network: PodNetwork;
  nodeName: string;
  nodeIp: string;
  allocatable: { cpu: string; memory: string };
  apiserver: { host: string; port: number };
  /** The resolver pods get with dnsPolicy ClusterFirst. */
  clusterDns: { nameserver: string; domain: string };
  /** Restart back-off: first restart at once, then this, doubling up to `backoffMaxMs`. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  log: Logger;
  dir: string;
  /** Where pods' cgroups are made; undefined without cgroup v2 (containers stay in the simulator's). */
  cgroups?: NodeCgroups;
}

interface Container {
  spec: V1Container;
  role: ContainerRole;
  process?: ChildProcess;
  processSpec?: ContainerProcessSpec;
  state: V1ContainerState;
  lastState?: V1ContainerStateTerminated;
  started: boolean;
  ready: boolean;
  restartCount: number;
  /** Regular init containers: exited 0. */
  succeeded: boolean;
  /** Consecutive failed starts or exits: the back-off grows with it. */
  failures: number;
  nextStartAt: number;
  probes: ProbeRunner[];
  readinessProbe?: ProbeRunner;
  exited?: Promise<void>;
  killing: boolean;
  /** What the startup probe's success runs (liveness and readiness probes). */
  afterStartup?: () => void;
  lastHookFailure?: string;
}

const now = () => Date.now();
const podKey = (pod: V1Pod) => `${pod.metadata?.namespace}/${pod.metadata?.name}`;

export class PodWorker {
  private pod: V1Pod;
  private readonly dir: string;
  private readonly containers: Container[];
  private sandbox?: PodSandbox;
  /** The pod's cgroup v2 folder (kubepods/pod<uid> under its node's), made with its sandbox. */
  private cgroup?: string;
  private volumes?: PodVolumes;
  private volumesReady = false;
  private readonly createdDirs = new Set<string>();
  private initialized = false;
  private terminalPhase?: 'Succeeded' | 'Failed';
  private podReason?: string;
  private podMessage?: string;
  private readonly startTime = new Date();
  private syncing?: Promise<void>;
  private syncAgain = false;
  private retryTimer?: NodeJS.Timeout;
  private refreshTimer?: NodeJS.Timeout;
  private statusTimer?: NodeJS.Timeout;
  private statusWrite: Promise<void> = Promise.resolve();
  private terminating?: Promise<void>;
  private closed = false;
  private silenced = false;
  private readonly log: Logger;

  constructor(
    pod: V1Pod,
    private readonly context: PodWorkerContext,
  ) {
    this.pod = pod;
    this.log = context.log.child({ pod: podKey(pod) });
    this.dir = join(context.dir, 'pods', pod.metadata!.uid!);
    mkdirSync(join(this.dir, 'logs'), { recursive: true });
    const fresh = (spec: V1Container, role: ContainerRole): Container => ({
      spec,
      role,
      state: { waiting: { reason: 'PodInitializing' } },
      started: false,
      ready: false,
      restartCount: 0,
      succeeded: false,
      failures: 0,
      nextStartAt: 0,
      probes: [],
      killing: false,
    });
    this.containers = [
      ...(pod.spec?.initContainers ?? []).map((c) => fresh(c, c.restartPolicy === 'Always' ? 'sidecar' : 'init')),
      ...(pod.spec?.containers ?? []).map((c) => fresh(c, 'app')),
    ];
    for (const c of this.containers) if (c.role === 'app' || !pod.spec?.initContainers?.length) c.state = { waiting: { reason: 'ContainerCreating' } };
  }

  get uid(): string {
    return this.pod.metadata!.uid!;
  }

  /** namespace/name */
  get name(): string {
    return podKey(this.pod);
  }

  /** The pod's network namespace (its name under /var/run/netns), once it has one. */
  get netns(): string | undefined {
    return this.sandbox?.netns;
  }

  get podIp(): string | undefined {
    return this.sandbox?.ip;
  }

  logFile(container: string): string {
    return join(this.dir, 'logs', `${container}.log`);
  }

  /** The process id of a container running now (each program of the start chain execs the next: it is the app's). */
  containerPid(container: string): number | undefined {
    return this.containers.find((c) => c.spec.name === container)?.process?.pid;
  }

  start(): void {
    this.kick();
    this.refreshTimer = setInterval(() => void this.volumes?.refresh(), 5_000);
  }

  /** A newer version of the pod from the watch. */
  update(pod: V1Pod): void {
    if (pod.metadata?.uid !== this.uid) return;
    this.pod = pod;
    if (pod.metadata?.deletionTimestamp && !this.terminating) {
      const grace = pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
      this.terminating = this.terminate(grace * 1000, true);
    }
  }

  /** The pod is gone from the API (force-deleted) or the node stops: containers end at once. */
  async kill(): Promise<void> {
    this.closed = true;
    // Nobody is left to read it: the pod is gone, or the node is going.
    this.silenced = true;
    await this.stopAll(0);
    await this.tearDown();
  }

  get done(): Promise<void> {
    return this.terminating ?? Promise.resolve();
  }

  // ---- the sync loop: one pass at a time; events (exits, probe flips, timers) ask for another

  private kick(): void {
    if (this.closed || this.terminating) return;
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = this.sync()
      .catch((error: unknown) => this.log.error({ err: error }, 'pod sync failed; retrying'))
      .finally(() => {
        this.syncing = undefined;
        if (this.syncAgain) {
          this.syncAgain = false;
          this.kick();
        }
      });
  }

  private retryIn(ms: number): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.kick(), Math.max(0, ms));
  }

  private async sync(): Promise<void> {
    if (!this.sandbox) {
      try {
        this.cgroup ??= this.context.cgroups?.addPod(this.context.nodeName, this.uid);
        this.sandbox = await this.context.network.addPod({ uid: this.uid, namespace: this.pod.metadata!.namespace!, name: this.pod.metadata!.name! });
        this.writeNetworkFiles();
        this.log.info({ ip: this.sandbox.ip }, 'pod sandbox ready');
      } catch (error) {
        this.podReason = 'FailedCreatePodSandBox';
        this.podMessage = (error as Error).message;
        this.log.warn({ err: error }, 'could not create the pod sandbox; retrying');
        this.publishStatus();
        this.retryIn(2_000);
        return;
      }
      this.podReason = this.podMessage = undefined;
      this.publishStatus();
    }
    if (!this.volumesReady) {
      this.volumes ??= new PodVolumes(this.pod, this.dir, this.context.core, this.context.nodeIp, this.log);
      try {
        await this.volumes.setUp();
        this.volumesReady = true;
      } catch (error) {
        const message = `MountVolume.SetUp failed: ${(error as Error).message}`;
        for (const c of this.containers) if (c.state.waiting) c.state = { waiting: { reason: 'ContainerCreating', message } };
        this.log.warn({ err: error }, 'volumes not ready; retrying');
        this.publishStatus();
        this.retryIn(2_000);
        return;
      }
    }
    if (!(await this.syncInitContainers())) return;
    if (!this.initialized) {
      this.initialized = true;
      this.publishStatus();
    }
    for (const c of this.containers.filter((x) => x.role === 'app')) {
      if (this.terminating || this.closed) return;
      if (c.process || !this.shouldRun(c)) continue;
      if (now() < c.nextStartAt) {
        this.retryIn(c.nextStartAt - now());
        continue;
      }
      await this.startContainer(c);
    }
    this.checkTerminalPhase();
  }

  /** True once initialization is done; starts what must run next otherwise. */
  private async syncInitContainers(): Promise<boolean> {
    for (const c of this.containers.filter((x) => x.role !== 'app')) {
      if (this.terminating || this.closed) return false;
      if (c.role === 'init') {
        if (c.succeeded || this.initialized) continue;
        if (c.process) return false;
        if (c.state.terminated && this.pod.spec?.restartPolicy === 'Never') {
          this.terminalPhase = 'Failed';
          this.publishStatus();
          return false;
        }
      } else if (c.process) {
        if (c.started || this.initialized) continue;
        return false;
      }
      if (now() < c.nextStartAt) {
        this.retryIn(c.nextStartAt - now());
        if (this.initialized) continue;
        return false;
      }
      await this.startContainer(c);
      if (!this.initialized && !(c.role === 'sidecar' && c.started)) return false;
    }
    return true;
  }

  private shouldRun(c: Container): boolean {
    if (!c.state.terminated && c.restartCount === 0 && !c.lastState) return true;
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Always') return true;
    if (policy === 'OnFailure') return (c.state.terminated?.exitCode ?? 1) !== 0;
    return !c.state.terminated;
  }

  private checkTerminalPhase(): void {
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    if (policy === 'Always' || this.terminalPhase) return;
    const apps = this.containers.filter((c) => c.role === 'app');
    if (!apps.every((c) => c.state.terminated && !this.shouldRun(c))) return;
    this.terminalPhase = apps.every((c) => c.state.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed';
    this.log.info({ phase: this.terminalPhase }, 'every container has ended; stopping the sidecars');
    void this.stopAll(5_000).then(() => this.publishStatus());
  }

  // ---- one container

  private backoff(c: Container): number {
    if (c.failures <= 1) return 0;
    return Math.min(this.context.backoffMaxMs, this.context.backoffBaseMs * 2 ** (c.failures - 2));
  }

  private waitFailed(c: Container, reason: string, message: string, backoffReason: string): void {
    c.failures++;
    const delay = Math.max(this.backoff(c), this.context.backoffBaseMs);
    c.nextStartAt = now() + delay;
    c.state = { waiting: { reason, message } };
    this.log.warn({ container: c.spec.name, reason, message }, 'container cannot start');
    this.publishStatus();
    setTimeout(() => {
      if (c.state.waiting?.reason === reason) {
        c.state = { waiting: { reason: backoffReason, message: `Back-off ${Math.round(delay / 1000)}s: ${message}` } };
        this.publishStatus();
      }
    }, 1_000).unref();
  }

  private processSpec(c: Container): ContainerProcessSpec {
    const spec = c.spec;
    const podSecurity = this.pod.spec?.securityContext;
    const security = spec.securityContext;
    const uid = security?.runAsUser ?? podSecurity?.runAsUser ?? 0;
    const gid = security?.runAsGroup ?? podSecurity?.runAsGroup ?? 0;
    if ((security?.runAsNonRoot ?? podSecurity?.runAsNonRoot) && uid === 0) {
      throw new EnvError('container has runAsNonRoot and image will run as root');
    }
    const groups = [...(podSecurity?.supplementalGroups ?? []), ...(podSecurity?.fsGroup !== undefined ? [podSecurity.fsGroup] : [])];
    const argv = containerArgv(spec.image ?? '', spec.command, spec.args);
    const env = containerEnv(this.pod, spec, this.envSources());
    env.HOME ??= homeDirectory(uid, readPasswd());
    const mounts: Mount[] = [...this.volumes!.mountsFor(spec)];
    if (this.pod.spec?.dnsPolicy !== 'Default' && !mounts.some((m) => m.target === '/etc/resolv.conf'))
      mounts.push({ source: join(this.dir, 'resolv.conf'), target: '/etc/resolv.conf', readOnly: true });
    if (!mounts.some((m) => m.target === '/etc/hosts')) mounts.push({ source: join(this.dir, 'hosts'), target: '/etc/hosts', readOnly: true });
    for (const m of mounts) {
      // Containers see the host's files: a mount over the checkout or Node would hide the programs themselves.
      if ([CHECKOUT, process.execPath].some((p) => p === m.target || p.startsWith(`${m.target.replace(/\/$/, '')}/`))) {
        throw new VolumeError(
          `volumeMount at ${m.target} would hide ${CHECKOUT} or Node.js from the container (the node simulator has no image filesystem): mount somewhere else`,
        );
      }
    }
    prepareMountTargets(mounts, this.createdDirs);
    return {
      argv,
      env,
      uid,
      gid,
      supplementaryGroups: groups,
      capabilities: effectiveCapabilities(security),
      noNewPrivileges: security?.allowPrivilegeEscalation === false,
      // The node's network is the simulator's own: PID 1 may be another user's (a container's supervisor) and unreadable.
      netnsPath: this.pod.spec?.hostNetwork ? `/proc/${process.pid}/ns/net` : this.sandbox!.netnsPath,
      ...(this.cgroup ? { cgroup: this.cgroup } : {}),
      hostname: this.pod.spec?.hostNetwork ? this.context.nodeName : (this.pod.metadata?.name ?? 'pod'),
      mounts,
      mountTableFile: join(this.dir, `${spec.name}.fstab`),
      ...(spec.workingDir ? { workingDir: spec.workingDir } : {}),
      logFile: this.logFile(spec.name),
    };
  }

  private envSources(): EnvSources {
    return {
      configMap: (name) => this.lookups.configMaps.get(name),
      secret: (name) => this.lookups.secrets.get(name),
      apiserver: this.context.apiserver,
      nodeIp: this.context.nodeIp,
      allocatable: this.context.allocatable,
    };
  }

  private readonly lookups = { configMaps: new Map<string, Record<string, string>>(), secrets: new Map<string, Record<string, string>>() };

  /** ConfigMaps and Secrets the container's environment names, read before it is built. */
  private async readEnvSources(spec: V1Container): Promise<void> {
    const namespace = this.pod.metadata!.namespace!;
    const configMaps = new Set<string>();
    const secrets = new Set<string>();
    for (const e of spec.env ?? []) {
      if (e.valueFrom?.configMapKeyRef?.name) configMaps.add(e.valueFrom.configMapKeyRef.name);
      if (e.valueFrom?.secretKeyRef?.name) secrets.add(e.valueFrom.secretKeyRef.name);
    }
    for (const e of spec.envFrom ?? []) {
      if (e.configMapRef?.name) configMaps.add(e.configMapRef.name);
      if (e.secretRef?.name) secrets.add(e.secretRef.name);
    }
    const missing = (error: unknown) => {
      if ((error as { code?: number }).code === 404) return undefined;
      throw error;
    };
    for (const name of configMaps) {
      const found = await this.context.core.readNamespacedConfigMap({ name, namespace }).catch(missing);
      if (found) this.lookups.configMaps.set(name, found.data ?? {});
      else this.lookups.configMaps.delete(name);
    }
    for (const name of secrets) {
      const found = await this.context.core.readNamespacedSecret({ name, namespace }).catch(missing);
      if (found) this.lookups.secrets.set(name, Object.fromEntries(Object.entries(found.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()])));
      else this.lookups.secrets.delete(name);
    }
  }

  private async startContainer(c: Container): Promise<void> {
    let spec: ContainerProcessSpec;
    try {
      await this.readEnvSources(c.spec);
      spec = this.processSpec(c);
    } catch (error) {
      if (error instanceof ImagePullError) this.waitFailed(c, 'ErrImagePull', error.message, 'ImagePullBackOff');
      else if (error instanceof EnvError || error instanceof VolumeError)
        this.waitFailed(c, 'CreateContainerConfigError', error.message, 'CreateContainerConfigError');
      else this.waitFailed(c, 'CreateContainerError', (error as Error).message, 'CrashLoopBackOff');
      return;
    }
    if (this.terminating || this.closed) return;
    const { process, entered } = startContainerProcess(spec);
    c.process = process;
    c.processSpec = spec;
    c.killing = false;
    c.started = false;
    c.ready = false;
    const startedAt = new Date();
    c.state = { running: { startedAt } };
    const containerID = `flb-devenv://${this.uid}/${c.spec.name}/${c.restartCount}`;
    this.containerIds.set(c.spec.name, containerID);
    this.log.info({ container: c.spec.name, pid: process.pid, argv: spec.argv.slice(0, 4) }, 'container started');
    c.exited = new Promise<void>((resolve) => {
      process.once('exit', (code, signal) => {
        this.onExit(c, process, code, signal, startedAt);
        resolve();
      });
      process.once('error', (error) => {
        this.log.error({ err: error, container: c.spec.name }, 'container process failed to start');
      });
    });
    this.publishStatus();
    // Hooks and exec probes enter the container's namespaces: only once it has them.
    await entered;
    if (c.process !== process) return;
    const postStart = c.spec.lifecycle?.postStart;
    if (postStart) {
      // The kubelet gives a postStart hook no deadline of its own; two minutes keeps a stuck one from holding the pod forever.
      const outcome = await this.runHook(c, postStart, 120_000);
      if (outcome !== undefined) {
        this.log.warn({ container: c.spec.name, outcome }, 'postStart hook failed; killing the container');
        c.lastHookFailure = `FailedPostStartHook: ${outcome}`;
        this.signal(c, 'SIGKILL');
        return;
      }
    }
    if (c.process !== process) return;
    this.startProbes(c);
    this.publishStatus();
  }

  private readonly containerIds = new Map<string, string>();

  private onExit(c: Container, process: ChildProcess, code: number | null, signal: NodeJS.Signals | null, startedAt: Date): void {
    if (c.process !== process) return;
    for (const p of c.probes) p.stop();
    c.probes = [];
    c.readinessProbe = undefined;
    c.process = undefined;
    c.ready = false;
    c.started = false;
    const exitCode = code ?? 128 + (signal ? (SIGNALS[signal] ?? 9) : 9);
    const finishedAt = new Date();
    const terminated: V1ContainerStateTerminated = {
      exitCode,
      reason: exitCode === 0 ? 'Completed' : 'Error',
      startedAt,
      finishedAt,
      containerID: this.containerIds.get(c.spec.name),
      ...(c.lastHookFailure ? { message: c.lastHookFailure } : {}),
    };
    c.lastHookFailure = undefined;
    c.lastState = c.state.terminated ?? c.lastState;
    c.state = { terminated };
    this.log.info({ container: c.spec.name, exitCode, signal }, 'container exited');
    if (this.terminating || this.closed) {
      this.publishStatus();
      return;
    }
    if (c.role === 'init' && exitCode === 0) {
      c.succeeded = true;
      c.failures = 0;
    } else if (this.shouldRun(c) || c.role !== 'app') {
      // Ran ten minutes without trouble: the back-off starts over, as the kubelet's does.
      if (finishedAt.getTime() - startedAt.getTime() > 600_000) c.failures = 0;
      c.failures++;
      c.restartCount++;
      c.lastState = terminated;
      const delay = this.backoff(c);
      c.nextStartAt = now() + delay;
      if (delay > 0)
        c.state = {
          waiting: {
            reason: 'CrashLoopBackOff',
            message: `back-off ${Math.round(delay / 1000)}s restarting failed container=${c.spec.name} pod=${this.pod.metadata?.name}`,
          },
        };
    }
    this.publishStatus();
    this.kick();
  }

  private startProbes(c: Container): void {
    const podIp = this.pod.spec?.hostNetwork ? this.context.nodeIp : this.sandbox!.ip;
    const make = (kind: 'startup' | 'liveness' | 'readiness', probe: NonNullable<V1Container['readinessProbe']>) =>
      new ProbeRunner({
        kind,
        probe,
        container: c.spec,
        podIp,
        exec: (command, timeoutMs) => this.exec(c, command, timeoutMs),
        onChange: (healthy, result) => this.onProbe(c, kind, healthy, result.detail),
      });
    const afterStartup = () => {
      c.started = true;
      if (c.spec.livenessProbe) c.probes.push(make('liveness', c.spec.livenessProbe));
      if (c.spec.readinessProbe) {
        c.readinessProbe = make('readiness', c.spec.readinessProbe);
        c.probes.push(c.readinessProbe);
      } else c.ready = true;
      for (const p of c.probes) p.start();
      this.kick();
    };
    if (c.spec.startupProbe) {
      const startup = make('startup', c.spec.startupProbe);
      c.probes.push(startup);
      c.afterStartup = afterStartup;
      startup.start();
    } else afterStartup();
  }

  private onProbe(c: Container, kind: 'startup' | 'liveness' | 'readiness', healthy: boolean, detail: string): void {
    if (!c.process) return;
    if (kind === 'startup') {
      if (healthy) {
        for (const p of c.probes) p.stop();
        c.probes = [];
        c.afterStartup?.();
        c.afterStartup = undefined;
      } else {
        this.log.warn({ container: c.spec.name, detail }, 'startup probe failed; restarting the container');
        void this.stopContainer(c, now() + (this.pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000);
      }
    } else if (kind === 'liveness') {
      if (!healthy) {
        this.log.warn({ container: c.spec.name, detail }, 'liveness probe failed; restarting the container');
        void this.stopContainer(c, now() + (this.pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000);
      }
    } else {
      c.ready = healthy;
      if (!healthy) this.log.info({ container: c.spec.name, detail }, 'readiness probe failed');
    }
    this.publishStatus();
    this.kick();
  }

  private exec(c: Container, command: string[], timeoutMs: number): Promise<number> {
    const process = c.process;
    if (!process?.pid || !c.processSpec) return Promise.resolve(126);
    const argv = containerArgv(c.spec.image ?? '', command, []);
    return new Promise((resolve) => {
      const child = execInContainer(process.pid!, c.processSpec!, argv, this.logFile(c.spec.name));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        resolve(code ?? (signal ? 128 + (SIGNALS[signal] ?? 9) : 1));
      });
      child.once('error', () => resolve(127));
    });
  }

  /** `kubectl exec` without a kubelet API: a command in a running container, its output collected. */
  run(container: string, command: string[], timeoutMs = 30_000): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const c = this.containers.find((x) => x.spec.name === container);
    if (!c?.process?.pid || !c.processSpec) return Promise.reject(new Error(`container ${container} of ${this.pod.metadata?.name} is not running`));
    const argv = containerArgv(c.spec.image ?? '', command, []);
    return new Promise((resolve) => {
      const child = execInContainer(c.process!.pid!, c.processSpec!, argv, undefined);
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ exitCode: code ?? 128 + (signal ? (SIGNALS[signal] ?? 9) : 9), stdout, stderr });
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        resolve({ exitCode: 127, stdout, stderr: error.message });
      });
    });
  }

  /** Runs a lifecycle hook; undefined on success, else what went wrong. */
  private async runHook(c: Container, hook: V1LifecycleHandler, timeoutMs: number): Promise<string | undefined> {
    if (hook.exec?.command) {
      const code = await this.exec(c, hook.exec.command, timeoutMs);
      return code === 0 ? undefined : `exec ${hook.exec.command.join(' ')}: exit code ${code}`;
    }
    if (hook.httpGet) {
      const host = hook.httpGet.host ?? (this.pod.spec?.hostNetwork ? this.context.nodeIp : this.sandbox!.ip);
      const port = resolvePort(c.spec, hook.httpGet.port as number | string);
      return new Promise((resolve) => {
        const req = httpRequest({ host, port, path: hook.httpGet!.path ?? '/', timeout: timeoutMs, agent: false }, (res) => {
          res.resume();
          const status = res.statusCode ?? 0;
          resolve(status >= 200 && status < 400 ? undefined : `http GET ${host}:${port}${hook.httpGet!.path ?? '/'}: ${status}`);
        });
        req.once('timeout', () => req.destroy(new Error('timed out')));
        req.once('error', (error) => resolve(`http GET ${host}:${port}: ${error.message}`));
        req.end();
      });
    }
    if (hook.sleep) {
      await new Promise((r) => setTimeout(r, Math.min(timeoutMs, hook.sleep!.seconds * 1000)));
      return undefined;
    }
    return 'hook has no handler';
  }

  private signal(c: Container, signal: NodeJS.Signals): void {
    const pid = c.process?.pid;
    if (!pid) return;
    try {
      // The whole process group: a container's children go with it.
      process.kill(-pid, signal);
    } catch {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  }

  /** preStop, SIGTERM, and SIGKILL at the deadline. */
  private async stopContainer(c: Container, deadline: number): Promise<void> {
    if (!c.process || c.killing) {
      await c.exited;
      return;
    }
    c.killing = true;
    const process = c.process;
    const preStop = c.spec.lifecycle?.preStop;
    if (preStop && deadline > now()) {
      const outcome = await this.runHook(c, preStop, deadline - now());
      if (outcome) this.log.warn({ container: c.spec.name, outcome }, 'preStop hook failed');
    }
    if (c.process !== process) return;
    this.signal(c, 'SIGTERM');
    const killer = setTimeout(() => this.signal(c, 'SIGKILL'), Math.max(0, deadline - now()));
    await c.exited;
    clearTimeout(killer);
  }

  /** Everything stops: app containers together, then native sidecars in reverse order. */
  private async stopAll(graceMs: number): Promise<void> {
    const deadline = now() + graceMs;
    await Promise.all(this.containers.filter((c) => c.role === 'app' || c.role === 'init').map((c) => this.stopContainer(c, deadline)));
    for (const c of this.containers.filter((x) => x.role === 'sidecar').reverse()) {
      // A sidecar gets what is left of the grace period, and at least two seconds.
      await this.stopContainer(c, Math.max(deadline, now() + (graceMs > 0 ? 2_000 : 0)));
    }
  }

  private async terminate(graceMs: number, deleteAfter: boolean): Promise<void> {
    clearTimeout(this.retryTimer);
    this.log.info({ graceMs }, 'terminating the pod');
    await this.syncing?.catch(() => undefined);
    await this.stopAll(graceMs);
    this.publishStatus();
    await this.statusSettled();
    await this.tearDown();
    if (!deleteAfter) return;
    const metadata = this.pod.metadata!;
    try {
      await this.context.core.deleteNamespacedPod({
        name: metadata.name!,
        namespace: metadata.namespace!,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: this.uid } },
      });
    } catch (error) {
      if ((error as { code?: number }).code !== 404 && (error as { code?: number }).code !== 409)
        this.log.warn({ err: error }, 'the final delete of the pod failed');
    }
  }

  private async tearDown(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.refreshTimer);
    clearTimeout(this.statusTimer);
    // statusSettled() waits for this to go: a termination waiting there when a kill overtakes it
    // (a pod deleted with grace 0 arrives as an update and a delete at once) would poll forever.
    this.statusTimer = undefined;
    for (const c of this.containers) for (const p of c.probes) p.stop();
    if (this.sandbox) {
      const sandbox = this.sandbox;
      this.sandbox = undefined;
      await this.context.network
        .removePod(sandbox, { uid: this.uid, namespace: this.pod.metadata!.namespace!, name: this.pod.metadata!.name! })
        .catch((error: unknown) => this.log.warn({ err: error }, 'CNI DEL failed'));
    }
    if (this.cgroup) {
      const cgroup = this.cgroup;
      this.cgroup = undefined;
      await this.context.cgroups?.removePod(cgroup);
    }
    await this.volumes?.tearDown();
    for (const dir of this.createdDirs) {
      try {
        rmdirSync(dir);
      } catch {
        // not empty (another pod mounts there too) or already gone
      }
    }
  }

  // ---- files every container sees

  private writeNetworkFiles(): void {
    const spec: Partial<V1PodSpec> = this.pod.spec ?? {};
    const namespace = this.pod.metadata!.namespace!;
    const { nameserver, domain } = this.context.clusterDns;
    const config = spec.dnsConfig;
    const nameservers = spec.dnsPolicy === 'None' ? (config?.nameservers ?? []) : [nameserver, ...(config?.nameservers ?? [])];
    const searches =
      spec.dnsPolicy === 'None' ? (config?.searches ?? []) : [`${namespace}.svc.${domain}`, `svc.${domain}`, domain, ...(config?.searches ?? [])];
    const options = [{ name: 'ndots', value: '5' }, ...(config?.options ?? [])].map((o) => (o.value ? `${o.name}:${o.value}` : o.name));
    writeFileSync(
      join(this.dir, 'resolv.conf'),
      `${nameservers.map((n) => `nameserver ${n}`).join('\n')}\nsearch ${searches.join(' ')}\noptions ${options.join(' ')}\n`,
      { mode: 0o644 },
    );
    const name = this.pod.metadata!.name!;
    writeFileSync(
      join(this.dir, 'hosts'),
      `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${this.sandbox?.ip ?? this.context.nodeIp}\t${name}\n`,
      { mode: 0o644 },
    );
  }

  // ---- status

  private view(): ContainerView[] {
    return this.containers.map((c) => ({
      name: c.spec.name,
      image: c.spec.image ?? '',
      role: c.role,
      state: c.state,
      ...(c.lastState ? { lastState: c.lastState } : {}),
      started: c.started,
      ready: c.ready && Boolean(c.process),
      restartCount: c.restartCount,
      ...(this.containerIds.has(c.spec.name) ? { containerID: this.containerIds.get(c.spec.name)! } : {}),
    }));
  }

  /** Coalesced: many changes in a few milliseconds become one write. */
  private publishStatus(): void {
    if (this.statusTimer || this.silenced) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.statusWrite = this.statusWrite.then(() => this.writeStatus());
    }, 10);
  }

  private async statusSettled(): Promise<void> {
    while (this.statusTimer) await new Promise((r) => setTimeout(r, 5));
    await this.statusWrite;
  }

  private async writeStatus(): Promise<void> {
    // As a default kubelet's status update does: a started container not yet ready is probed again now.
    for (const c of this.containers) if (c.started && !c.ready && c.process) c.readinessProbe?.trigger();
    const status = podStatus(this.pod, {
      hostIP: this.context.nodeIp,
      ...(this.pod.spec?.hostNetwork ? { podIP: this.context.nodeIp } : this.sandbox ? { podIP: this.sandbox.ip } : {}),
      startTime: this.startTime,
      sandboxReady: Boolean(this.sandbox) || Boolean(this.pod.spec?.hostNetwork),
      initialized: this.initialized,
      containers: this.view(),
      ...(this.terminalPhase ? { terminalPhase: this.terminalPhase } : {}),
      ...(this.podReason ? { reason: this.podReason, message: this.podMessage ?? '' } : {}),
    });
    const metadata = this.pod.metadata!;
    try {
      const updated = await this.context.core.patchNamespacedPodStatus(
        { name: metadata.name!, namespace: metadata.namespace!, body: { status } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      if (updated.metadata?.uid === this.uid)
        this.pod = {
          ...updated,
          metadata: { ...updated.metadata, ...(this.pod.metadata?.deletionTimestamp ? { deletionTimestamp: this.pod.metadata.deletionTimestamp } : {}) },
        };
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (code === 404) return;
      this.log.warn({ err: error }, 'writing the pod status failed');
    }
  }
}

/** Signal numbers for the exit code a killed container reports (128 + n). */
const SIGNALS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };

/** Containers see the host's files, /etc/passwd among them. */
function readPasswd(): string {
  try {
    return readFileSync('/etc/passwd', 'utf8');
  } catch {
    return '';
  }
}
