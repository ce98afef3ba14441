import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer, isIPv6, type Server, type Socket } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../../common/log.js';
import { DnsCache } from './cache.js';
import { DnsMetrics } from './metrics.js';
import { emptyDnsTable, type DnsTable } from './table.js';
import { throttled } from './throttle.js';
import { Forwarder, formatUpstream, nameserversFromResolvConf, parseUpstream, type Upstream } from './upstream.js';
import {
  CLASS_ANY,
  CLASS_IN,
  DROP,
  MAX_UDP_PAYLOAD,
  RCODE_FORMERR,
  RCODE_NOTIMP,
  RCODE_SERVFAIL,
  TYPE_AXFR,
  TYPE_IXFR,
  AnswerCompiler,
  errorResponse,
  forwardedResponse,
  localResponse,
  parseQuery,
  parseResponse,
  selectBody,
  type CompiledTable,
  type Query,
} from './wire.js';

export interface ListenAddress {
  host: string;
  port: number;
}

export const DEFAULT_DNS_PORT = 15053;
/** A UDP DNS server behind an iptables REDIRECT must be bound to loopback: REDIRECT lands on 127.0.0.1 / ::1 (cni/README.md). */
export const DEFAULT_DNS_LISTEN: readonly ListenAddress[] = [
  { host: '127.0.0.1', port: DEFAULT_DNS_PORT },
  { host: '::1', port: DEFAULT_DNS_PORT },
];

export interface DnsServerOptions {
  table?: DnsTable;
  /** UDP and TCP on each; port 0 picks one free port that UDP and TCP (and every address) share. */
  listen?: readonly ListenAddress[];
  /** `ip` or `ip:port` / `[ipv6]:port`; default: the nameservers of `resolvConf`. */
  upstreams?: readonly string[];
  resolvConf?: string;
  log: Logger;
  /** TTL of the answers for the table's names: short, since the catalog moves. */
  ttlSeconds?: number;
  /** Per attempt; a query gets SERVFAIL after `upstreamAttempts` of them. */
  upstreamTimeoutMs?: number;
  upstreamAttempts?: number;
  cacheEntries?: number;
  /** Bytes the cache may hold (8 MiB unless told); one answer at most a sixteenth of them. */
  cacheBytes?: number;
  cacheMaxTtlSeconds?: number;
  tcpIdleTimeoutMs?: number;
  /** Distinct questions upstream at once; more get SERVFAIL rather than memory. */
  maxInflight?: number;
  registry?: Registry;
}

export interface DnsServer {
  /** What was bound, UDP and TCP alike, in the order of `listen` (less an IPv6 address the host lacks). */
  readonly ports: readonly ListenAddress[];
  readonly upstreams: readonly string[];
  readonly metrics: DnsMetrics;
  /**
   * Takes a new table into use: encoded in slices that leave the event loop free, then swapped in
   * between two queries, so every query sees the old table or the new one, whole. Resolves once the
   * new table answers, or once a table set after it has replaced it.
   */
  setTable(table: DnsTable): Promise<void>;
  close(): Promise<void>;
}

type Reply = (response: Buffer) => void;

interface Waiter {
  msg: Buffer;
  q: Query;
  limit: number;
  reply: Reply;
}

/** Waiters on one upstream question beyond this get SERVFAIL at once. */
const MAX_WAITERS = 1024;
const MAX_TCP_PENDING = 64;
/** Answers written to a TCP client and not yet taken by it, past which it is not read. */
const MAX_TCP_UNSENT = 128 * 1024;

/**
 * Answers one query from the table, the cache or upstream, whatever transport it came on. Exported
 * for the fuzz targets (testing/fuzz-targets.ts), which drive it without sockets.
 */
export class Resolver {
  private compiled: CompiledTable;
  private readonly compiler: AnswerCompiler;
  private generation = 0;
  /**
   * Questions upstream now, with who waits for each. A dictionary object, not a Map: a Map with a set
   * and a delete per query is rehashed every few dozen queries and links each old table to the next,
   * a chain the young-generation GC cannot drop once one table is old (see Owed in upstream.ts).
   */
  private readonly inflight: Record<string, Waiter[] | undefined> = Object.create(null) as Record<string, Waiter[] | undefined>;
  private readonly failed: ReturnType<typeof throttled>;
  /** Set once the listeners are bound (an upstream that is ourselves is known only then). */
  forwarder?: Pick<Forwarder, 'forward'>;

  constructor(
    table: DnsTable,
    ttlSeconds: number,
    private readonly cache: DnsCache,
    readonly metrics: DnsMetrics,
    log: Logger,
  ) {
    this.failed = throttled(log, 'error');
    this.compiler = new AnswerCompiler(ttlSeconds);
    this.compiled = this.compiler.compile(table);
  }

  async setTable(table: DnsTable): Promise<boolean> {
    const generation = ++this.generation;
    const compiled = await this.compiler.compileAsync(table, () => generation !== this.generation);
    if (!compiled || generation !== this.generation) return false;
    this.compiled = compiled;
    return true;
  }

  /** Calls `reply` once, now or later, unless it returns false: a packet that gets no answer. */
  handle(msg: Buffer, udp: boolean, reply: Reply): boolean {
    let q: Query | number = DROP;
    try {
      q = parseQuery(msg);
      if (typeof q === 'number') {
        if (q === DROP) return false;
        this.metrics.count(0, q === RCODE_NOTIMP ? 'notimp' : 'formerr');
        reply(errorResponse(msg, q));
        return true;
      }
      const limit = !udp ? 65535 : q.edns ? Math.min(q.udpSize, MAX_UDP_PAYLOAD) : 512;
      if (q.qclass === CLASS_IN || q.qclass === CLASS_ANY) {
        const name = this.compiled.get(q.name);
        if (name !== undefined) {
          const body = selectBody(name, q.qtype);
          const response = localResponse(msg, q, body, limit);
          if (response[2]! & 0x02) this.metrics.truncated += 1;
          this.metrics.count(q.qtype, body.an > 0 ? 'local' : 'nodata');
          reply(response);
          return true;
        }
      }
      if (q.qtype === TYPE_AXFR || q.qtype === TYPE_IXFR) {
        this.metrics.count(q.qtype, 'notimp');
        reply(errorResponse(msg, RCODE_NOTIMP, q));
        return true;
      }
      this.forward(msg, q, limit, reply);
      return true;
    } catch (error) {
      // A bug must cost one answer, not the process.
      this.failed({ err: error }, 'DNS query handling failed');
      this.metrics.count(typeof q === 'number' ? 0 : q.qtype, 'servfail');
      try {
        reply(errorResponse(msg, msg.length >= 12 ? RCODE_SERVFAIL : RCODE_FORMERR, typeof q === 'number' ? undefined : q));
      } catch {
        // The transport is gone; nothing to answer on.
      }
      return true;
    }
  }

  private forward(msg: Buffer, q: Query, limit: number, reply: Reply): void {
    // DO and CD change what upstream sends back, so they are part of the question.
    const key = q.name + String.fromCharCode(q.qtype, q.qclass, (q.dnssecOk ? 1 : 0) | (msg[3]! & 0x10));
    const now = Date.now();
    const hit = this.cache.get(key, now);
    if (hit) {
      this.metrics.cacheHits += 1;
      const response = forwardedResponse(msg, q, hit.answer, limit, Math.floor((now - hit.storedAt) / 1000));
      if (response[2]! & 0x02) this.metrics.truncated += 1;
      this.metrics.count(q.qtype, 'cached');
      reply(response);
      return;
    }
    this.metrics.cacheMisses += 1;
    const waiter: Waiter = { msg, q, limit, reply };
    const waiting = this.inflight[key];
    if (waiting) {
      if (waiting.length < MAX_WAITERS) waiting.push(waiter);
      else this.answer(waiter, undefined);
      return;
    }
    this.inflight[key] = [waiter];
    const settle = (response: Buffer | undefined) => {
      const waiters = this.inflight[key] ?? [];
      delete this.inflight[key];
      let answer;
      try {
        answer = response ? parseResponse(response, q.questionEnd) : undefined;
        if (answer) this.cache.set(key, answer, Date.now());
      } catch (error) {
        this.failed({ err: error }, 'unreadable upstream DNS answer');
        answer = undefined;
      }
      for (const w of waiters) this.answer(w, answer);
    };
    if (this.forwarder) this.forwarder.forward(msg, q, settle);
    else settle(undefined);
  }

  private answer(w: Waiter, answer: ReturnType<typeof parseResponse>): void {
    try {
      const response = answer ? forwardedResponse(w.msg, w.q, answer, w.limit, -1) : errorResponse(w.msg, RCODE_SERVFAIL, w.q);
      if (response[2]! & 0x02) this.metrics.truncated += 1;
      this.metrics.count(w.q.qtype, answer ? 'forwarded' : 'servfail');
      w.reply(response);
    } catch (error) {
      this.failed({ err: error }, 'DNS answer failed');
    }
  }
}

/**
 * One TCP client: 2-byte length framing, several queries (answered as they complete). What one
 * client can hold is bounded: while MAX_TCP_PENDING of its queries are owed, or MAX_TCP_UNSENT bytes
 * of answers wait for it to read them, nothing more is read from it, so at most one partial frame
 * and one chunk sit here. Idle means no whole query for `idleMs` and no answer owed; a byte now and
 * then does not count, or a client could hold a connection open forever a byte at a time.
 */
function serveTcp(socket: Socket, resolver: Resolver, idleMs: number, log: Logger): void {
  const chunks: Buffer[] = [];
  let buffered = 0;
  let pending = 0;
  let closed = false;
  const idle = setTimeout(function expire() {
    if (pending > 0) idle.refresh();
    else socket.destroy();
  }, idleMs);

  /** The next `n` bytes of what was received, as one buffer; the caller checked that there are as many. */
  const take = (n: number): Buffer => {
    const first = chunks[0]!;
    let out: Buffer;
    if (first.length >= n) out = first.subarray(0, n);
    else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const chunk = chunks[0]!;
        const used = Math.min(chunk.length, n - at);
        chunk.copy(out, at, 0, used);
        at += used;
        if (used < chunk.length) {
          chunks[0] = chunk.subarray(used);
          break;
        }
        chunks.shift();
      }
      buffered -= n;
      return out;
    }
    if (first.length === n) chunks.shift();
    else chunks[0] = first.subarray(n);
    buffered -= n;
    return out;
  };
  const frameLength = () => (chunks[0]!.length >= 2 ? chunks[0]!.readUInt16BE(0) : (chunks[0]![0]! << 8) | chunks[1]![0]!);
  const busy = () => pending >= MAX_TCP_PENDING || socket.writableLength >= MAX_TCP_UNSENT;

  /** Handles every whole query received, while the client may have more; then reads on, or not. */
  const serve = () => {
    while (!closed && !socket.destroyed && buffered >= 2 && !busy()) {
      const length = frameLength();
      if (length === 0) {
        socket.destroy();
        return;
      }
      if (buffered < 2 + length) break;
      take(2);
      const msg = take(length);
      idle.refresh();
      pending += 1;
      if (!resolver.handle(msg, false, reply)) pending -= 1;
    }
    if (closed || socket.destroyed) return;
    if (busy()) socket.pause();
    else socket.resume();
  };

  const reply: Reply = (response) => {
    pending -= 1;
    if (closed || !socket.writable) return;
    const framed = Buffer.allocUnsafe(response.length + 2);
    framed.writeUInt16BE(response.length, 0);
    response.copy(framed, 2);
    socket.write(framed);
    idle.refresh();
    // Answered from the table, a reply comes within serve(); from upstream, later: read on then.
    if (socket.isPaused() && !busy()) setImmediate(serve);
  };

  socket.setNoDelay(true);
  socket.on('error', (error) => log.debug({ err: error }, 'DNS TCP client error'));
  socket.on('close', () => {
    closed = true;
    clearTimeout(idle);
  });
  socket.on('drain', serve);
  socket.on('data', (chunk: Buffer) => {
    chunks.push(chunk);
    buffered += chunk.length;
    serve();
  });
}

function bindUdp(host: string, port: number, resolver: Resolver, log: Logger): Promise<UdpSocket> {
  // A bigger receive buffer than the default 208 KiB: an app starting up sends bursts, and a GC pause
  // at 100k+ qps would otherwise drop queries the client then waits seconds to repeat.
  const socket = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', ipv6Only: isIPv6(host), recvBufferSize: 1 << 20 });
  const socketError = throttled(log, 'warn');
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', reject);
      socket.on('error', (error) => socketError({ err: error }, 'DNS UDP socket error'));
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) =>
        resolver.handle(msg, true, (response) => {
          try {
            socket.send(response, rinfo.port, rinfo.address);
          } catch (error) {
            log.debug({ err: error }, 'DNS UDP answer not sent');
          }
        }),
      );
      resolve(socket);
    });
  });
}

function listenTcp(host: string, port: number, resolver: Resolver, idleMs: number, log: Logger): Promise<{ server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serveTcp(socket, resolver, idleMs, log);
  });
  server.maxConnections = 1024;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, exclusive: true, ipv6Only: isIPv6(host) }, () => {
      server.off('error', reject);
      server.on('error', (error) => log.warn({ err: error }, 'DNS TCP server error'));
      resolve({ server, sockets });
    });
  });
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code;

/** The nameservers of resolv.conf (startDnsServer drops any that is itself: it would loop). */
export function defaultUpstreams(resolvConf: string, log: Logger): string[] {
  try {
    const servers = nameserversFromResolvConf(readFileSync(resolvConf, 'utf8'));
    // glibc's own default when resolv.conf names none.
    return servers.length > 0 ? servers : ['127.0.0.1'];
  } catch (error) {
    log.warn({ err: error, resolvConf }, 'cannot read resolv.conf; no upstream DNS');
    return [];
  }
}

export async function startDnsServer(options: DnsServerOptions): Promise<DnsServer> {
  const { log } = options;
  const listen = options.listen ?? DEFAULT_DNS_LISTEN;
  const cache = new DnsCache(options.cacheEntries ?? 10_000, options.cacheMaxTtlSeconds ?? 300, options.cacheBytes);
  const metrics = new DnsMetrics(options.registry, () => cache.size);
  const idleMs = options.tcpIdleTimeoutMs ?? 10_000;
  const table = options.table ?? emptyDnsTable();
  const resolver = new Resolver(table, options.ttlSeconds ?? 5, cache, metrics, log);

  // Bind first: with port 0 the port is known only then, and an upstream on it would be ourselves.
  let bound: { host: string; port: number; udp: UdpSocket; tcp: Server; sockets: Set<Socket> }[] = [];
  for (let tries = 0; ; tries++) {
    let shared = 0;
    try {
      for (const address of listen) {
        const port = address.port || shared;
        let udp: UdpSocket;
        try {
          udp = await bindUdp(address.host, port, resolver, log);
        } catch (error) {
          // A pod or VM with IPv6 off has no ::1; DNS over IPv4 must still work.
          if (isIPv6(address.host) && ['EADDRNOTAVAIL', 'EAFNOSUPPORT'].includes(errorCode(error) ?? '')) {
            log.warn({ host: address.host }, 'IPv6 loopback unavailable; DNS listens on IPv4 only');
            continue;
          }
          throw error;
        }
        const actual = udp.address().port;
        if (address.port === 0 && shared === 0) shared = actual;
        try {
          const { server, sockets } = await listenTcp(address.host, actual, resolver, idleMs, log);
          bound.push({ host: address.host, port: actual, udp, tcp: server, sockets });
        } catch (error) {
          udp.close();
          throw error;
        }
      }
      if (bound.length === 0) throw new Error(`DNS could bind none of ${listen.map(formatUpstream).join(', ')}`);
      break;
    } catch (error) {
      for (const b of bound) {
        b.udp.close();
        b.tcp.close();
      }
      bound = [];
      if (errorCode(error) === 'EADDRINUSE' && listen.some((l) => l.port === 0) && tries < 20) continue;
      throw error;
    }
  }

  const ours = (u: Upstream) => bound.some((b) => b.port === u.port && (b.host === u.host || b.host === '0.0.0.0' || b.host === '::'));
  const upstreams: Upstream[] = [];
  for (const spec of options.upstreams ?? defaultUpstreams(options.resolvConf ?? '/etc/resolv.conf', log)) {
    const upstream = parseUpstream(spec);
    if (ours(upstream)) log.warn({ upstream: spec }, 'upstream DNS server is this server; skipped');
    else upstreams.push(upstream);
  }
  if (upstreams.length === 0) log.warn('no upstream DNS servers: names outside the mesh get SERVFAIL');
  const forwarder = new Forwarder(upstreams, {
    timeoutMs: options.upstreamTimeoutMs ?? 1000,
    attempts: options.upstreamAttempts ?? 2,
    maxInflight: options.maxInflight ?? 10_000,
    log,
    metrics,
  });
  try {
    await forwarder.start();
  } catch (error) {
    for (const b of bound) {
      b.udp.close();
      b.tcp.close();
    }
    throw error;
  }
  resolver.forwarder = forwarder;
  const logProblems = (t: DnsTable) => {
    if (t.problems.length > 0) log.warn({ problems: t.problems.slice(0, 20), count: t.problems.length }, 'DNS table has problems');
  };
  logProblems(table);
  log.info({ listen: bound.map(formatUpstream), upstreams: upstreams.map(formatUpstream), names: table.size }, 'DNS server listening');

  return {
    ports: bound.map(({ host, port }) => ({ host, port })),
    upstreams: upstreams.map(formatUpstream),
    metrics,
    async setTable(next: DnsTable) {
      if (await resolver.setTable(next)) {
        logProblems(next);
        log.debug({ names: next.size }, 'DNS table swapped');
      }
    },
    async close() {
      forwarder.close();
      await Promise.all(
        bound.map(
          (b) =>
            new Promise<void>((resolve) => {
              b.udp.close();
              for (const socket of b.sockets) socket.destroy();
              b.tcp.close(() => resolve());
            }),
        ),
      );
    },
  };
}
