/*
 * Access logs: one structured line per HTTP request (HTTP/2 stream, gRPC call) or `tcp`
 * connection, off unless the mesh's `accessLog.enabled` (or the admin port's
 * `POST /access_log?enabled=true`) turns them on. Each line goes through the sidecar's own pino
 * logger as `msg: "access"`, at info level whatever the sidecar's log level: turning the log level
 * down to `warn` does not silence them, and turning them off does not need a log level.
 *
 * The data path asks `enabled` (one field read) and builds nothing when it is false; the line's
 * wall-clock start is worked out from the monotonic start when the line is written.
 */
import type { Logger } from '../common/log.js';
import type { Direction, RequestProtocol } from './metrics.js';

/** One finished HTTP request, HTTP/2 stream or gRPC call. */
export interface RequestLogEntry {
  direction: Direction;
  protocol: RequestProtocol;
  /** performance.now() when the request arrived. */
  startedAt: number;
  method: string;
  path: string;
  authority: string | undefined;
  status: number;
  grpcStatus: string | undefined;
  /** Request body bytes read from the client. */
  bytesReceived: number;
  /** Response body bytes sent to the client. */
  bytesSent: number;
  /** `address:port` of the endpoint that answered (or was last tried); undefined if none was. */
  upstream: string | undefined;
  /** The client's `address:port`. */
  source: string | undefined;
  /** The catalog service (outbound) or the app's port (inbound). */
  destination: string;
  attempts: number;
  userAgent: string | undefined;
  requestId: string | undefined;
}

/** One closed `tcp` connection (outbound, passthrough or inbound). */
export interface ConnectionLogEntry {
  direction: Direction;
  startedAt: number;
  /** Bytes from the client to the upstream, and back. */
  bytesReceived: number;
  bytesSent: number;
  upstream: string | undefined;
  source: string | undefined;
  destination: string;
  /** How it ended: `closed`, `reset`, `upstream-failed`, `idle-timeout`, `connect-failed`... */
  outcome: string;
}

const first = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value);

export class AccessLog {
  /** Read on every request and connection: a field, so that off costs a branch. */
  enabled = false;
  private readonly log: Logger;

  constructor(log: Logger) {
    // Its own level: access lines are not subject to the sidecar's log level.
    this.log = log.child({ log: 'access' }, { level: 'info' });
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  request(entry: RequestLogEntry): void {
    const durationMs = performance.now() - entry.startedAt;
    this.log.info(
      {
        start: wallClock(entry.startedAt),
        duration_ms: round(durationMs),
        direction: entry.direction,
        protocol: entry.protocol,
        method: entry.method,
        path: entry.path,
        authority: entry.authority,
        status: entry.status,
        grpc_status: entry.grpcStatus,
        bytes_received: entry.bytesReceived,
        bytes_sent: entry.bytesSent,
        upstream: entry.upstream,
        source: entry.source,
        destination: entry.destination,
        attempts: entry.attempts,
        user_agent: entry.userAgent,
        request_id: entry.requestId,
      },
      'access',
    );
  }

  connection(entry: ConnectionLogEntry): void {
    const durationMs = performance.now() - entry.startedAt;
    this.log.info(
      {
        start: wallClock(entry.startedAt),
        duration_ms: round(durationMs),
        direction: entry.direction,
        protocol: 'tcp',
        bytes_received: entry.bytesReceived,
        bytes_sent: entry.bytesSent,
        upstream: entry.upstream,
        source: entry.source,
        destination: entry.destination,
        outcome: entry.outcome,
      },
      'access',
    );
  }
}

/** For tests and parts built without a logger: never writes. */
export const NO_ACCESS_LOG = { enabled: false } as AccessLog;

/** A header's first value, as the access log shows it. */
export const headerValue = first;

export function addressOf(address: string | undefined, port: number | undefined): string | undefined {
  if (address === undefined) return undefined;
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

function wallClock(monotonicStart: number): string {
  return new Date(Date.now() - (performance.now() - monotonicStart)).toISOString();
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** How a natively forwarded connection ended, by ForwardOutcome (native/index.ts). */
const OUTCOMES = ['closed', 'upstream-reset', 'client-reset', 'idle-timeout', 'local-failure'];

/**
 * The access log's view of one `tcp` connection, made only while the access log is on: totals of
 * the forwarder's byte reports, and the endpoint it went to.
 */
export class ConnectionRecord {
  readonly startedAt = performance.now();
  fromClient = 0;
  fromUpstream = 0;
  upstream: string | undefined;

  constructor(
    private readonly accessLog: AccessLog,
    private readonly direction: Direction,
    private readonly source: string | undefined,
    private readonly destination: string,
  ) {}

  bytes(fromClient: number, fromUpstream: number): void {
    this.fromClient += fromClient;
    this.fromUpstream += fromUpstream;
  }

  /** `outcome`: a ForwardOutcome, or a word for a connection that never reached an upstream. */
  closed(outcome: number | string): void {
    this.accessLog.connection({
      direction: this.direction,
      startedAt: this.startedAt,
      bytesReceived: this.fromClient,
      bytesSent: this.fromUpstream,
      upstream: this.upstream,
      source: this.source,
      destination: this.destination,
      outcome: typeof outcome === 'string' ? outcome : (OUTCOMES[outcome] ?? `outcome ${outcome}`),
    });
  }
}
