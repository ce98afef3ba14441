import { execa, type ResultPromise } from 'execa';
import { readdirSync } from 'node:fs';

/**
 * Test hosts as network namespaces joined by veth pairs on private addresses the test makes
 * itself. Names carry the creating process's pid so that namespaces left by a killed test run
 * are found and removed by the next one.
 */
const PREFIX = 'flbt-';

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} needs root (network namespaces, iptables): run the tests as root, e.g. sudo npm test`);
  }
}

export async function requireTools(tools: string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of tools) {
    if ((await execa('sh', ['-c', `command -v ${t}`], { reject: false })).exitCode !== 0) missing.push(t);
  }
  if (missing.length) throw new Error(`missing ${missing.join(', ')}: run 'npm run setup' (apt-get install iptables iproute2 util-linux)`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Deletes test namespaces whose creating process is gone. */
export async function removeStaleNamespaces(): Promise<void> {
  let names: string[];
  try {
    names = readdirSync('/var/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^flbt-(\d+)-/.exec(name)?.[1]);
    if (pid && !alive(pid)) await execa('ip', ['netns', 'del', name], { reject: false });
  }
}

let counter = 0;

export interface Netns {
  name: string;
  path: string;
  /** Runs a command inside the namespace. */
  exec(
    command: string,
    args: string[],
    options?: { input?: string; reject?: boolean; uid?: number },
  ): Promise<{ stdout: string; stderr: string; exitCode: number }>;
}

export async function createNetns(role: string): Promise<Netns> {
  const name = `${PREFIX}${process.pid}-${counter++}-${role}`.slice(0, 40);
  await execa('ip', ['netns', 'add', name]);
  await execa('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return {
    name,
    path: `/var/run/netns/${name}`,
    async exec(command, args, options = {}) {
      const asUser = options.uid !== undefined ? ['setpriv', `--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups', '--'] : [];
      const r = await execa('ip', ['netns', 'exec', name, ...asUser, command, ...args], {
        reject: options.reject ?? true,
        ...(options.input !== undefined ? { input: options.input } : {}),
      });
      return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? 0 };
    },
  };
}

export async function deleteNetns(ns: Netns | undefined): Promise<void> {
  if (ns) await execa('ip', ['netns', 'del', ns.name], { reject: false });
}

/** A veth pair between two namespaces with the given addresses (CIDR form), both up. */
export async function link(a: Netns, aAddresses: string[], b: Netns, bAddresses: string[]): Promise<void> {
  const aIf = `va${counter}`;
  const bIf = `vb${counter++}`;
  await execa('ip', ['link', 'add', aIf, 'netns', a.name, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name]);
  for (const [ns, iface, addresses] of [
    [a, aIf, aAddresses],
    [b, bIf, bAddresses],
  ] as const) {
    for (const address of addresses) {
      await execa('ip', ['-n', ns.name, 'addr', 'add', address, 'dev', iface, ...(address.includes(':') ? ['nodad'] : [])]);
    }
    await execa('ip', ['-n', ns.name, 'link', 'set', iface, 'up']);
  }
}

/**
 * A long-running command in a namespace (as `uid` when given), killed with the test (one setpriv
 * both changes the user and sets the parent-death signal: a signal set by an earlier process
 * would be cleared by the change of user). Rejects nothing: the caller reads the exit.
 */
export function spawnIn(ns: Netns, args: string[], options: { uid?: number; env?: Record<string, string> } = {}): ResultPromise {
  const asUser = options.uid !== undefined ? [`--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups'] : [];
  return execa('ip', ['netns', 'exec', ns.name, 'setpriv', ...asUser, '--pdeathsig', 'KILL', '--', ...args], {
    reject: false,
    env: options.env ?? {},
    extendEnv: true,
  });
}

/** Resolves once the process prints `text`; rejects with its stderr if it exits first. */
export function printed(child: ResultPromise, text: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes(text) && resolve());
    void child.then((r) => reject(new Error(`${r.command} exited before printing ${text}: ${r.stderr}`)));
  });
}
