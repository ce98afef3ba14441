/*
 * The thin runner between `flb sidecar`'s flags (cli.ts) and the sidecar itself (sidecar.ts): it
 * fills in what the flags leave to the environment (the downward API's id, FLB_REPO_URL, the token
 * and CA files, POD_IP, FLB_APP_PROBES, FLB_APP_PRESTOP, FLB_INTERCEPTION_MODE), makes the logger, runs the sidecar until SIGTERM or
 * SIGINT, and drains it. `flb sidecar wait-ready` is here too: it runs in the same image, as the
 * postStart hook.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { untilStopped } from '../common/cli.js';
import { INTERCEPTION_MODE_ENV, REPO_CA_FILE_ENV } from '../common/contract/annotations.js';
import { sidecarIdFromEnv } from '../common/contract/identity.js';
import { InterceptionModeSchema, type InterceptionMode, type SidecarPorts } from '../common/contract/mesh.js';
import { UsageError } from '../common/errors.js';
import { createLogger, type Logger } from '../common/log.js';
import { sidecarCodebaseUrl } from './config/source.js';
import { runSidecar, type SidecarOptions } from './sidecar.js';

/** What `flb sidecar`'s flags say; unset ones come from the environment. */
export interface SidecarArgs {
  id?: string | undefined;
  repo?: string | undefined;
  repoCaFile?: string | undefined;
  tokenFile?: string | undefined;
  configDir?: string | undefined;
  watch: boolean;
  stateDir?: string | undefined;
  appHost?: string | undefined;
  ports: SidecarPorts;
  dnsUpstreams?: string[] | undefined;
  drainMs: number;
}

/** The sidecar's options from its flags and environment; throws a UsageError when the configuration has no source. */
export function sidecarOptions(args: SidecarArgs, env: NodeJS.ProcessEnv, log: Logger): SidecarOptions {
  const id = args.id ?? sidecarIdFromEnv(env);
  const repo = args.repo ?? env.FLB_REPO_URL;
  if (!args.configDir && !repo) throw new UsageError('say where the configuration comes from: --repo URL (or FLB_REPO_URL), or --config-dir DIR');
  const tokenFile = args.tokenFile ?? env.FLB_REPO_TOKEN_FILE;
  const caFile = args.repoCaFile ?? (env[REPO_CA_FILE_ENV] || undefined);
  const stateDir = args.stateDir ?? env.FLB_STATE_DIR ?? '/var/lib/flb';
  const interceptionMode = podInterceptionMode(env[INTERCEPTION_MODE_ENV], log);
  return {
    id,
    log,
    config: args.configDir
      ? { kind: 'local', dir: args.configDir, watch: args.watch }
      : {
          kind: 'repo',
          url: sidecarCodebaseUrl(repo!, id),
          cacheDir: join(stateDir, 'config'),
          ...(tokenFile ? { headers: () => ({ authorization: `Bearer ${readFileSync(tokenFile, 'utf8').trim()}` }) } : {}),
          ...(caFile ? { caFile } : {}),
        },
    ports: args.ports,
    appHost: args.appHost ?? env.POD_IP ?? '127.0.0.1',
    ...(env.FLB_APP_PROBES ? { appProbes: env.FLB_APP_PROBES } : {}),
    ...(env.FLB_APP_PRESTOP ? { appPreStops: env.FLB_APP_PRESTOP } : {}),
    ...(interceptionMode ? { interceptionMode } : {}),
    ...(args.dnsUpstreams ? { dnsUpstreams: args.dnsUpstreams } : {}),
    drainMs: args.drainMs,
  };
}

/**
 * The pod's interception mode as the injector wrote it; unset (a VM, a pod injected by an older
 * injector) or a value no injector writes leaves mesh.json's mode to decide, the latter logged.
 */
function podInterceptionMode(value: string | undefined, log: Logger): InterceptionMode | undefined {
  if (!value) return undefined;
  const parsed = InterceptionModeSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  log.warn(
    { [INTERCEPTION_MODE_ENV]: value },
    `${INTERCEPTION_MODE_ENV} is not iptables, cni or ebpf; mesh.json's interception.mode decides endpointFallback auto`,
  );
  return undefined;
}

/** `flb sidecar`: runs until SIGTERM or SIGINT, then drains. */
export async function runSidecarProcess(args: SidecarArgs): Promise<void> {
  const log = createLogger('sidecar');
  const running = await runSidecar(sidecarOptions(args, process.env, log));
  await untilStopped();
  log.info('draining');
  await running.drain();
}

/**
 * `flb sidecar wait-ready`: polls the admin port's /ready until 200; on timeout, fails with the
 * sidecar's last reason. One waiter for both paths to it (bin/flb.js's fast path and the full CLI).
 */
export { waitUntilReady as waitForReady } from './wait-ready.js';
