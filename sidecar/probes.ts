/*
 * The rewritten probe ports (15901-15903 by default, never captured): the kubelet asks
 * `/app-health/<container>/<kind>` and the sidecar runs the app's original probe (HTTP, TCP or
 * gRPC) against the app, on the pod's own address, answering 200 or 503 with what it saw. `/ready`
 * is the sidecar's own readiness. The probe map comes from FLB_APP_PROBES (set by the injector).
 *
 * `/drain/bgp` is the app containers' preStop hook in pods whose sidecar announces VIPs
 * (`flomesh.io/bgp-announcer`): the kubelet calls it, on the pod IP, before it sends the app
 * SIGTERM, and waits for the answer. With native sidecars the app stops before the sidecar, so
 * the sidecar's own SIGTERM would withdraw the VIPs only after the app is gone; here the drain
 * starts first (GRACEFUL_SHUTDOWN, then withdrawn after `drainSeconds`) and the answer comes once
 * the VIPs are withdrawn, so the app serves until the routers have stopped sending to it. An app's
 * own httpGet or sleep preStop (FLB_APP_PRESTOP, moved here by the injector) runs after the drain.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIPv4 } from 'node:net';
import type { z } from 'zod';
import { BGP_DRAIN_PATH } from '../common/contract/annotations.js';
import { INBOUND_FORWARD_SOURCE } from '../common/contract/interception.js';
import { AppPreStopSchema, type AppPreStop, type ProbeSchema } from '../common/contract/sidecar.js';
import type { Logger } from '../common/log.js';
import { runNetworkProbe, type NetworkProbe, type ProbeResult } from '../common/probes.js';
import { answerReady, type Readiness } from './admin.js';
import { listen } from './listen.js';

export type AppProbe = z.output<typeof ProbeSchema>;
export type { ProbeResult };

export interface ProbeServerOptions {
  ports: number[];
  host: string;
  probes: () => ReadonlyMap<string, AppProbe>;
  /** The app's address: the pod IP (POD_IP), else loopback. */
  appHost: string;
  readiness: () => Readiness;
  log: Logger;
  /** Starts the BGP drain (or joins the one under way); resolves, saying what it withdrew, once every VIP is withdrawn. */
  drainBgp?: () => Promise<string>;
  /** The app containers' own preStop hooks by container name (FLB_APP_PRESTOP), run after the drain. */
  appPreStops?: ReadonlyMap<string, AppPreStop>;
}

/** An app's own httpGet hook has only the kubelet's bound (the grace period, which ends the pod anyway); this keeps a hung one from lingering. */
const APP_HOOK_TIMEOUT_MS = 10 * 60_000;

export async function startProbeServers(options: ProbeServerOptions): Promise<Server[]> {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/ready') {
      answerReady(res, options.readiness());
      return;
    }
    if (path === BGP_DRAIN_PATH) {
      answerDrain(req, res, options).catch((error: unknown) => {
        options.log.error({ err: error }, 'preStop hook: could not answer');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(error)}\n`);
      });
      return;
    }
    const probe = options.probes().get(path);
    if (!probe) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no app probe at ${path}\n`);
      return;
    }
    runProbe(probe, options.appHost).then(
      (result) => res.writeHead(result.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(`${result.detail}\n`),
      (error: unknown) => res.writeHead(503, { 'content-type': 'text/plain' }).end(`${String(error)}\n`),
    );
  };
  const servers: Server[] = [];
  for (const port of [...new Set(options.ports)]) {
    const server = createServer(onRequest);
    await listen(server, options.host, port);
    servers.push(server);
  }
  return servers;
}

/**
 * The preStop hook: the BGP drain, then the container's own hook if the injector moved one here;
 * 500 with the reason if either fails (the kubelet's FailedPreStopHook Event shows it).
 */
async function answerDrain(req: IncomingMessage, res: ServerResponse, options: ProbeServerOptions): Promise<void> {
  const container = new URL(req.url ?? '/', 'http://preStop').searchParams.get('container') ?? undefined;
  const answer = (status: number, text: string) => res.writeHead(status, { 'content-type': 'text/plain' }).end(`${text}\n`);
  const started = Date.now();
  options.log.info({ container }, 'preStop hook: draining BGP before the app stops');
  let drained: string;
  try {
    drained = options.drainBgp ? await options.drainBgp() : 'no BGP announcer: nothing to withdraw';
  } catch (error) {
    options.log.error({ err: error, container }, 'preStop hook: the BGP drain failed');
    answer(500, `BGP drain failed: ${String(error)}`);
    return;
  }
  options.log.info({ container, ms: Date.now() - started, drained }, 'preStop hook: BGP drained');
  const hook = container === undefined ? undefined : options.appPreStops?.get(container);
  if (!hook) {
    answer(200, drained);
    return;
  }
  const result = await runAppPreStop(hook, options.appHost);
  if (!result.ok) options.log.warn({ container, hook: result.detail }, "preStop hook: the app's own hook failed");
  answer(result.ok ? 200 : 500, `${drained}; the app's own preStop: ${result.detail}`);
}

async function runAppPreStop(hook: AppPreStop, appHost: string): Promise<ProbeResult> {
  if (hook.type === 'sleep') {
    await new Promise((resolve) => setTimeout(resolve, hook.seconds * 1000));
    return { ok: true, status: 200, detail: `slept ${hook.seconds} s` };
  }
  const host = hook.host || appHost;
  return runNetworkProbe(
    { type: 'http', host, port: hook.port, path: hook.path, scheme: hook.scheme, headers: hook.headers },
    APP_HOOK_TIMEOUT_MS,
    probeSource(host),
  );
}

/** Parses FLB_APP_PRESTOP ({"web": {"type": "http", ...}}), dropping entries that do not validate (said in the log). */
export function parseAppPreStops(value: string | undefined, log: Logger): Map<string, AppPreStop> {
  const out = new Map<string, AppPreStop>();
  if (!value) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    log.error("FLB_APP_PRESTOP is not JSON; the app containers' own preStop hooks will not run (re-inject the pod)");
    return out;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    log.error("FLB_APP_PRESTOP is not a JSON object; the app containers' own preStop hooks will not run (re-inject the pod)");
    return out;
  }
  for (const [container, hook] of Object.entries(parsed as Record<string, unknown>)) {
    const result = AppPreStopSchema.safeParse(hook);
    if (result.success) out.set(container, result.data);
    else log.error({ container, error: result.error.message }, "an app container's preStop hook in FLB_APP_PRESTOP is invalid; it will not run");
  }
  return out;
}

/** Parses FLB_APP_PROBES ({"/app-health/app/readiness": {...}}), dropping entries that do not validate. */
export function parseAppProbes(value: string | undefined, schema: typeof ProbeSchema, log: Logger): Map<string, AppProbe> {
  const out = new Map<string, AppProbe>();
  if (!value) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    log.error('FLB_APP_PROBES is not JSON; app probes will answer 404 (re-inject the pod)');
    return out;
  }
  for (const [path, probe] of Object.entries((parsed ?? {}) as Record<string, unknown>)) {
    const result = schema.safeParse(probe);
    if (result.success) out.set(path, result.data);
    else log.error({ path, error: result.error.message }, 'an app probe in FLB_APP_PROBES is invalid; it will answer 404');
  }
  return out;
}

/**
 * From 127.0.0.6, as inbound connections: the rules send the proxy's own connections to its pod's
 * IP to the inbound listener (an app calling itself through a service), which would answer every
 * TCP probe itself. The same source is exempt (cni/rules.ts), so the probe reaches the app.
 */
function probeSource(host: string): string | undefined {
  return isIPv4(host) && !host.startsWith('127.') ? INBOUND_FORWARD_SOURCE[4] : undefined;
}

export async function runProbe(probe: AppProbe, appHost: string): Promise<ProbeResult> {
  const original = probe.original;
  const host = ('host' in original && original.host) || appHost;
  const timeoutMs = probe.timeoutSeconds * 1000;
  const target: NetworkProbe =
    original.type === 'http'
      ? { type: 'http', host, port: original.port, path: original.path, scheme: original.scheme, headers: original.headers }
      : original.type === 'grpc'
        ? { type: 'grpc', host, port: original.port, service: original.service ?? '' }
        : { type: 'tcp', host, port: original.port };
  return runNetworkProbe(target, timeoutMs, probeSource(host));
}
