/*
 * `flb iptables` and `flb cni`: flags parsed here, the work done in rules.ts / iptables.ts (the
 * rules), runner.ts (the node agent and its repair loop), install.ts and validate.ts.
 */
import { fileURLToPath } from 'node:url';
import { durationArgument, portArgument, untilStopped } from '../common/cli.js';
import { Command, Option } from 'commander';
import { parseDuration, parseHostPort } from '../common/duration.js';
import { ActionableError } from '../common/errors.js';
import { DEFAULT_ADMIN_PORT, DEFAULT_WAIT_TIMEOUT_MS, waitUntilReady } from '../common/sidecar-ready.js';
import type { Interception } from '../common/contract/index.js';

interface IptablesFlags {
  settings?: string;
  backend: 'auto' | 'legacy' | 'nft';
  ipv6?: 'auto' | 'enabled' | 'disabled';
  netns?: string;
}

function withCommonOptions(command: Command): Command {
  return command
    .option('--settings <json|@file>', 'interception settings (the flomesh.io/interception JSON); default: $FLB_INTERCEPTION, else the mesh defaults')
    .addOption(new Option('--backend <backend>', 'iptables backend').choices(['auto', 'legacy', 'nft']).default('auto'))
    .addOption(
      new Option('--ipv6 <mode>', 'override the settings: IPv6 rules too (auto: when the namespace has an IPv6 address)').choices([
        'auto',
        'enabled',
        'disabled',
      ]),
    )
    .option('--netns <path>', 'work inside this network namespace (e.g. /var/run/netns/NAME)');
}

async function prepare(flags: IptablesFlags): Promise<{ settings: Interception; options: { backend?: 'legacy' | 'nft'; netns?: string } }> {
  const { loadInterception } = await import('./settings.js');
  const settings = loadInterception(flags.settings);
  if (flags.ipv6) settings.ipv6 = flags.ipv6;
  return { settings, options: { ...(flags.backend !== 'auto' ? { backend: flags.backend } : {}), ...(flags.netns ? { netns: flags.netns } : {}) } };
}

export function iptablesCommand(): Command {
  const iptables = new Command('iptables')
    .summary('apply, clean, print or verify the traffic interception rules')
    .description('The one iptables rule builder, for the init container, the CNI node agent and VMs. Rules live in FLB_* chains of the nat table.');

  withCommonOptions(iptables.command('apply').description('Apply the rules atomically (iptables-restore --noflush); a second apply changes nothing.'))
    .option(
      '--wait-for-sidecar',
      "then wait until the sidecar's admin port answers /ready: the init container after a native sidecar, which holds the app until the sidecar is ready",
    )
    .addOption(new Option('--sidecar-admin-port <port>', "the sidecar's admin port").default(DEFAULT_ADMIN_PORT).argParser(portArgument))
    .addOption(
      new Option('--sidecar-timeout <duration>', 'give up waiting for the sidecar after').default(DEFAULT_WAIT_TIMEOUT_MS, '120s').argParser(durationArgument),
    )
    .action(async (flags: IptablesFlags & { waitForSidecar?: boolean; sidecarAdminPort: number; sidecarTimeout: number }) => {
      const [{ applyInterception }, { createLogger }] = await Promise.all([import('./iptables.js'), import('../common/log.js')]);
      const { settings, options } = await prepare(flags);
      const result = await applyInterception(settings, options);
      const log = createLogger('iptables');
      log.info(
        { backend: result.backend, families: result.families, unchanged: result.unchanged },
        result.unchanged.length === result.families.length ? 'rules already in place' : 'rules applied',
      );
      if (settings.bgpVips?.length)
        log.info({ vips: settings.bgpVips, added: result.vipsAdded }, result.vipsAdded.length ? 'BGP VIPs put on lo' : 'BGP VIPs already on lo');
      if (flags.waitForSidecar) {
        log.info({ adminPort: flags.sidecarAdminPort }, 'waiting for the sidecar to be ready');
        const started = Date.now();
        await waitUntilReady({ adminPort: flags.sidecarAdminPort, timeoutMs: flags.sidecarTimeout });
        log.info({ waitedMs: Date.now() - started }, 'sidecar ready');
      }
    });

  withCommonOptions(iptables.command('clean').description("Remove every FLB_* chain and the jumps to them, and the settings' BGP VIPs from lo.")).action(
    async (flags: IptablesFlags) => {
      const [{ cleanInterception }, { createLogger }] = await Promise.all([import('./iptables.js'), import('../common/log.js')]);
      const { settings, options } = await prepare(flags);
      createLogger('iptables').info(await cleanInterception(settings.bgpVips ?? [], options), 'rules removed');
    },
  );

  withCommonOptions(iptables.command('print').description('Print the iptables-restore documents without touching anything.')).action(
    async (flags: IptablesFlags) => {
      const { buildRules, printDocument } = await import('./rules.js');
      const { settings } = await prepare(flags);
      // print never looks at the host: 'auto' shows both families.
      const families = settings.ipv6 === 'disabled' ? [4 as const] : [4 as const, 6 as const];
      for (const family of families) {
        process.stdout.write(`# IPv${family}: ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush\n${printDocument(buildRules(settings, family))}`);
      }
      const { loopbackDocument } = await import('./loopback.js');
      const vips = loopbackDocument('add', settings.bgpVips ?? []);
      if (vips) process.stdout.write(`# BGP VIPs on lo (those missing): ip -batch -\n${vips}`);
    },
  );

  withCommonOptions(iptables.command('verify').description('Check that the live rules match the settings; exit 1 and list the differences when not.')).action(
    async (flags: IptablesFlags) => {
      const { verifyRules } = await import('./iptables.js');
      const { settings, options } = await prepare(flags);
      const { backend, problems } = await verifyRules(settings, options);
      if (problems.length) {
        process.stdout.write(`${problems.join('\n')}\n`);
        throw new ActionableError(
          `the interception rules (${backend}) do not match: ${problems.length} difference(s)`,
          "run 'flb iptables apply' with the same settings",
        );
      }
      process.stdout.write(`rules match (${backend})\n`);
    },
  );
  return iptables;
}

function cniCommand(): Command {
  const cni = new Command('cni')
    .summary('run the CNI node agent, or install/uninstall the CNI plugin')
    .description('Programs pod network namespaces on behalf of the chained CNI plugin (cni/plugin/flb-cni.c), which forwards every CNI call to this agent.');
  cni
    .command('agent')
    .description("Serve the CNI plugin over a Unix socket: read the pod's flomesh.io/interception annotation and program its network namespace.")
    .option('--socket <path>', 'Unix socket the plugin connects to', '/var/run/flb-mesh/cni-agent.sock')
    .option('--state-dir <dir>', 'where programmed containers are recorded (for DEL and GC)', '/var/run/flb-mesh/cni-state')
    .option('--kubeconfig <file>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, or in-cluster)')
    .option('--node-name <name>', 'this node (for the repair loop); default $NODE_NAME')
    .addOption(
      new Option('--repair <mode>', 'pods whose in-pod validation failed: delete those a controller recreates (label the rest), only label, or leave them')
        .choices(['delete', 'label', 'off'])
        .default('delete'),
    )
    .option('--repair-interval <duration>', 'how often the repair loop looks', '30s')
    .option('--metrics-listen <host:port>', 'serve Prometheus GET /metrics (plain HTTP) here; default: nowhere')
    .option('--mesh <name>', 'eBPF mode: the mesh whose eBPF programs pods are registered with (pins under <bpffs>/flb-mesh/<name>)', 'flb')
    .option(
      '--bpf-cgroup <path|auto>',
      "eBPF mode: the cgroup v2 the programs attach to, loaded at the first eBPF pod; auto: the root of the host's cgroup v2 hierarchy, wherever the host's mount table (/proc/1/mountinfo: run with the host's PIDs) puts it, seen under --host-root",
      'auto',
    )
    .option(
      '--host-root <dir>',
      "eBPF mode with --bpf-cgroup auto: where this process sees the host's paths (the chart mounts the host's /sys/fs/cgroup at /host/sys/fs/cgroup)",
      '/',
    )
    .option('--bpffs <path>', 'eBPF mode: where bpffs is mounted (mounted there if it is not)', '/sys/fs/bpf')
    .action(
      async (o: {
        mesh: string;
        bpfCgroup: string;
        hostRoot: string;
        bpffs: string;
        socket: string;
        stateDir: string;
        kubeconfig?: string;
        nodeName?: string;
        repair: 'delete' | 'label' | 'off';
        repairInterval: string;
        metricsListen?: string;
      }) => {
        const repairIntervalMs = parseDuration(o.repairInterval);
        const metricsListen = o.metricsListen === undefined ? undefined : parseHostPort(o.metricsListen, '--metrics-listen', '0.0.0.0:15014');
        const nodeName = o.nodeName ?? process.env.NODE_NAME;
        const [{ runCniAgent }, { createLogger }] = await Promise.all([import('./runner.js'), import('../common/log.js')]);
        const agent = await runCniAgent({
          socketPath: o.socket,
          stateDir: o.stateDir,
          ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
          ...(nodeName ? { nodeName } : {}),
          repair: o.repair,
          repairIntervalMs,
          ...(metricsListen ? { metricsListen } : {}),
          ebpf: { mesh: o.mesh, bpffs: o.bpffs, cgroup: o.bpfCgroup, hostRoot: o.hostRoot },
          log: createLogger('cni-agent'),
          repairLog: createLogger('cni-repair'),
        });
        await untilStopped();
        await agent.stop();
      },
    );
  cni
    .command('validate')
    .description(
      'In-pod check for CNI and eBPF mode (the injector adds it as the first init container): exit 1, saying what to do, when outbound traffic is not redirected.',
    )
    .option('--settings <json|@file>', 'interception settings; default: $FLB_INTERCEPTION')
    .option('--timeout <ms>', 'how long to wait for the redirected connection', '2000')
    .action(async (o: { settings?: string; timeout: string }) => {
      const [{ loadInterception }, { validateInterception }] = await Promise.all([import('./settings.js'), import('./validate.js')]);
      const result = await validateInterception(loadInterception(o.settings), Number(o.timeout));
      process.stdout.write(`traffic interception is in place (${result.destination} reached port 15001 in ${result.ms.toFixed(1)} ms)\n`);
    });
  const defaultPlugin = fileURLToPath(new URL('../../cni/plugin/build/flb-cni', import.meta.url));
  cni
    .command('install')
    .description(
      "Copy the plugin into the CNI bin directory and chain it into the node's active network configuration. With --watch, put it back whenever another CNI rewrites the file. The plugin stays installed when the agent stops: ADD then fails (try again later) instead of starting pods without their rules; remove it with 'flb cni uninstall'.",
    )
    .option('--conf-dir <dir>', 'CNI network configuration directory', '/etc/cni/net.d')
    .option('--bin-dir <dir>', 'CNI plugin directory', '/opt/cni/bin')
    .option('--plugin <file>', 'the built plugin binary', defaultPlugin)
    .option('--watch', 'keep watching the configuration directory until stopped')
    .action(async (o: { confDir: string; binDir: string; plugin: string; watch?: boolean }) => {
      const [{ installOnce, installAndWatch }, { createLogger }] = await Promise.all([import('./install.js'), import('../common/log.js')]);
      const options = { confDir: o.confDir, binDir: o.binDir, pluginBinary: o.plugin, log: createLogger('cni-install') };
      if (!o.watch) {
        const { file, changed } = installOnce(options);
        process.stdout.write(`${changed ? 'installed into' : 'already in'} ${file}\n`);
        return;
      }
      const watcher = installAndWatch(options);
      await untilStopped();
      watcher.close();
    });
  cni
    .command('uninstall')
    .description('Remove the plugin from every network configuration in the directory, and its binary.')
    .option('--conf-dir <dir>', 'CNI network configuration directory', '/etc/cni/net.d')
    .option('--bin-dir <dir>', 'CNI plugin directory', '/opt/cni/bin')
    .action(async (o: { confDir: string; binDir: string }) => {
      const [{ uninstall }, { createLogger }] = await Promise.all([import('./install.js'), import('../common/log.js')]);
      for (const file of uninstall({ ...o, log: createLogger('cni-install') })) process.stdout.write(`removed from ${file}\n`);
    });
  return cni;
}

export function cniCommands(): Command[] {
  return [iptablesCommand(), cniCommand()];
}
