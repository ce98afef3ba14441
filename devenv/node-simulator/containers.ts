// Containers as processes: each runs in its pod's network namespace and a mount and UTS namespace
// of its own (its volumes bind-mounted where the spec says, the pod's resolv.conf and hostname),
// as the spec's user and group with the spec's capabilities, under `setpriv --pdeathsig KILL` so
// it dies with the simulator however that ends. There is no image filesystem: a container sees
// the host's files (see devenv/README.md).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import type { V1SecurityContext } from '@kubernetes/client-node';

export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

export interface ContainerProcessSpec {
  argv: string[];
  env: Record<string, string>;
  uid: number;
  gid: number;
  supplementaryGroups: number[];
  /** Effective capabilities, lowercase without `cap_`; 'all' for a privileged container. */
  capabilities: string[] | 'all';
  noNewPrivileges: boolean;
  netnsPath: string;
  /** The pod's cgroup v2 folder, joined before anything of the container runs; none where the machine has no cgroup v2. */
  cgroup?: string;
  hostname: string;
  mounts: Mount[];
  /** Where the mounts are written for the container's `mount --all` (rewritten at each start). */
  mountTableFile: string;
  workingDir?: string;
  logFile: string;
}

/** containerd's default set for a container that neither adds nor drops. */
const DEFAULT_CAPABILITIES = [
  'chown',
  'dac_override',
  'fsetid',
  'fowner',
  'mknod',
  'net_raw',
  'setgid',
  'setuid',
  'setfcap',
  'setpcap',
  'net_bind_service',
  'sys_chroot',
  'kill',
  'audit_write',
];

export function effectiveCapabilities(security: V1SecurityContext | undefined): string[] | 'all' {
  if (security?.privileged) return 'all';
  const norm = (c: string) => c.toLowerCase().replace(/^cap_/, '');
  const drop = (security?.capabilities?.drop ?? []).map(norm);
  const base = drop.includes('all') ? [] : DEFAULT_CAPABILITIES.filter((c) => !drop.includes(c));
  return [...new Set([...base, ...(security?.capabilities?.add ?? []).map(norm)])];
}

/** The setpriv arguments that make the process the container's user with its capabilities. */
export function setprivArgs(spec: Pick<ContainerProcessSpec, 'uid' | 'gid' | 'supplementaryGroups' | 'capabilities' | 'noNewPrivileges'>): string[] {
  const args = [
    `--reuid=${spec.uid}`,
    `--regid=${spec.gid}`,
    spec.supplementaryGroups.length ? `--groups=${spec.supplementaryGroups.join(',')}` : '--clear-groups',
  ];
  if (spec.capabilities !== 'all') {
    const list = ['-all', ...spec.capabilities.map((c) => `+${c}`)].join(',');
    // Root gets what the bounding set allows at exec; anyone else keeps capabilities only as ambient ones.
    args.push('--inh-caps', spec.uid === 0 ? '-all' : list, '--bounding-set', list);
    if (spec.uid !== 0) args.push('--ambient-caps', list);
  }
  if (spec.noNewPrivileges) args.push('--no-new-privs');
  return args;
}

// Runs as root in the new mount and UTS namespaces, then becomes the container's process.
// Arguments: hostname, cgroup folder (or ''), working dir, mount table file (or ''), then the
// command. It joins the cgroup first: nsenter and unshare before it open no socket, so the eBPF
// programs on the node's cgroup still see every socket of the container. It closes fd 3 once the container's namespaces and mounts are in place (see
// ContainerProcess.entered). Every program run here is on a pod's start path, once per container,
// on cores the starting pods share: the hostname and the cgroup are written by the shell itself,
// and one `mount --all` makes every mount (read-only ones included: libmount remounts a bind
// mount with the options asked), where a `hostname`, a `mount --bind` per volume and a remount
// per read-only one made a pod's sidecar wait for about a dozen programs.
const ENTER = `set -e
cgroup=$2; workdir=$3; table=$4
if [ -n "$cgroup" ]; then echo $$ > "$cgroup/cgroup.procs"; fi
echo "$1" > /proc/sys/kernel/hostname
shift 4
if [ -n "$table" ]; then mount --all --fstab "$table"; fi
if [ -n "$workdir" ]; then cd "$workdir"; fi
exec 3>&-
exec "$@"`;

/** A path as an fstab field: octal escapes for what would end or bend the field, as libmount reads them. */
function fstabField(path: string): string {
  return path.replace(/[\\\s#]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/** The container's mounts as the table its `mount --all` reads, in the spec's order (a mount inside another comes after it). */
export function mountTable(mounts: readonly Mount[]): string {
  return mounts.map((m) => `${fstabField(m.source)} ${fstabField(m.target)} none ${m.readOnly ? 'bind,ro' : 'bind'} 0 0\n`).join('');
}

/**
 * Mount targets that do not exist on the host are made (empty folders; the bind mounts themselves
 * are private to the container); the caller removes what `created` lists once the pod is gone.
 */
export function prepareMountTargets(mounts: readonly Mount[], created: Set<string>): void {
  for (const mount of mounts) {
    if (existsSync(mount.target)) continue;
    let top = mount.target;
    while (!existsSync(dirname(top))) top = dirname(top);
    mkdirSync(mount.target, { recursive: true });
    created.add(top);
  }
}

/**
 * A command run in a container (exec probes, hooks, `kubectl exec`), first moved into the cgroup:
 * before it enters the pod's namespaces, so that
 * nothing of the container ever runs outside it (the eBPF programs on the node's cgroup see each
 * of its sockets), and through the host's own /sys (a namespace entered with `ip netns exec`
 * remounts /sys).
 */
export function inCgroup(cgroup: string | undefined, argv: string[]): string[] {
  if (!cgroup) return argv;
  return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...argv];
}

export interface ContainerProcess {
  process: ChildProcess;
  /**
   * Resolves once the process is in the container's namespaces with its mounts made (or has
   * exited): until then it is still nsenter, unshare or the mounting shell, and a command entering
   * "its" namespaces (a postStart hook, an exec probe) would land in the node's network namespace.
   * A container runtime's start returns only then, and the kubelet runs hooks and probes after it:
   * kuberuntime_container.go's startContainer returns after the CRI StartContainer (then the
   * postStart hook), and containerd's StartContainer returns once the task is created (runc create:
   * namespaces, mounts) and started (runc start: the container's process exec'd). So the pod worker
   * counts a container started, and starts the next init container, only once this resolves: at
   * the spawn would be earlier than any runtime. What it costs here is kept small instead (ENTER).
   */
  entered: Promise<void>;
}

export function startContainerProcess(spec: ContainerProcessSpec): ContainerProcess {
  if (spec.mounts.length) writeFileSync(spec.mountTableFile, mountTable(spec.mounts), { mode: 0o600 });
  const argv = [
    'nsenter',
    `--net=${spec.netnsPath}`,
    '--',
    'unshare',
    '--mount',
    // Always a UTS namespace of its own: ENTER writes the hostname through /proc.
    '--uts',
    // Slave, as the kubelet's HostToContainer: mounts the node makes later (a new pod's network
    // namespace under /var/run/netns, for the CNI agent) reach containers; theirs never reach the node.
    '--propagation',
    'slave',
    '--',
    'sh',
    '-c',
    ENTER,
    'flb-container',
    spec.hostname,
    spec.cgroup ?? '',
    spec.workingDir ?? '',
    spec.mounts.length ? spec.mountTableFile : '',
    'setpriv',
    ...setprivArgs(spec),
    '--pdeathsig',
    'KILL',
    '--',
    ...spec.argv,
  ];
  const log = openSync(spec.logFile, 'a');
  try {
    // Its own process group: Ctrl-C in the simulator's terminal must not reach containers, which
    // stop in the order Kubernetes uses. Fd 3 is open until the container is set up (ENTER closes it).
    const process = spawn(argv[0]!, argv.slice(1), { env: spec.env, stdio: ['ignore', log, log, 'pipe'], detached: true });
    const setUp = process.stdio[3] as Readable;
    const entered = new Promise<void>((resolve) => {
      setUp.once('close', () => resolve());
      setUp.once('error', () => resolve());
      process.once('error', () => resolve());
      setUp.resume();
    });
    return { process, entered };
  } finally {
    closeSync(log);
  }
}

/**
 * A command inside a running container's namespaces, as its user: exec probes and hooks (output to
 * the container's log), and `kubectl exec`'s part (output piped back: `logFile` undefined).
 */
export function execInContainer(pid: number, spec: ContainerProcessSpec, command: string[], logFile: string | undefined): ChildProcess {
  const log = logFile ? openSync(logFile, 'a') : undefined;
  try {
    const workdir = spec.workingDir ? [`--wd=${spec.workingDir}`] : [];
    const [file, ...args] = inCgroup(spec.cgroup, [
      'nsenter',
      `--target=${pid}`,
      '--mount',
      '--uts',
      '--net',
      ...workdir,
      '--',
      'setpriv',
      ...setprivArgs(spec),
      '--pdeathsig',
      'KILL',
      '--',
      ...command,
    ]);
    return spawn(file!, args, {
      env: spec.env,
      stdio: log === undefined ? ['ignore', 'pipe', 'pipe'] : ['ignore', log, log],
    });
  } finally {
    if (log !== undefined) closeSync(log);
  }
}
