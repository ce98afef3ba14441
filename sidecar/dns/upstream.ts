import { randomFillSync } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, isIP, type Socket } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from '../../common/log.js';
import type { DnsMetrics } from './metrics.js';
import { throttled } from './throttle.js';
import { RCODE_REFUSED, RCODE_SERVFAIL, mixCase, sameQuestion, upstreamQuery, type Query } from './wire.js';

export interface Upstream {
  /** As the kernel reports a peer (RFC 5952 for IPv6), so answers can be matched to it. */
  host: string;
  port: number;
  family: 4 | 6;
}

/**
 * Source ports (RFC 5452): per upstream, a pool of 16 connected sockets on ports the kernel picks
 * at random, one picked at random per query, each retired after 256 queries or 10 s. An off-path
 * spoofer must guess the port (1 of 16 it cannot see, and they change), the id (16 bits) and the
 * 0x20 case of the name. Rotation is what costs: opening a socket is a bind, a connect and an epoll
 * registration, so retiring every 16 queries cost 17 % of the saturated forwarded rate and every 64
 * queries 12 %; every 256 queries it is lost in the noise. Measured with `bench:dns --forwarded-only
 * --forward-rounds 5 --baseline <build with one socket for life>`: 59,400 qps against 57,700 for one
 * socket per family for the process's life (same rounds; dnsmasq 87,700).
 */
export const DEFAULT_PORT_POOL = 16;
export const DEFAULT_QUERIES_PER_PORT = 256;
export const DEFAULT_PORT_LIFETIME_MS = 10_000;

export const formatUpstream = (u: { host: string; port: number }): string => (u.host.includes(':') ? `[${u.host}]:${u.port}` : `${u.host}:${u.port}`);

/** '10.96.0.10', '10.96.0.10:53', 'fd00::10', '[fd00::10]:5353', 'fe80::1%eth0'. */
export function parseUpstream(spec: string): Upstream {
  let host = spec.trim();
  let port = 53;
  const bracketed = /^\[(.+)\](?::(\d+))?$/.exec(host);
  const hostPort = /^([^:]+):(\d+)$/.exec(host);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2]) port = Number(bracketed[2]);
  } else if (hostPort) {
    host = hostPort[1]!;
    port = Number(hostPort[2]);
  }
  const [address, zone] = host.split('%') as [string, string?];
  const family = isIP(address);
  if (family === 0 || port < 1 || port > 65535) throw new Error(`not an upstream DNS server address: ${spec} (want an IP address, optionally with :port)`);
  const canonical = family === 6 ? ipaddr.IPv6.parse(address).toString() : address;
  return { host: zone ? `${canonical}%${zone}` : canonical, port, family: family as 4 | 6 };
}

/** The `nameserver` lines of a resolv.conf, in order. */
export function nameserversFromResolvConf(text: string): string[] {
  return text
    .split('\n')
    .map((line) =>
      line
        .replace(/[#;].*$/, '')
        .trim()
        .split(/\s+/),
    )
    .filter((words) => words[0] === 'nameserver' && words[1])
    .map((words) => words[1]!);
}

/**
 * A UDP socket connected to one upstream, on a port the kernel picked at random from its ephemeral
 * range. Connected, the kernel hands it only datagrams from that upstream's address and port, and
 * a send needs no address lookup. It is retired after `queriesPerPort` queries or `portLifetimeMs`
 * (a fresh one takes its place in the pool) and closed once no attempt it sent is still owed an
 * answer.
 */
interface Port {
  socket: UdpSocket;
  upstream: number;
  openedAt: number;
  uses: number;
  owed: number;
  /** It reported an error (failed to bind, or the upstream's port is closed): replaced the next time it is picked. */
  failed: boolean;
  retired: boolean;
}

function closeQuietly(socket: UdpSocket): void {
  try {
    socket.close();
  } catch {
    // Closed already, or never bound: nothing to release.
  }
}

/**
 * dgram resolves every address it binds, connects or sends to through a lookup function; the default
 * (dns.lookup) answers an IP address on the next tick, so a socket's bind and connect would finish
 * only then, and sends made meanwhile would be queued. Upstreams are IP addresses (parseUpstream), so
 * this one answers at once: a new socket is connected when connect() returns.
 */
function ipLookup(address: string, options: unknown, callback?: unknown): void {
  const done = (typeof options === 'function' ? options : callback) as (error: Error | null, address: string, family: number) => void;
  const family = isIP(address);
  if (family === 0) done(Object.assign(new Error(`not an IP address: ${address}`), { code: 'EINVAL' }), address, 0);
  else done(null, address, family);
}

interface Attempt {
  msg: Buffer;
  q: Query;
  done: (response: Buffer | undefined) => void;
  id: number;
  tries: number;
  index: number;
  sentAt: number;
  timer?: NodeJS.Timeout;
  /** The socket the attempt went out on: its answer must come back to it. */
  port?: Port;
  /** The query as sent (its id, and its name in the letter case mixCase gave it). */
  sent?: Buffer;
  /** Where it is in Owed's list while owed. */
  slot: number;
}

/**
 * The attempts owed an answer: a list, and the position in it by query id. Not a Map: one set and
 * one delete per query make V8 rehash a Map every few dozen queries, and it links each old table to
 * its successor (for live iterators). Once one table has been promoted to the old generation and
 * dropped, that chain holds every later table and every attempt in them through each young-generation
 * GC until the next full one: measured at saturation, 2 MB promoted per scavenge, scavenges of 7 ms
 * instead of 0.5 and 15 % of the core in GC (README, "Forwarding and spoofing"). The ids' index is a
 * typed array, outside the heap the GC walks; an entry is believed only if the attempt there has the id.
 */
class Owed {
  private readonly list: Attempt[] = [];
  private readonly slotById = new Uint16Array(65536);

  get size(): number {
    return this.list.length;
  }

  get(id: number): Attempt | undefined {
    const attempt = this.list[this.slotById[id]!];
    return attempt !== undefined && attempt.id === id ? attempt : undefined;
  }

  add(attempt: Attempt): void {
    attempt.slot = this.list.length;
    this.slotById[attempt.id] = attempt.slot;
    this.list.push(attempt);
  }

  /** Whether it was owed (and now no longer is). */
  remove(attempt: Attempt): boolean {
    if (this.list[attempt.slot] !== attempt) return false;
    const last = this.list.pop()!;
    if (last !== attempt) {
      last.slot = attempt.slot;
      this.list[last.slot] = last;
      this.slotById[last.id] = last.slot;
    }
    attempt.slot = -1;
    return true;
  }

  /** A copy: what is walked may change meanwhile. */
  all(): Attempt[] {
    return [...this.list];
  }
}

export interface ForwarderOptions {
  timeoutMs: number;
  /** Tries per query, each on the next upstream (the same one again when there is one). */
  attempts: number;
  maxInflight: number;
  log: Logger;
  metrics: DnsMetrics;
  /** Sockets open per upstream, each query sent from one picked at random. */
  portPool?: number;
  /** Queries one socket sends before another, on a new random port, replaces it. */
  queriesPerPort?: number;
  /** And the longest one is used, so that a quiet sidecar's ports change too. */
  portLifetimeMs?: number;
}

/**
 * Sends queries upstream over UDP (TCP when the answer comes back truncated) and hands back the raw
 * answer, or undefined once every attempt has failed: each attempt is bounded by the timeout, so a
 * silent upstream costs at most attempts x timeout, never a hung query. An upstream that times out
 * stops being the first one asked.
 *
 * Against off-path spoofing (RFC 5452) an answer is believed only if it comes from the upstream
 * asked (the socket is connected to it: the kernel drops anything from another address or port), to
 * the socket the query left from, with the id (crypto RNG) and the question we sent, the name in the
 * letter case we sent it in (0x20: mixCase). Queries leave from a pool of sockets on random ports,
 * each retired after a few queries, so a spoofer must guess the port as well: some 15 bits for the
 * port, 16 for the id and one per letter of the name. An answer whose name matches in another case
 * only is a spoofing attempt or an upstream that does not keep case; either way the question is
 * asked again over TCP, which an off-path sender cannot answer.
 */
export class Forwarder {
  /** Per upstream (same index), its sockets. */
  private readonly pools: Port[][];
  private readonly pending = new Owed();
  private readonly tcp = new Set<Socket>();
  private preferred = 0;
  private readonly ids = new Uint16Array(1024);
  private nextId = this.ids.length;
  private readonly randomBytes = Buffer.alloc(1024);
  private nextRandomByte = this.randomBytes.length;
  private readonly randomByte = (): number => {
    if (this.nextRandomByte === this.randomBytes.length) {
      randomFillSync(this.randomBytes);
      this.nextRandomByte = 0;
    }
    return this.randomBytes[this.nextRandomByte++]!;
  };
  private closed = false;
  private readonly socketError: ReturnType<typeof throttled>;
  private readonly caseMismatch: ReturnType<typeof throttled>;
  private readonly portPool: number;
  private readonly queriesPerPort: number;
  private readonly portLifetimeMs: number;
  private readonly maxInflight: number;

  constructor(
    readonly upstreams: readonly Upstream[],
    private readonly options: ForwarderOptions,
  ) {
    this.socketError = throttled(options.log, 'warn');
    this.caseMismatch = throttled(options.log, 'warn');
    this.portPool = Math.max(1, Math.min(256, options.portPool ?? DEFAULT_PORT_POOL));
    this.queriesPerPort = Math.max(1, options.queriesPerPort ?? DEFAULT_QUERIES_PER_PORT);
    this.portLifetimeMs = options.portLifetimeMs ?? DEFAULT_PORT_LIFETIME_MS;
    this.pools = upstreams.map(() => []);
    // Ids are 16 bits and each attempt owed an answer holds one: freshId must always find a free one.
    this.maxInflight = Math.min(options.maxInflight, 49_152);
  }

  /** Opens each upstream's sockets; an upstream of a family this host lacks fails every attempt at once. */
  async start(): Promise<void> {
    const unavailable = new Set<4 | 6>();
    for (const [index, upstream] of this.upstreams.entries()) {
      if (unavailable.has(upstream.family)) continue;
      const first = this.open(index);
      if (first.failed) {
        // No IPv6 here (or no IPv4): those upstreams fail at once and the others answer.
        closeQuietly(first.socket);
        unavailable.add(upstream.family);
        this.options.log.warn({ family: upstream.family }, 'cannot open a socket for upstream DNS servers of this family');
        continue;
      }
      const pool = [first];
      while (pool.length < this.portPool) pool.push(this.open(index));
      this.pools[index] = pool;
    }
  }

  get inflight(): number {
    return this.pending.size;
  }

  forward(msg: Buffer, q: Query, done: (response: Buffer | undefined) => void): void {
    if (this.closed || this.upstreams.length === 0 || this.pending.size >= this.maxInflight) {
      done(undefined);
      return;
    }
    this.send({ msg, q, done, id: 0, tries: 0, index: this.preferred % this.upstreams.length, sentAt: 0, slot: -1 });
  }

  close(): void {
    this.closed = true;
    // Retired sockets still open are those owed an answer: the attempts know them.
    const ports = new Set(this.pools.flat());
    for (const attempt of this.pending.all()) {
      this.pending.remove(attempt);
      clearTimeout(attempt.timer);
      if (attempt.port) ports.add(attempt.port);
      attempt.done(undefined);
    }
    for (const socket of this.tcp) socket.destroy();
    for (const port of ports) closeQuietly(port.socket);
    this.pools.fill([]);
  }

  /**
   * A socket connected to upstream `index`, bound to port 0 first: the kernel picks a free port at
   * random in its ephemeral range. With ipLookup both are done when this returns, and a failure to
   * bind has been reported (port.failed). Bound apart rather than by connect(), which would queue
   * itself, and then close() too, behind a bind that failed.
   */
  private open(index: number): Port {
    const upstream = this.upstreams[index]!;
    const socket = createSocket({ type: upstream.family === 6 ? 'udp6' : 'udp4', lookup: ipLookup as never });
    const port: Port = { socket, upstream: index, openedAt: performance.now(), uses: 0, owed: 0, failed: false, retired: false };
    socket.on('message', (msg: Buffer) => this.onMessage(port, msg));
    socket.on('error', (error) => this.onSocketError(port, error));
    try {
      socket.bind({ port: 0, exclusive: true });
      if (!port.failed) socket.connect(upstream.port, upstream.host);
    } catch (error) {
      this.onSocketError(port, error);
    }
    return port;
  }

  /** A socket of the upstream's pool at random, replaced first when it has served its share. */
  private pick(index: number, now: number): Port | undefined {
    const pool = this.pools[index]!;
    if (pool.length === 0) return undefined;
    const slot = pool.length === 1 ? 0 : this.randomByte() % pool.length;
    let port = pool[slot]!;
    if (port.failed || port.uses >= this.queriesPerPort || now - port.openedAt > this.portLifetimeMs) {
      this.retire(port);
      port = pool[slot] = this.open(index);
      if (port.failed) return undefined;
    }
    port.uses += 1;
    return port;
  }

  /** Closed now, or once the last answer owed to it came or timed out (release). */
  private retire(port: Port): void {
    port.retired = true;
    if (port.owed === 0) closeQuietly(port.socket);
  }

  /** The attempt is no longer waiting on its socket. */
  private release(attempt: Attempt): void {
    const port = attempt.port;
    if (!port) return;
    attempt.port = undefined;
    port.owed -= 1;
    if (port.retired && port.owed === 0) closeQuietly(port.socket);
  }

  /**
   * A socket that failed to bind, or whose upstream answered with an ICMP error (its port closed:
   * ECONNREFUSED; a connected socket hears of it, an unconnected one does not): it is replaced, and
   * the attempts it sent go on to the next upstream now rather than after the timeout.
   */
  private onSocketError(port: Port, error: unknown): void {
    port.failed = true;
    this.socketError({ err: error, upstream: formatUpstream(this.upstreams[port.upstream]!) }, 'upstream DNS socket error');
    if (port.owed === 0) return;
    for (const attempt of this.pending.all()) if (attempt.port === port) this.fail(attempt, 'error', error);
  }

  private freshId(): number {
    for (;;) {
      if (this.nextId === this.ids.length) {
        randomFillSync(this.ids);
        this.nextId = 0;
      }
      const id = this.ids[this.nextId++]!;
      if (!this.pending.get(id)) return id;
    }
  }

  private send(attempt: Attempt): void {
    const upstream = this.upstreams[attempt.index]!;
    attempt.id = this.freshId();
    attempt.sentAt = performance.now();
    this.pending.add(attempt);
    attempt.timer = setTimeout(() => this.fail(attempt, 'timeout'), this.options.timeoutMs);
    const port = this.pick(attempt.index, attempt.sentAt);
    if (!port) {
      this.fail(attempt, 'error', new Error(`no socket for upstream ${formatUpstream(upstream)}`));
      return;
    }
    port.owed += 1;
    attempt.port = port;
    const query = upstreamQuery(attempt.id, attempt.msg, attempt.q);
    mixCase(query, attempt.q.questionEnd, this.randomByte);
    attempt.sent = query;
    try {
      port.socket.send(query, (error) => {
        if (error) this.fail(attempt, 'error', error);
      });
    } catch (error) {
      this.fail(attempt, 'error', error);
    }
  }

  private fail(attempt: Attempt, outcome: 'timeout' | 'error', error?: unknown): void {
    if (!this.pending.remove(attempt)) return;
    clearTimeout(attempt.timer);
    this.release(attempt);
    this.retry(attempt, outcome, error);
  }

  private retry(attempt: Attempt, outcome: 'timeout' | 'error' | 'answer', error?: unknown): void {
    const upstream = this.upstreams[attempt.index]!;
    this.options.metrics.upstream(formatUpstream(upstream), outcome, (performance.now() - attempt.sentAt) / 1000);
    if (outcome !== 'answer') {
      this.options.log.debug({ upstream: formatUpstream(upstream), outcome, err: error }, 'upstream DNS attempt failed');
      if (attempt.index === this.preferred) this.preferred = (attempt.index + 1) % this.upstreams.length;
    }
    attempt.tries += 1;
    if (this.closed || attempt.tries >= this.options.attempts) {
      attempt.done(undefined);
      return;
    }
    attempt.index = (attempt.index + 1) % this.upstreams.length;
    this.send(attempt);
  }

  private onMessage(port: Port, response: Buffer): void {
    if (response.length < 12) return;
    const attempt = this.pending.get((response[0]! << 8) | response[1]!);
    // The socket is connected to the upstream it was opened for: the kernel dropped whatever came
    // from another address or port, so the socket the query left from decides the upstream too.
    if (!attempt || attempt.port !== port) return;
    const upstream = this.upstreams[attempt.index]!;
    if (!(response[2]! & 0x80)) return;
    const questionEnd = attempt.q.questionEnd;
    if (!sameQuestion(response, attempt.sent!, questionEnd, true)) {
      if (!sameQuestion(response, attempt.sent!, questionEnd)) return;
      this.caseMismatch(
        { upstream: formatUpstream(upstream) },
        'upstream DNS answer names the question in another letter case than asked: a spoofing attempt, or an upstream that does not keep case; asking over TCP',
      );
      this.pending.remove(attempt);
      clearTimeout(attempt.timer);
      this.release(attempt);
      this.overTcp(attempt);
      return;
    }
    this.pending.remove(attempt);
    clearTimeout(attempt.timer);
    this.release(attempt);
    if (response[2]! & 0x02) {
      this.overTcp(attempt);
      return;
    }
    const rcode = response[3]! & 0x0f;
    // Another upstream may well answer what this one could not; the last one's word stands.
    if ((rcode === RCODE_SERVFAIL || rcode === RCODE_REFUSED) && this.upstreams.length > 1 && attempt.tries + 1 < this.options.attempts) {
      this.retry(attempt, 'answer');
      return;
    }
    this.options.metrics.upstream(formatUpstream(upstream), 'answer', (performance.now() - attempt.sentAt) / 1000);
    attempt.done(response);
  }

  /** The answer did not fit in UDP: the same question over TCP, to the same upstream, same deadline. */
  private overTcp(attempt: Attempt): void {
    const upstream = this.upstreams[attempt.index]!;
    const id = this.freshId();
    const query = upstreamQuery(id, attempt.msg, attempt.q);
    const framed = Buffer.allocUnsafe(query.length + 2);
    framed.writeUInt16BE(query.length, 0);
    query.copy(framed, 2);
    const socket = connect({ host: upstream.host, port: upstream.port });
    this.tcp.add(socket);
    let settled = false;
    // Kept as chunks and joined once the frame is whole: an upstream sending a byte at a time must
    // not cost a copy of all it sent so far per byte.
    const chunks: Buffer[] = [];
    let received = 0;
    const finish = (response?: Buffer, error?: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.tcp.delete(socket);
      socket.destroy();
      if (response) {
        this.options.metrics.upstream(formatUpstream(upstream), 'answer', (performance.now() - attempt.sentAt) / 1000);
        attempt.done(response);
      } else this.retry(attempt, error === 'timeout' ? 'timeout' : 'error', error);
    };
    const timer = setTimeout(() => finish(undefined, 'timeout'), Math.max(1, this.options.timeoutMs - (performance.now() - attempt.sentAt)));
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(framed));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received < 2) return;
      const head = chunks[0]!.length >= 2 ? chunks[0]! : Buffer.concat(chunks);
      const length = head.readUInt16BE(0);
      if (received < 2 + length) return;
      const response = Buffer.concat(chunks).subarray(2, 2 + length);
      if (response.length >= 12 && response.readUInt16BE(0) === id && response[2]! & 0x80 && sameQuestion(response, attempt.msg, attempt.q.questionEnd))
        finish(response);
      else finish(undefined, new Error('upstream TCP answer does not match the question'));
    });
    socket.on('error', (error) => finish(undefined, error));
    socket.on('close', () => finish(undefined, new Error('upstream closed the TCP connection before answering')));
  }
}
