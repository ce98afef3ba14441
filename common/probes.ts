// The kubelet's three network probes (TCP connect, HTTP GET, gRPC health check), with its rules:
// HTTP 200-399 is success, a probe that does not finish within its timeout fails. Used by the
// sidecar (the app probes it runs for the rewritten probe ports) and by the development
// environment's node simulator (the kubelet's own probes).
import { request as httpRequest } from 'node:http';
import type * as Http2 from 'node:http2';
import { connect as netConnect } from 'node:net';

export type NetworkProbe =
  | { type: 'tcp'; host: string; port: number }
  | { type: 'http'; host: string; port: number; path: string; scheme?: 'HTTP' | 'HTTPS'; headers?: { name: string; value: string }[]; hostHeader?: string }
  | { type: 'grpc'; host: string; port: number; service?: string };

export interface ProbeResult {
  ok: boolean;
  /** 200 or 503 for TCP and gRPC; the answer's status for HTTP. */
  status: number;
  detail: string;
}

const formatHost = (host: string) => (host.includes(':') ? `[${host}]` : host);

export async function runNetworkProbe(probe: NetworkProbe, timeoutMs: number, localAddress?: string): Promise<ProbeResult> {
  const where = `${probe.type} ${formatHost(probe.host)}:${probe.port}`;
  switch (probe.type) {
    case 'tcp':
      return new Promise((resolve) => {
        const socket = netConnect({ host: probe.host, port: probe.port, timeout: timeoutMs, ...(localAddress ? { localAddress } : {}) });
        socket.once('connect', () => {
          socket.destroy();
          resolve({ ok: true, status: 200, detail: `${where} connected` });
        });
        socket.once('timeout', () => {
          socket.destroy();
          resolve({ ok: false, status: 503, detail: `${where}: no connection within ${timeoutMs} ms` });
        });
        socket.once('error', (error) => resolve({ ok: false, status: 503, detail: `${where}: ${error.message}` }));
      });
    case 'http': {
      // node:https loads on first use: most sidecars never probe over it (memory).
      const send = probe.scheme === 'HTTPS' ? (await import('node:https')).request : httpRequest;
      const at = `${where}${probe.path}`;
      return new Promise((resolve) => {
        const headers: Record<string, string> = { 'user-agent': 'kube-probe/flb' };
        for (const h of probe.headers ?? []) headers[h.name] = h.value;
        if (probe.hostHeader) headers.host = probe.hostHeader;
        const req = send(
          {
            host: probe.host,
            port: probe.port,
            path: probe.path,
            method: 'GET',
            headers,
            timeout: timeoutMs,
            agent: false,
            rejectUnauthorized: false,
            ...(localAddress ? { localAddress } : {}),
          },
          (res) => {
            res.resume();
            const status = res.statusCode ?? 0;
            resolve({ ok: status >= 200 && status < 400, status, detail: `${at}: ${status}` });
          },
        );
        req.once('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
        req.once('error', (error) => resolve({ ok: false, status: 503, detail: `${at}: ${error.message}` }));
        req.end();
      });
    }
    case 'grpc':
      return grpcHealthCheck(await import('node:http2'), probe.host, probe.port, probe.service ?? '', timeoutMs, localAddress);
  }
}

/**
 * grpc.health.v1.Health/Check by hand over node:http2: the request is one protobuf field (the
 * service name) and the answer one enum, so a gRPC library would be a large dependency for a few
 * bytes of protobuf.
 */
function grpcHealthCheck(
  http2: typeof Http2,
  host: string,
  port: number,
  service: string,
  timeoutMs: number,
  localAddress: string | undefined,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const where = `grpc ${formatHost(host)}:${port}${service ? ` (${service})` : ''}`;
    const session = http2.connect(
      `http://${formatHost(host)}:${port}`,
      localAddress ? { createConnection: () => netConnect({ host, port, localAddress }) } : {},
    );
    const timer = setTimeout(() => finish(false, `${where}: no answer within ${timeoutMs} ms`), timeoutMs);
    const finish = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      session.destroy();
      resolve({ ok, status: ok ? 200 : 503, detail });
    };
    session.on('error', (error) => finish(false, `${where}: ${error.message}`));
    const name = Buffer.from(service);
    const message = service ? Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]) : Buffer.alloc(0);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(message.length, 1);
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
    stream.end(Buffer.concat([header, message]));
  });
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return Buffer.from(bytes);
}
