/*
 * `flb sidecar` and `flb sidecar wait-ready`: the flags, parsed into the runner's arguments
 * (runner.ts), and nothing else. Loaded by every `flb` command, so it imports no run-time code: the
 * runner comes from the sidecar bundle when the build made one (less memory per sidecar, see
 * main.ts), else from runner.js.
 */
import { Command, Option } from 'commander';
import { durationArgument, portArgument } from '../common/cli.js';
import { DEFAULT_PORTS, type SidecarPorts } from '../common/contract/mesh.js';
import { bgpCommand } from './bgp/cli.js';
import { PORT_FLAGS } from './port-flags.js';
import type * as Runner from './runner.js';

export { PORT_FLAGS };

export type SidecarRunner = Pick<typeof Runner, 'runSidecarProcess' | 'waitForReady'>;

/** The bundled build (dist/sidecar.bundle.mjs, see scripts/bundle.mjs) when there is one, else the runner module. */
async function loadRunner(): Promise<SidecarRunner> {
  const bundle = new URL('../sidecar.bundle.mjs', import.meta.url);
  const { existsSync } = await import('node:fs');
  if (process.env.FLB_SIDECAR_UNBUNDLED !== '1' && bundle.protocol === 'file:' && existsSync(bundle)) return (await import(bundle.href)) as SidecarRunner;
  return import('./runner.js');
}

const PORT_HELP: Record<keyof SidecarPorts, string> = {
  admin: 'admin (/ready, /config_dump, ...) on 127.0.0.1',
  outbound: 'transparent outbound listener',
  inbound: 'inbound listener',
  metrics: 'Prometheus metrics',
  dns: 'DNS on 127.0.0.1 and ::1',
  livenessProbe: "the app's rewritten liveness probe",
  readinessProbe: "the app's rewritten readiness probe",
  startupProbe: "the app's rewritten startup probe",
};

interface SidecarFlags extends Record<`${keyof SidecarPorts}Port`, number> {
  id?: string;
  repo?: string;
  tokenFile?: string;
  repoCaFile?: string;
  configDir?: string;
  watch?: boolean;
  stateDir?: string;
  appHost?: string;
  dnsUpstream?: string[];
  drain: number;
}

/** `load`: where the runner comes from (the bundle passes its own). */
export function sidecarCommands(load: () => Promise<SidecarRunner> = loadRunner): Command[] {
  const sidecar = new Command('sidecar')
    .summary('run the sidecar: outbound/inbound proxy, client-side load balancing, DNS')
    .description(
      "The data plane process. Configured from the repo (its own codebase /flb/sidecars/<id>, pushed changes, HEAD polling as the fallback; kept on disk so a restart without the repo still routes) or from local files (--config-dir: mesh.json, services/*.json, sidecar.json). Listens on 15001 (outbound, transparent), 15003 (inbound), 15053 (DNS, 127.0.0.1 and ::1), 15000 (admin, loopback), 15010 (metrics) and 15901-15903 (rewritten app probes), or where the port flags say: they must match mesh.json's ports (the probes and interception rules follow those), or /ready says why not. SIGTERM drains: no new connections, open ones may finish for --drain.",
    )
    .option('--id <id>', 'sidecar id, e.g. pod.shop.orders-7d9f-x2x4 or vm.billing-1 (default: FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME)')
    .option('--repo <url>', 'the repo, e.g. https://flb-repo.flomesh.svc:6060 (default: FLB_REPO_URL)')
    .option('--repo-ca-file <file>', "PEM bundle the repo's certificate must chain to, re-read when it changes (default: FLB_REPO_CA_FILE; else Node's trust)")
    .option('--token-file <file>', 'ServiceAccount token shown to the repo, re-read on every request (default: FLB_REPO_TOKEN_FILE)')
    .option('--config-dir <dir>', 'local file mode instead of the repo (tests, VMs)')
    .option('--watch', 'with --config-dir: reload when the files change')
    .option('--state-dir <dir>', 'where the last good configuration is kept (default: FLB_STATE_DIR or /var/lib/flb)')
    .option('--app-host <address>', "the app's address for inbound probes (default: POD_IP, else 127.0.0.1)");
  for (const [name, flag] of Object.entries(PORT_FLAGS) as [keyof SidecarPorts, string][]) {
    sidecar.addOption(new Option(`${flag} <port>`, PORT_HELP[name]).default(DEFAULT_PORTS[name]).argParser(portArgument));
  }
  sidecar
    .option('--dns-upstream <address...>', "resolvers for names outside the catalog (default: /etc/resolv.conf's)")
    .addOption(new Option('--drain <duration>', 'how long SIGTERM lets open connections finish').default(5000, '5s').argParser(durationArgument))
    .action(async (o: SidecarFlags) => {
      const runner = await load();
      await runner.runSidecarProcess({
        id: o.id,
        repo: o.repo,
        repoCaFile: o.repoCaFile,
        tokenFile: o.tokenFile,
        configDir: o.configDir,
        watch: Boolean(o.watch),
        stateDir: o.stateDir,
        appHost: o.appHost,
        ports: {
          admin: o.adminPort,
          outbound: o.outboundPort,
          inbound: o.inboundPort,
          metrics: o.metricsPort,
          dns: o.dnsPort,
          livenessProbe: o.livenessProbePort,
          readinessProbe: o.readinessProbePort,
          startupProbe: o.startupProbePort,
        },
        dnsUpstreams: o.dnsUpstream,
        drainMs: o.drain,
      });
    });

  sidecar
    .command('wait-ready')
    .description(
      "Waits until the sidecar on this host is ready (its admin port's /ready answers 200): the postStart hook that holds the app until the proxy runs. Gives up with the sidecar's own reason.",
    )
    .addOption(new Option('--timeout <duration>', 'give up after').default(120_000, '120s').argParser(durationArgument))
    .addOption(new Option('--admin-port <port>', 'admin port').default(DEFAULT_PORTS.admin).argParser(portArgument))
    .action(async (o: { timeout: number; adminPort: number }, command: Command) => {
      // Unless the program parses options positionally, `sidecar` takes its own --admin-port wherever it is written.
      const adminPort = command.getOptionValueSource('adminPort') === 'cli' ? o.adminPort : (sidecar.opts<SidecarFlags>().adminPort ?? o.adminPort);
      await (await load()).waitForReady({ adminPort, timeoutMs: o.timeout });
    });

  return [sidecar, bgpCommand()];
}
