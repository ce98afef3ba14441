// Containers as processes: each runs in its pod's network namespace and a mount and UTS namespace
// of its own (its volumes bind-mounted where the spec says, the pod's resolv.conf and hostname),
// as the spec's user and group with the spec's capabilities, under `setpriv --pdeathsig KILL` so
// it dies with the simulator however that ends. There is no image filesystem: a container sees
// the host's files (see devenv/README.md).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
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
  /** The pod's cgroup v2 folder, joined before anything else (see inCgroup); none where the machine has no cgroup v2. */
  cgroup?: string;
  hostname: string;
  mounts: Mount[];
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
// Arguments: hostname, working dir, mount count, (source target ro|rw)..., then the command. It
// closes fd 3 once the container's namespaces and mounts are in place (see ContainerProcess.entered).
const ENTER = `set -e
hostname "$1"; workdir=$2; n=$3; shift 3
while [ "$n" -gt 0 ]; do
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3; n=$((n - 1))
done
if [ -n "$workdir" ]; then cd "$workdir"; fi
exec 3>&-
exec "$@"`;

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
 * The command, first moved into the cgroup: before it enters the pod's namespaces, so that
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
   * A container runtime's start returns only then, and the kubelet runs hooks and probes after it.
   */
  entered: Promise<void>;
}

export function startContainerProcess(spec: ContainerProcessSpec): ContainerProcess {
  const mountArgs = spec.mounts.flatMap((m) => [m.source, m.target, m.readOnly ? 'ro' : 'rw']);
  const nsenter = [
    'nsenter',
    `--net=${spec.netnsPath}`,
    '--',
    'unshare',
    '--mount',
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
    spec.workingDir ?? '',
    String(spec.mounts.length),
    ...mountArgs,
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
    const [file, ...argv] = inCgroup(spec.cgroup, nsenter);
    const process = spawn(file!, argv, { env: spec.env, stdio: ['ignore', log, log, 'pipe'], detached: true });
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
