import { Command } from 'commander';
import { notBuiltYet, untilStopped } from '../common/cli.js';
import { UsageError } from '../common/errors.js';
import type * as SidecarMainModule from './main.js';

type SidecarMain = typeof SidecarMainModule;

interface SidecarFlags {
  id?: string;
  repo?: string;
  tokenFile?: string;
  configDir?: string;
  watch?: boolean;
  stateDir: string;
  appHost?: string;
  outboundPort: string;
  inboundPort: string;
  dnsPort: string;
  adminPort: string;
  metricsPort: string;
  probePorts: string;
  dnsUpstream?: string[];
  drain: string;
}

/** The bundled build (dist/sidecar.bundle.mjs, see scripts/bundle.mjs) when there is one: less memory per sidecar. */
async function loadSidecar(): Promise<SidecarMain> {
  const bundle = new URL('../sidecar.bundle.mjs', import.meta.url);
  const { existsSync } = await import('node:fs');
  if (process.env.FLB_SIDECAR_UNBUNDLED !== '1' && bundle.protocol === 'file:' && existsSync(bundle)) return (await import(bundle.href)) as SidecarMain;
  return import('./main.js');
}

const portOf = (value: string, flag: string) => {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`${flag} ${value}: not a port number`);
  return port;
};

/** `load`: where the run-time code comes from (the bundle passes itself). */
export function sidecarCommands(load: () => Promise<SidecarMain> = loadSidecar): Command[] {
  const sidecar = new Command('sidecar')
    .summary('run the sidecar: outbound/inbound proxy, client-side load balancing, DNS')
    .description(
      'The data plane process. Configured from the repo (its own codebase /flb/sidecars/<id>, pushed changes, HEAD polling as the fallback; kept on disk so a restart without the repo still routes) or from local files (--config-dir: mesh.json, services/*.json, sidecar.json). Listens on 15001 (outbound, transparent), 15003 (inbound), 15053 (DNS, 127.0.0.1 and ::1), 15000 (admin, loopback), 15010 (metrics) and 15901-15903 (rewritten app probes). SIGTERM drains: no new connections, open ones may finish for --drain.',
    )
    .option('--id <id>', 'sidecar id, e.g. pod.shop.orders-7d9f-x2x4 or vm.billing-1 (default: FLB_SIDECAR_ID, or POD_NAMESPACE and POD_NAME)')
    .option('--repo <url>', 'the repo, e.g. https://flb-repo.flomesh.svc:6060 (default: FLB_REPO_URL); trust its CA with NODE_EXTRA_CA_CERTS')
    .option('--token-file <file>', 'ServiceAccount token shown to the repo, re-read on every request (default: FLB_REPO_TOKEN_FILE)')
    .option('--config-dir <dir>', 'local file mode instead of the repo (tests, VMs)')
    .option('--watch', 'with --config-dir: reload when the files change')
    .option(
      '--state-dir <dir>',
      'where the last good configuration is kept (default: FLB_STATE_DIR or /var/lib/flb)',
      process.env.FLB_STATE_DIR ?? '/var/lib/flb',
    )
    .option('--app-host <address>', "the app's address for inbound probes (default: POD_IP, else 127.0.0.1)")
    .option('--outbound-port <port>', 'transparent outbound listener', '15001')
    .option('--inbound-port <port>', 'inbound listener', '15003')
    .option('--dns-port <port>', 'DNS on 127.0.0.1 and ::1', '15053')
    .option('--admin-port <port>', 'admin on 127.0.0.1', '15000')
    .option('--metrics-port <port>', 'Prometheus metrics', '15010')
    .option('--probe-ports <ports>', 'liveness,readiness,startup probe ports', '15901,15902,15903')
    .option('--dns-upstream <address...>', "resolvers for names outside the catalog (default: /etc/resolv.conf's)")
    .option('--drain <duration>', 'how long SIGTERM lets open connections finish', '5s')
    .action(async (o: SidecarFlags) => {
      const [{ createLogger, sidecarIdFromEnv, sidecarCodebase, parseDuration, runSidecar }, { readFileSync }, { join }] = await Promise.all([
        load(),
        import('node:fs'),
        import('node:path'),
      ]);
      const log = createLogger('sidecar');
      const id = o.id ?? sidecarIdFromEnv();
      const repo = o.repo ?? process.env.FLB_REPO_URL;
      if (!o.configDir && !repo) throw new UsageError('say where the configuration comes from: --repo URL (or FLB_REPO_URL), or --config-dir DIR');
      const tokenFile = o.tokenFile ?? process.env.FLB_REPO_TOKEN_FILE;
      const [livenessProbe, readinessProbe, startupProbe] = o.probePorts.split(',').map((p) => portOf(p.trim(), '--probe-ports'));
      if (startupProbe === undefined) throw new UsageError('--probe-ports needs three ports: liveness,readiness,startup');
      const running = await runSidecar({
        id,
        log,
        config: o.configDir
          ? { kind: 'local', dir: o.configDir, watch: Boolean(o.watch) }
          : {
              kind: 'repo',
              url: `${repo!.replace(/\/+$/, '')}/repo${sidecarCodebase(id)}/`,
              cacheDir: join(o.stateDir, 'config'),
              ...(tokenFile ? { headers: () => ({ authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` }) } : {}),
            },
        ports: {
          outbound: portOf(o.outboundPort, '--outbound-port'),
          inbound: portOf(o.inboundPort, '--inbound-port'),
          dns: portOf(o.dnsPort, '--dns-port'),
          admin: portOf(o.adminPort, '--admin-port'),
          metrics: portOf(o.metricsPort, '--metrics-port'),
          livenessProbe: livenessProbe!,
          readinessProbe: readinessProbe!,
          startupProbe,
        },
        appHost: o.appHost ?? process.env.POD_IP ?? '127.0.0.1',
        ...(process.env.FLB_APP_PROBES ? { appProbes: process.env.FLB_APP_PROBES } : {}),
        ...(o.dnsUpstream ? { dnsUpstreams: o.dnsUpstream } : {}),
        drainMs: parseDuration(o.drain),
      });
      await untilStopped();
      log.info('draining');
      await running.drain();
    });

  sidecar
    .command('wait-ready')
    .description(
      "Waits until the sidecar on this host is ready (its admin port's /ready answers 200): the postStart hook that holds the app until the proxy runs.",
    )
    .option('--timeout <duration>', 'give up after', '120s')
    .option('--admin-port <port>', 'admin port', '15000')
    .action(async (o: { timeout: string; adminPort: string }) => {
      const { parseDuration } = await import('../common/duration.js');
      const deadline = Date.now() + parseDuration(o.timeout);
      const url = `http://127.0.0.1:${portOf(o.adminPort, '--admin-port')}/ready`;
      for (;;) {
        const ok = await fetch(url, { signal: AbortSignal.timeout(1000) }).then(
          (r) => r.ok,
          () => false,
        );
        if (ok) return;
        if (Date.now() > deadline) throw new Error(`the sidecar was not ready within ${o.timeout} (${url}); see its logs: kubectl logs <pod> -c flb-sidecar`);
        await new Promise((r) => setTimeout(r, 200));
      }
    });

  return [
    sidecar,
    notBuiltYet(
      new Command('bgp').summary('announce VIPs of healthy local processes over BGP').description('The sidecar-mode BGP announcer, usable on its own.'),
      'the BGP announcer, a later issue',
    ),
  ];
}
