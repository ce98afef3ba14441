import { request as httpRequest, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type * as Http2 from 'node:http2';
import { isIPv4, connect as netConnect } from 'node:net';
import type { z } from 'zod';
import { INBOUND_FORWARD_SOURCE, type ProbeSchema } from '../common/contract/index.js';
import type { Logger } from '../common/log.js';
import { listen } from './listen.js';

export type AppProbe = z.output<typeof ProbeSchema>;
export type ProbeResult = { ok: boolean; status: number; detail: string };

/**
 * The rewritten probe ports (15901-15903 by default, never captured): the kubelet asks
 * `/app-health/<container>/<kind>` and the sidecar runs the app's original probe (HTTP, TCP or
 * gRPC) against the app, on the pod's own address, answering 200 or 503 with what it saw. `/ready`
 * is the sidecar's own readiness. The probe map comes from FLB_APP_PROBES (set by the injector).
 */
export interface ProbeServerOptions {
  ports: number[];
  host: string;
  probes: () => ReadonlyMap<string, AppProbe>;
  /** The app's address: the pod IP (POD_IP), else loopback. */
  appHost: string;
  ready: () => boolean;
  log: Logger;
}

export async function startProbeServers(options: ProbeServerOptions): Promise<Server[]> {
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/ready') {
      const ok = options.ready();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready: no configuration yet, or listeners not up\n');
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
  const timeoutMs = probe.timeoutSeconds * 1000;
  const original = probe.original;
  const host = ('host' in original && original.host) || appHost;
  const localAddress = probeSource(host);
  switch (original.type) {
    case 'tcp':
      return new Promise((resolve) => {
        const socket = netConnect({ host, port: original.port, timeout: timeoutMs, ...(localAddress ? { localAddress } : {}) });
        socket.once('connect', () => {
          socket.destroy();
          resolve({ ok: true, status: 200, detail: `tcp ${host}:${original.port} connected` });
        });
        socket.once('timeout', () => {
          socket.destroy();
          resolve({ ok: false, status: 503, detail: `tcp ${host}:${original.port}: no connection within ${timeoutMs} ms` });
        });
        socket.once('error', (error) => resolve({ ok: false, status: 503, detail: `tcp ${host}:${original.port}: ${error.message}` }));
      });
    case 'http': {
      // node:https and node:http2 load on first use: most pods never probe over them (memory).
      const send = original.scheme === 'HTTPS' ? (await import('node:https')).request : httpRequest;
      return new Promise((resolve) => {
        const headers = Object.fromEntries(original.headers.map((h) => [h.name, h.value]));
        const req = send({ host, port: original.port, path: original.path, method: 'GET', headers: { 'user-agent': 'kube-probe/flb', ...headers }, timeout: timeoutMs, agent: false, rejectUnauthorized: false, ...(localAddress ? { localAddress } : {}) }, (res) => {
          res.resume();
          const status = res.statusCode ?? 0;
          // The kubelet's rule: 200-399 is success.
          resolve({ ok: status >= 200 && status < 400, status, detail: `http ${host}:${original.port}${original.path}: ${status}` });
        });
        req.once('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.once('error', (error) => resolve({ ok: false, status: 503, detail: `http ${host}:${original.port}${original.path}: ${error.message}` }));
        req.end();
      });
    }
    case 'grpc':
      return grpcHealthCheck(await import('node:http2'), host, original.port, original.service ?? '', timeoutMs, localAddress);
  }
}

/**
 * grpc.health.v1.Health/Check by hand over node:http2: the request is one protobuf field (the
 * service name) and the answer one enum, so a gRPC library would be a large dependency for two
 * bytes of protobuf.
 */
function grpcHealthCheck(http2: typeof Http2, host: string, port: number, service: string, timeoutMs: number, localAddress: string | undefined): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const where = `grpc ${host}:${port}${service ? ` (${service})` : ''}`;
    const session = http2.connect(`http://${host.includes(':') ? `[${host}]` : host}:${port}`, localAddress ? { createConnection: () => netConnect({ host, port, localAddress }) } : {});
    const timer = setTimeout(() => finish(false, `${where}: no answer within ${timeoutMs} ms`), timeoutMs);
    const finish = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      session.destroy();
      resolve({ ok, status: ok ? 200 : 503, detail });
    };
    session.on('error', (error) => finish(false, `${where}: ${error.message}`));
    const name = Buffer.from(service);
    const message = service ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]);
    const stream = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', (error) => finish(false, `${where}: ${error.message}`));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      // HealthCheckResponse { status = 1 (SERVING) }: field 1, varint.
      const serving = body.length >= 7 && body[5] === 0x08 && body[6] === 1;
      finish(serving, `${where}: ${serving ? 'SERVING' : 'not serving'}`);
    });
    stream.end(frame);
  });
}
