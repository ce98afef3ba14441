/*
 * The rewritten probe ports (15901-15903 by default, never captured): the kubelet asks
 * `/app-health/<container>/<kind>` and the sidecar runs the app's original probe (HTTP, TCP or
 * gRPC) against the app, on the pod's own address, answering 200 or 503 with what it saw. `/ready`
 * is the sidecar's own readiness. The probe map comes from FLB_APP_PROBES (set by the injector).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIPv4 } from 'node:net';
import type { z } from 'zod';
import { INBOUND_FORWARD_SOURCE, type ProbeSchema } from '../common/contract/index.js';
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
}

export async function startProbeServers(options: ProbeServerOptions): Promise<Server[]> {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/ready') {
      answerReady(res, options.readiness());
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
