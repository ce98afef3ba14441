/*
 * `flb bpf`: flags parsed here, the work done in loader.ts. Data goes to stdout (a line per item,
 * or JSON with --json), progress to the log on stderr.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { ActionableError, UsageError } from '../common/errors.js';
import type { Interception } from '../common/contract/index.js';

interface MeshFlags {
  mesh: string;
  bpffs?: string;
  json?: boolean;
}

function withMesh(command: Command): Command {
  return command
    .option('--mesh <name>', 'the mesh whose programs these are (their pins live under <bpffs>/flb-mesh/<name>)', 'flb')
    .option('--bpffs <path>', 'where bpffs is mounted (mounted there if it is not)', '/sys/fs/bpf')
    .option('--json', 'print JSON instead of lines');
}

const print = (flags: MeshFlags, data: unknown, lines: string[]) => process.stdout.write(flags.json ? `${JSON.stringify(data)}\n` : `${lines.join('\n')}\n`);

export async function readSettings(text: string): Promise<Interception> {
  const { InterceptionSchema, parseDocument } = await import('../common/contract/index.js');
  let source = '--settings';
  if (text.startsWith('@')) {
    source = text.slice(1);
    try {
      text = readFileSync(source, 'utf8');
    } catch (error) {
      throw new ActionableError(`cannot read ${source}: ${(error as Error).message}`);
    }
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new ActionableError(`${source} is not JSON: ${(error as Error).message}`, 'it holds the flomesh.io/interception settings, e.g. {"version":1}');
  }
  // Registering is itself the choice of eBPF for this namespace, so the mode field is not read
  // (register itself refuses what eBPF cannot honour, naming it).
  const withoutMode = data && typeof data === 'object' && !Array.isArray(data) ? { ...data, mode: 'cni' } : data;
  return parseDocument(InterceptionSchema, withoutMode, source);
}

export function bpfCommands(): Command[] {
  const bpf = new Command('bpf')
    .summary('load, inspect or unload the eBPF interception programs')
    .description(
      `eBPF interception of outbound TCP without iptables: cgroup/connect4 and connect6 send a meshed namespace's connections to its sidecar's outbound port, sockops and cgroup/getsockopt answer the sidecar's SO_ORIGINAL_DST, getpeername4/6 show the app the address it dialled. The programs attach to a cgroup v2 through bpf_links (they coexist with other programs there) and act only in the network namespaces registered with 'flb bpf register'. Needs root; 'flb bpf check' says what is missing, and iptables interception is the fallback. Exit codes: 0 done, 1 failed (or, for check and status, not available / not loaded), 2 usage.`,
    );

  withMesh(bpf.command('check'))
    .description('Check the kernel and host for eBPF interception: exit 1 and name what is missing.')
    .option(
      '--cgroup <path>',
      "the cgroup v2 to check (default: the cgroup2 mount in /proc/self/mountinfo; auto: the host's, from /proc/1/mountinfo, as the node agent finds it)",
    )
    .action(async (flags: MeshFlags & { cgroup?: string }) => {
      const { checkFeatures } = await import('./loader.js');
      const report = await checkFeatures({ ...(flags.cgroup ? { cgroup: flags.cgroup } : {}), ...(flags.bpffs ? { bpffs: flags.bpffs } : {}) });
      print(
        flags,
        report,
        report.ok
          ? [`eBPF interception can run: kernel ${report.kernel}, cgroup ${report.cgroup}, bpffs ${report.bpffs}`]
          : report.missing.map((m) => `missing: ${m}`),
      );
      if (!report.ok) throw new ActionableError('eBPF interception cannot run on this host', 'iptables interception is the fallback');
    });

  withMesh(bpf.command('load'))
    .description('Load the programs and attach them to a cgroup v2 (a second load of the same mesh changes nothing).')
    .option('--cgroup <path>', 'the cgroup v2 to attach to; every process in it and below is covered (default: the root of the cgroup2 mount)')
    .action(async (flags: MeshFlags & { cgroup?: string }) => {
      const [{ load }, { createLogger }] = await Promise.all([import('./loader.js'), import('../common/log.js')]);
      const result = await load({ mesh: flags.mesh, ...(flags.cgroup ? { cgroup: flags.cgroup } : {}), ...(flags.bpffs ? { bpffs: flags.bpffs } : {}) });
      createLogger('bpf').info(result, result.alreadyLoaded ? 'already loaded' : 'loaded and attached');
      print(flags, result, [`${result.alreadyLoaded ? 'already loaded' : 'loaded'}: mesh ${result.mesh}, cgroup ${result.cgroup}, pins ${result.pins}`]);
    });

  withMesh(bpf.command('unload'))
    .description('Detach and remove every program, map, link and pin of the mesh, and wait until the kernel has freed them.')
    .action(async (flags: MeshFlags) => {
      const [{ unload }, { createLogger }] = await Promise.all([import('./loader.js'), import('../common/log.js')]);
      const result = await unload({ mesh: flags.mesh, ...(flags.bpffs ? { bpffs: flags.bpffs } : {}) });
      createLogger('bpf').info(result, result.wasLoaded ? 'unloaded' : 'was not loaded');
      print(flags, result, [result.wasLoaded ? `unloaded: mesh ${result.mesh}` : `not loaded: mesh ${result.mesh}`]);
    });

  withMesh(bpf.command('status'))
    .description('Show what of the mesh is loaded and attached: exit 1 when it is not (completely) loaded.')
    .action(async (flags: MeshFlags) => {
      const { status } = await import('./loader.js');
      const result = await status({ mesh: flags.mesh, ...(flags.bpffs ? { bpffs: flags.bpffs } : {}) });
      print(
        flags,
        result,
        result.loaded
          ? [
              `mesh ${result.mesh}: ${result.complete ? 'loaded' : 'partly loaded'}${result.cgroup ? ` at ${result.cgroup}` : ''}, ${result.namespaces} namespace(s) registered, pins ${result.pins}`,
              ...result.programs.map(
                (p) =>
                  `${p.name.padEnd(15)} ${p.attach.padEnd(13)} ${p.programId !== undefined ? `prog ${p.programId}` : 'no program'}  ${p.linkId !== undefined ? `link ${p.linkId} cgroup ${p.cgroupId}` : 'not attached'}`,
              ),
            ]
          : [`mesh ${result.mesh}: not loaded`],
      );
      if (!result.complete) {
        throw new ActionableError(
          `mesh ${result.mesh} is ${result.loaded ? 'partly loaded' : 'not loaded'}`,
          `flb bpf load --mesh ${result.mesh} loads it${result.loaded ? ' (after flb bpf unload, for a partial load)' : ''}`,
        );
      }
    });

  withMesh(bpf.command('register'))
    .description("Mesh a network namespace: its processes' connections go to its sidecar, by these settings (again: replace them).")
    .requiredOption('--netns <path>', 'the network namespace, e.g. /var/run/netns/NAME or /proc/PID/ns/net')
    .requiredOption('--settings <json|@file>', 'the flomesh.io/interception settings (ports, exclusions, proxy UID); mode is not read')
    .action(async (flags: MeshFlags & { netns: string; settings: string }) => {
      const { register } = await import('./loader.js');
      const result = await register({
        mesh: flags.mesh,
        netns: flags.netns,
        settings: await readSettings(flags.settings),
        ...(flags.bpffs ? { bpffs: flags.bpffs } : {}),
      });
      print(flags, result, [`registered: ${result.netns} (cookie ${result.cookie}) in mesh ${result.mesh}`]);
    });

  withMesh(bpf.command('unregister'))
    .description('Leave a network namespace alone again: by its path, or by the cookie register printed once it is gone.')
    .option('--netns <path>', 'the network namespace')
    .option('--cookie <n>', "the namespace's cookie, as register printed it (for a namespace that is gone)")
    .action(async (flags: MeshFlags & { netns?: string; cookie?: string }) => {
      const { unregister } = await import('./loader.js');
      if ((flags.netns === undefined) === (flags.cookie === undefined)) throw new UsageError('flb bpf unregister needs one of --netns PATH or --cookie N');
      const result = unregister({
        mesh: flags.mesh,
        ...(flags.netns !== undefined ? { netns: flags.netns } : {}),
        ...(flags.cookie !== undefined ? { cookie: flags.cookie } : {}),
        ...(flags.bpffs ? { bpffs: flags.bpffs } : {}),
      });
      const which = result.netns ?? `cookie ${result.cookie}`;
      print(flags, result, [result.wasRegistered ? `unregistered: ${which}` : `was not registered: ${which}`]);
    });

  withMesh(bpf.command('gc'))
    .description('Unregister every namespace that no longer exists (a pod deleted without its unregister).')
    .action(async (flags: MeshFlags) => {
      const { collectGarbage } = await import('./loader.js');
      const result = collectGarbage({ mesh: flags.mesh, ...(flags.bpffs ? { bpffs: flags.bpffs } : {}) });
      print(flags, result, [
        `removed ${result.removed.length} namespace(s) that are gone${result.removed.length ? ` (cookies ${result.removed.join(', ')})` : ''}, kept ${result.kept}`,
      ]);
    });

  return [bpf];
}
