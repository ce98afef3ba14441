// Containers from the images the builder made (devenv/images), run by Debian's runc the way a
// kubelet's runtime runs a pod's containers: each in its own PID, mount, IPC and UTS namespaces
// on a read-only copy of its image's filesystem, joining the pod's network namespace (made by the
// CNI chain), as the user the spec or the image says, with the capabilities listed and no others,
// no new privileges. What is not done: cgroup limits, seccomp and AppArmor profiles.
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageStore } from '../../devenv/images/builder.js';
import { isAlive } from './leftovers.js';

/** runc's state, one folder per test process, so the next run can end a killed run's containers. */
const STATE_ROOTS = '/run/flb-e2e-runc';
const NAME_PREFIX = 'flb-e2e-';

export interface ContainerSpec {
  /** Unique in the runtime: the runc id and the buildah container's name. */
  name: string;
  image: string;
  /** As in a pod: replaces the image's entrypoint; `args` replaces its cmd. */
  command?: string[];
  args?: string[];
  env?: Record<string, string>;
  /** Default: the image's USER. */
  user?: { uid: number; gid: number };
  /** Added capabilities, e.g. NET_ADMIN; every other one is dropped. */
  capabilities?: string[];
  netnsPath: string;
  /** Bind mounts from the host (volumes). */
  mounts?: { source: string; destination: string; readOnly?: boolean }[];
}

interface ImageConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  User?: string;
  WorkingDir?: string;
}

export class Container {
  constructor(
    readonly name: string,
    readonly rootfs: string,
    readonly logFile: string,
    private readonly runtime: ContainerRuntime,
    readonly exited: Promise<number | string>,
  ) {}

  /** The container's first process as the host sees it. */
  async pid(): Promise<number> {
    const state = JSON.parse((await this.runtime.runc(['state', this.name])).stdout) as { pid: number };
    return state.pid;
  }

  /** `waiting`, or the container's end with its log when it stops first (a crash fails at once, not at a timeout). */
  async whileRunning<T>(waiting: Promise<T>): Promise<T> {
    const ended = this.exited.then((code) => {
      throw new Error(`container ${this.name} exited (${code}) first; its log:\n${this.log().slice(-3000)}`);
    });
    return Promise.race([waiting, ended]);
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }
}

export class ContainerRuntime {
  private readonly dir: string;
  private readonly stateRoot: string;
  private readonly containers: Container[] = [];

  private constructor(private readonly store: ImageStore) {
    this.dir = mkdtempSync(join(tmpdir(), 'flb-runc-'));
    this.stateRoot = join(STATE_ROOTS, String(process.pid));
  }

  /** A runtime for this process, after ending the containers of runs that died before they could. */
  static async create(store: ImageStore): Promise<ContainerRuntime> {
    const stale = existsSync(STATE_ROOTS) ? readdirSync(STATE_ROOTS).filter((pid) => !isAlive(Number(pid))) : [];
    for (const pid of stale) {
      const root = join(STATE_ROOTS, pid);
      const ids = (await execa('runc', ['--root', root, 'list', '-q'], { reject: false })).stdout.split('\n').filter(Boolean);
      for (const id of ids) await execa('runc', ['--root', root, 'delete', '--force', id], { reject: false });
      rmSync(root, { recursive: true, force: true });
    }
    const names = (await store.buildah(['containers', '--format', '{{.ContainerName}}']).catch(() => '')).split('\n');
    for (const name of names) {
      const pid = name.startsWith(NAME_PREFIX) ? Number(name.slice(NAME_PREFIX.length).split('-')[0]) : NaN;
      if (pid && !isAlive(pid)) await store.buildah(['rm', name]).catch(() => undefined);
    }
    return new ContainerRuntime(store);
  }

  runc(args: string[]) {
    return execa('runc', ['--root', this.stateRoot, ...args]);
  }

  /**
   * Starts the container; `exited` resolves with its exit code (a string for a signal). An init
   * container is awaited on that; a long-running one is stopped by `stopAll`.
   */
  async start(spec: ContainerSpec): Promise<Container> {
    const image = JSON.parse(await this.store.buildah(['inspect', '--type', 'image', spec.image])) as { OCIv1: { config?: ImageConfig } };
    const config = image.OCIv1.config ?? {};
    const name = `${NAME_PREFIX}${process.pid}-${spec.name}`;
    const builder = (await this.store.buildah(['from', '--pull=never', '--name', name, spec.image])).trim();
    const rootfs = (await this.store.buildah(['mount', builder])).trim();
    const bundle = join(this.dir, spec.name);
    mkdirSync(bundle, { recursive: true });
    const argv = [...(spec.command ?? config.Entrypoint ?? []), ...(spec.args ?? (spec.command ? [] : (config.Cmd ?? [])))];
    const [uid, gid] = spec.user ? [spec.user.uid, spec.user.gid] : (config.User ?? '0:0').split(':').map(Number);
    const capabilities = (spec.capabilities ?? []).map((name) => `CAP_${name}`);
    // The kubelet's own files in every container: the pod's resolv.conf and hosts.
    writeFileSync(join(bundle, 'resolv.conf'), 'nameserver 127.0.0.53\n');
    writeFileSync(join(bundle, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n`);
    const runtimeSpec = {
      ociVersion: '1.0.2',
      process: {
        terminal: false,
        user: { uid, gid: gid ?? uid },
        args: argv,
        env: [...(config.Env ?? []), ...Object.entries(spec.env ?? {}).map(([key, value]) => `${key}=${value}`)],
        cwd: config.WorkingDir || '/',
        capabilities: { bounding: capabilities, effective: capabilities, permitted: capabilities },
        noNewPrivileges: true,
      },
      root: { path: rootfs, readonly: true },
      hostname: spec.name,
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
        { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
        { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
        { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', 'size=65536k'] },
        { destination: '/etc/resolv.conf', type: 'bind', source: join(bundle, 'resolv.conf'), options: ['rbind', 'ro'] },
        { destination: '/etc/hosts', type: 'bind', source: join(bundle, 'hosts'), options: ['rbind', 'ro'] },
        ...(spec.mounts ?? []).map((mount) => ({
          destination: mount.destination,
          type: 'bind',
          source: mount.source,
          options: ['rbind', mount.readOnly ? 'ro' : 'rw'],
        })),
      ],
      linux: {
        namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: spec.netnsPath }],
        maskedPaths: ['/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/sched_debug', '/sys/firmware'],
        readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      },
    };
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(runtimeSpec, null, 2));
    const logFile = join(this.dir, `${spec.name}.log`);
    const fd = openSync(logFile, 'a');
    // runc stays as the container's parent until it exits, so its exit status is the container's.
    const child = spawn('runc', ['--root', this.stateRoot, 'run', '--bundle', bundle, name], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const exited = new Promise<number | string>((resolve) => {
      child.once('error', (error) => resolve(`runc could not start: ${error.message}`));
      child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
    });
    const container = new Container(name, rootfs, logFile, this, exited);
    this.containers.push(container);
    return container;
  }

  /** SIGTERM, then SIGKILL after `graceMs`, as the kubelet stops a container; then its filesystem goes. */
  async stop(container: Container, graceMs = 5000): Promise<void> {
    await this.runc(['kill', container.name, 'TERM']).catch(() => undefined);
    const timeout = new Promise((resolve) => setTimeout(resolve, graceMs).unref());
    if ((await Promise.race([container.exited.then(() => 'exited'), timeout])) !== 'exited') {
      await this.runc(['kill', container.name, 'KILL']).catch(() => undefined);
      await container.exited;
    }
    await this.runc(['delete', '--force', container.name]).catch(() => undefined);
    await this.store.buildah(['rm', container.name]).catch(() => undefined);
  }

  async stopAll(): Promise<void> {
    for (const container of this.containers.reverse()) await this.stop(container, 2000);
    this.containers.length = 0;
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.stateRoot, { recursive: true, force: true });
  }
}
