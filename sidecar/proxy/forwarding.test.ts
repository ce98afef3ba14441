/*
 * The native forwarder (native/forwarder.c) through its JavaScript listener, over loopback with
 * real sockets: what a client and an endpoint see, and what the forwarder reports.
 */
import { afterEach, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createLogger } from '../../common/log.js';
import { createForwarder, ForwardOutcome, type NativeForwarder } from '../native/index.js';
import { errnoName, ForwardingListener, type AcceptedConnection, type ForwardedConnection } from './forwarding.js';

const log = createLogger('forwarding-test', 'silent');

/** What the forwarder reports about one connection. */
class Recorder implements ForwardedConnection {
  readonly connects: number[] = [];
  /** Bytes reported so far (takeBytes and close). */
  readonly counted: [fromClient: number, fromUpstream: number] = [0, 0];
  closedWith?: { fromClient: number; fromUpstream: number; outcome: ForwardOutcome };
  private resolveClosed!: () => void;
  readonly whenClosed = new Promise<void>((resolve) => (this.resolveClosed = resolve));
  /** What to do after a connect outcome (the test's retry policy). */
  onConnect: (errno: number) => void = () => {};

  connected(errno: number): void {
    this.connects.push(errno);
    this.onConnect(errno);
  }

  bytes(fromClient: number, fromUpstream: number): void {
    this.counted[0] += fromClient;
    this.counted[1] += fromUpstream;
  }

  closed(fromClient: number, fromUpstream: number, outcome: ForwardOutcome): void {
    this.bytes(fromClient, fromUpstream);
    this.closedWith = { fromClient: this.counted[0], fromUpstream: this.counted[1], outcome };
    this.resolveClosed();
  }
}

const servers: Server[] = [];
const listeners: ForwardingListener[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const l of listeners.splice(0)) l.close();
});

function endpoint(onConnection: (socket: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    onConnection(socket);
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** A listener that hands each accepted connection to `route`. */
function forwarder(route: (accepted: AcceptedConnection, listener: ForwardingListener) => void): ForwardingListener {
  const listener: ForwardingListener = new ForwardingListener((accepted) => route(accepted, listener), log);
  listeners.push(listener);
  listener.listen('127.0.0.1', 0, false);
  return listener;
}

/** Forwards every connection to `port`, recording what the forwarder reports. */
function forwardTo(port: number): { listener: ForwardingListener; reports: Recorder[] } {
  const reports: Recorder[] = [];
  const listener = forwarder((accepted, l) => {
    const report = new Recorder();
    reports.push(report);
    const errno = l.connect(accepted.id, report, '127.0.0.1', port, 2000);
    if (errno !== 0) report.connected(errno);
  });
  return { listener, reports };
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function readAll(socket: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('the native forwarder', () => {
  it('forwards both ways, passes a half-close on, and counts the bytes', async () => {
    // The endpoint answers only after the client's end: the answer must cross a half-closed connection.
    const port = await endpoint((socket) => {
      const got: Buffer[] = [];
      socket.on('data', (c: Buffer) => got.push(c));
      socket.on('end', () => socket.end(`got ${Buffer.concat(got).length} bytes: ${Buffer.concat(got).toString()}`));
    });
    const { listener, reports } = forwardTo(port);
    const client = await dial(listener.port);
    const answer = readAll(client);
    client.end('hello');
    expect((await answer).toString()).toBe('got 5 bytes: hello');
    await reports[0]!.whenClosed;
    expect(reports[0]!.connects).toEqual([0]);
    expect(reports[0]!.closedWith).toEqual({ fromClient: 5, fromUpstream: 'got 5 bytes: hello'.length, outcome: ForwardOutcome.Clean });
    expect(listener.openConnections()).toBe(0);
  });

  it('moves 32 MiB each way at once to a slow reader intact (backpressure, no loss)', async () => {
    const size = 32 * 1024 * 1024;
    const down = randomBytes(size);
    const up = randomBytes(size);
    let upstreamGot: Promise<Buffer> | undefined;
    const port = await endpoint((socket) => {
      upstreamGot = readAll(socket);
      socket.end(down);
    });
    const { listener, reports } = forwardTo(port);
    const client = await dial(listener.port);
    client.pause();
    const clientGot = readAll(client);
    client.end(up);
    // Nobody reads the client side for a while: the forwarder must hold, not drop or buffer it all.
    await new Promise((r) => setTimeout(r, 300));
    client.resume();
    expect(sha(await clientGot)).toBe(sha(down));
    await reports[0]!.whenClosed;
    expect(sha(await upstreamGot!)).toBe(sha(up));
    expect(reports[0]!.closedWith).toMatchObject({ fromClient: size, fromUpstream: size, outcome: ForwardOutcome.Clean });
  });

  it("reports an endpoint's reset as its failure and resets the client", async () => {
    const port = await endpoint((socket) => socket.once('data', () => socket.resetAndDestroy()));
    const { listener, reports } = forwardTo(port);
    const client = await dial(listener.port);
    const failed = once(client, 'error');
    client.write('x');
    const [error] = (await failed) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNRESET');
    await reports[0]!.whenClosed;
    expect(reports[0]!.closedWith?.outcome).toBe(ForwardOutcome.UpstreamFailed);
  });

  it("passes a client's reset on to the endpoint, without blaming the endpoint", async () => {
    let endpointError: Promise<string> | undefined;
    let arrived!: () => void;
    const dataArrived = new Promise<void>((resolve) => (arrived = resolve));
    const port = await endpoint((socket) => {
      endpointError = new Promise((resolve) => {
        socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        socket.on('end', () => resolve('a clean end'));
      });
      socket.once('data', () => arrived());
    });
    const { listener, reports } = forwardTo(port);
    const client = await dial(listener.port);
    client.write('x');
    await dataArrived;
    client.resetAndDestroy();
    expect(await endpointError).toBe('ECONNRESET');
    await reports[0]!.whenClosed;
    expect(reports[0]!.closedWith?.outcome).toBe(ForwardOutcome.ClientFailed);
  });

  it('reports a refused connect with its errno; the same connection then connects elsewhere', async () => {
    const closedPort = await endpoint(() => {});
    servers.pop()!.close();
    const port = await endpoint((socket) => socket.end('from the second endpoint'));
    const report = new Recorder();
    const listener = forwarder((accepted, l) => {
      report.onConnect = (errno) => {
        if (errno !== 0) l.connect(accepted.id, report, '127.0.0.1', port, 2000);
      };
      const errno = l.connect(accepted.id, report, '127.0.0.1', closedPort, 2000);
      if (errno !== 0) report.connected(errno);
    });
    const client = await dial(listener.port);
    expect((await readAll(client)).toString()).toBe('from the second endpoint');
    expect(report.connects[0] === undefined ? undefined : errnoName(report.connects[0])).toBe('ECONNREFUSED');
    expect(report.connects.slice(1)).toEqual([0]);
  });

  it('hands a connection over as a net.Socket, or resets it', async () => {
    let accepted = 0;
    const listener = forwarder((connection, l) => {
      if (accepted++ % 2 === 0) l.reset(connection.id);
      else {
        const socket = l.socket(connection.id);
        socket.end(`from javascript, peer ${socket.remoteAddress}`);
      }
    });
    const results: string[] = [];
    for (let i = 0; i < 4; i++) {
      const client = connect({ host: '127.0.0.1', port: listener.port });
      results.push(
        await new Promise<string>((resolve) => {
          let text = '';
          client.on('data', (c: Buffer) => (text += c.toString()));
          client.on('end', () => resolve(text));
          client.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        }),
      );
    }
    expect(results).toEqual(['ECONNRESET', 'from javascript, peer 127.0.0.1', 'ECONNRESET', 'from javascript, peer 127.0.0.1']);
    await new Promise((r) => setTimeout(r, 20));
    expect(listener.openConnections()).toBe(0);
  });

  it('reports the bytes of an open connection when asked, and the rest at close', async () => {
    const port = await endpoint((socket) => {
      socket.on('data', (c: Buffer) => socket.write(c));
      socket.on('end', () => socket.end());
    });
    const { listener, reports } = forwardTo(port);
    const client = await dial(listener.port);
    client.write('12345');
    await once(client, 'data');
    listener.reportBytes();
    expect(reports[0]!.counted).toEqual([5, 5]);
    expect(reports[0]!.closedWith).toBeUndefined();
    client.end('678');
    await reports[0]!.whenClosed;
    expect(reports[0]!.closedWith).toMatchObject({ fromClient: 8, fromUpstream: 8 });
  });

  it('leaks no connection and no file descriptor over 300 concurrent connections ending every way', async () => {
    const openFds = () => readdirSync('/proc/self/fd').length;
    // The endpoint answers each connection by how it starts: echo until the end, reset, or end at once.
    const port = await endpoint((socket) => {
      socket.once('data', (first: Buffer) => {
        const mode = first[0];
        if (mode === 0x72 /* r */) return socket.resetAndDestroy();
        if (mode === 0x65 /* e */) return socket.end();
        socket.write(first);
        socket.on('data', (c: Buffer) => socket.write(c));
        socket.on('end', () => socket.end());
      });
    });
    const { listener, reports } = forwardTo(port);
    const before = openFds();
    const one = (i: number) =>
      new Promise<string>((resolve) => {
        const client = connect({ host: '127.0.0.1', port: listener.port, allowHalfOpen: true });
        let got = 0;
        client.on('data', (c: Buffer) => (got += c.length));
        // Half-open: the client ends its side once the other side has ended (as any client would).
        client.on('end', () => client.end());
        client.on('error', () => resolve('error'));
        client.on('close', () => resolve(`closed ${got}`));
        client.on('connect', () => {
          if (i % 5 === 0)
            client.write('r'); // the endpoint resets
          else if (i % 5 === 1)
            client.write('e'); // the endpoint ends first
          else if (i % 5 === 2)
            client.resetAndDestroy(); // the client resets before anything
          else if (i % 5 === 3)
            client.end(Buffer.alloc(100_000, 0x61)); // echo a body, half-close
          else client.write(Buffer.alloc(10, 0x61), () => setTimeout(() => client.destroy(), 5)); // the client closes mid-echo
        });
      });
    const outcomes = await Promise.all(Array.from({ length: 300 }, (_, i) => one(i)));
    expect(outcomes.filter((o, i) => i % 5 === 3 && o === 'closed 100000')).toHaveLength(60);
    await new Promise((r) => setTimeout(r, 200));
    expect(listener.openConnections()).toBe(0);
    expect(reports).toHaveLength(300);
    expect(reports.every((r) => r.closedWith !== undefined || r.connects.length === 0)).toBe(true);
    // The endpoint's and the client's sockets are gone too: nothing left open in this process.
    expect(openFds()).toBeLessThanOrEqual(before);
  });

  it("listens on both families for '::' (two sockets), and connects to IPv6 endpoints", async () => {
    const server = createServer((socket) => socket.on('error', () => {}).end(`hello ${socket.remoteAddress}`));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
    const port = (server.address() as AddressInfo).port;
    const peers: string[] = [];
    const listener = new ForwardingListener((accepted) => {
      peers.push(accepted.peerAddress);
      const report = new Recorder();
      const errno = listener.connect(accepted.id, report, '::1', port, 2000);
      if (errno !== 0) report.connected(errno);
    }, log);
    listeners.push(listener);
    listener.listen('::', 0, false);
    for (const host of ['127.0.0.1', '::1']) {
      const client = connect({ host, port: listener.port });
      expect((await readAll(client)).toString()).toBe('hello ::1');
    }
    expect(peers).toEqual(['127.0.0.1', '::1']);
  });

  it('refuses misuse with a clear error and keeps working', async () => {
    const port = await endpoint((socket) => socket.end('still here'));
    const { listener } = forwardTo(port);
    expect(() => listener.reset(123456)).toThrow(/no such connection/);
    const other = new ForwardingListener(() => {}, log);
    listeners.push(other);
    expect(() => other.listen('127.0.0.1', listener.port)).toThrow(/listen on 127\.0\.0\.1 port \d+: Address already in use/);
    expect(() => other.listen('not-an-ip', 0)).toThrow(/listen: 'not-an-ip' is not an IP address/);
    const client = await dial(listener.port);
    expect((await readAll(client)).toString()).toBe('still here');
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How a socket ended, as its owner sees it. */
function ending(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
  });
}

describe('the native forwarder, hardened', () => {
  const noCallbacks = { accept: () => {}, connected: () => {}, closed: () => {} };
  const codeOf = (call: () => unknown): string | undefined => {
    try {
      call();
      return 'no error';
    } catch (error) {
      return (error as NodeJS.ErrnoException).code;
    }
  };

  it('throws ERR_FORWARDER_DESTROYED from every method called after destroy(), once its memory would have been freed', async () => {
    const destroyed = createForwarder(noCallbacks);
    destroyed.listen(0, '127.0.0.1', 0, false);
    destroyed.destroy();
    // libuv closes the forwarder's handles on the next turn: that is when the old code freed it.
    await sleep(20);
    // New forwarders of the same size take the freed memory, so a call through a stale pointer
    // would act on one of them (and AddressSanitizer, in the sanitizer run, reports the read).
    const others: NativeForwarder[] = Array.from({ length: 8 }, () => createForwarder(noCallbacks));
    try {
      const calls: [string, () => unknown][] = [
        ['listen', () => destroyed.listen(0, '127.0.0.1', 0, false)],
        ['connect', () => destroyed.connect(1, '127.0.0.1', 9, 100)],
        ['release', () => destroyed.release(1)],
        ['reset', () => destroyed.reset(1)],
        ['setIdleTimeout', () => destroyed.setIdleTimeout(1000)],
        ['takeBytes', () => destroyed.takeBytes()],
        ['openConnections', () => destroyed.openConnections()],
        ['stopListening', () => destroyed.stopListening()],
      ];
      expect(calls.map(([name, call]) => [name, codeOf(call)])).toEqual(calls.map(([name]) => [name, 'ERR_FORWARDER_DESTROYED']));
      expect(() => destroyed.destroy()).not.toThrow();
      expect(others.map((o) => o.openConnections())).toEqual(others.map(() => 0));
    } finally {
      for (const o of others) o.destroy();
    }
  });

  it('hands over nothing once the listener closed (an HTTP/2 connection whose listener closed while node:http2 loaded)', async () => {
    let acceptedId: number | undefined;
    const listener = forwarder((accepted) => (acceptedId = accepted.id));
    const client = connect({ host: '127.0.0.1', port: listener.port });
    const clientEnded = ending(client);
    await new Promise<void>((resolve) => {
      const wait = () => (acceptedId === undefined ? setTimeout(wait, 2) : resolve());
      wait();
    });
    listener.close();
    await sleep(20);
    const took = createForwarder(noCallbacks);
    try {
      expect(codeOf(() => listener.socket(acceptedId!))).toBe('ERR_FORWARDER_DESTROYED');
      expect(codeOf(() => listener.connect(acceptedId!, new Recorder(), '127.0.0.1', 9, 100))).toBe('ERR_FORWARDER_DESTROYED');
      expect(codeOf(() => listener.reset(acceptedId!))).toBe('ERR_FORWARDER_DESTROYED');
    } finally {
      took.destroy();
    }
    expect(await clientEnded).toMatch(/ECONNRESET|closed/);
  });

  it('survives a connect timeout whose handler resets another connection timing out in the same scan', async () => {
    const port = await endpoint((socket) => socket.end('hello'));
    const waiting: AcceptedConnection[] = [];
    const outcomes: string[] = [];
    const listener = forwarder((accepted, l) => {
      waiting.push(accepted);
      if (waiting.length < 2) return;
      // Both connect with a 0 ms deadline from the check phase: the forwarder's timer then finds
      // both expired in one scan, before either connect's own completion is read.
      const [first, second] = waiting as [AcceptedConnection, AcceptedConnection];
      setImmediate(() => {
        for (const [mine, other] of [
          [first, second],
          [second, first],
        ] as const) {
          const report = new Recorder();
          report.onConnect = (errno) => {
            outcomes.push(errno === 0 ? 'connected' : errnoName(errno));
            // Reset both: the other one is still on the scan's list of expired connections.
            for (const id of [other.id, mine.id]) {
              try {
                l.reset(id);
              } catch (error) {
                outcomes.push((error as NodeJS.ErrnoException).code ?? 'error');
              }
            }
          };
          expect(l.connect(mine.id, report, '127.0.0.1', port, 0)).toBe(0);
        }
      });
    });
    const clients = [connect({ host: '127.0.0.1', port: listener.port }), connect({ host: '127.0.0.1', port: listener.port })];
    const ends = clients.map(ending);
    expect(await Promise.all(ends)).toEqual(['ECONNRESET', 'ECONNRESET']);
    // One timeout was reported; the connection its handler reset was not reported (nor revived) after it.
    expect(outcomes).toEqual(['ETIMEDOUT']);
    expect(listener.openConnections()).toBe(0);
    // Each slot is on the free list once: two new connections get two slots and both work.
    const next = forwardTo(port);
    const answers = await Promise.all([0, 1].map(async () => (await readAll(await dial(next.listener.port))).toString()));
    expect(answers).toEqual(['hello', 'hello']);
  });

  it('resets both sides of a connection idle for the idle timeout, and only once it is idle', async () => {
    let endpointEnded: Promise<string> | undefined;
    const port = await endpoint((socket) => {
      endpointEnded = ending(socket);
      socket.on('data', (c: Buffer) => socket.write(c));
    });
    const reports: Recorder[] = [];
    const listener = new ForwardingListener(
      (accepted) => {
        const report = new Recorder();
        reports.push(report);
        expect(listener.connect(accepted.id, report, '127.0.0.1', port, 2000)).toBe(0);
      },
      log,
      300,
    );
    listeners.push(listener);
    listener.listen('127.0.0.1', 0, false);
    const client = await dial(listener.port);
    const clientEnded = ending(client);
    let echoed = 0;
    client.on('data', (c: Buffer) => (echoed += c.length));
    // A byte every 100 ms for 800 ms: busy, so still open well past the timeout.
    for (let i = 0; i < 8; i++) {
      client.write('x');
      await sleep(100);
    }
    expect(echoed).toBe(8);
    expect(reports[0]!.closedWith).toBeUndefined();
    const quietSince = performance.now();
    expect(await clientEnded).toBe('ECONNRESET');
    const idleFor = performance.now() - quietSince;
    expect(idleFor).toBeGreaterThanOrEqual(150); // the last byte was echoed about 100 ms before quietSince
    expect(idleFor).toBeLessThan(1000);
    expect(await endpointEnded).toBe('ECONNRESET');
    await reports[0]!.whenClosed;
    expect(reports[0]!.closedWith).toEqual({ fromClient: 8, fromUpstream: 8, outcome: ForwardOutcome.IdleTimeout });
    expect(listener.openConnections()).toBe(0);
  });

  it('turns TCP keepalive on for both sockets of a forwarded connection', async () => {
    const port = await endpoint((socket) => socket.on('data', (c: Buffer) => socket.write(c)));
    const { listener } = forwardTo(port);
    const client = await dial(listener.port);
    client.write('x');
    await once(client, 'data');
    // ss -o shows a socket's keepalive timer; the forwarder's sockets are the accepted one (local
    // port: the listener's) and the one it dialled (remote port: the endpoint's), in this process.
    const timers = (filter: string) =>
      execFileSync('ss', ['-tnoH', 'state', 'established', filter], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .map((line) => /timer:\((\w+),/.exec(line)?.[1] ?? 'no timer');
    expect(timers(`( sport = :${listener.port} )`)).toEqual(['keepalive']);
    expect(timers(`( dport = :${port} )`)).toEqual(['keepalive']);
    client.destroy();
  });

  it('refuses numbers that are not what they must be with a TypeError, and keeps working', async () => {
    const port = await endpoint((socket) => socket.end('still here'));
    const refusals: string[] = [];
    const listener = forwarder((accepted, l) => {
      const id = accepted.id;
      const report = new Recorder();
      for (const call of [
        () => l.connect(id, report, '127.0.0.1', 70000, 1000),
        () => l.connect(id, report, '127.0.0.1', 0, 1000),
        () => l.connect(id, report, '127.0.0.1', 80.5, 1000),
        () => l.connect(id, report, '127.0.0.1', Number.NaN, 1000),
        () => l.connect(id, report, '127.0.0.1', port, Number.NaN),
        () => l.connect(id, report, '127.0.0.1', port, Number.POSITIVE_INFINITY),
        () => l.connect(id, report, '127.0.0.1', port, -1),
        () => l.connect(-1, report, '127.0.0.1', port, 1000),
        () => l.connect(id + 0.5, report, '127.0.0.1', port, 1000),
        () => l.connect(2 ** 60, report, '127.0.0.1', port, 1000),
        () => l.connect(id, report, '127.0.0.1', port, 1000, 42 as unknown as string),
        () => l.reset(Number.NaN),
        () => l.socket(Number.POSITIVE_INFINITY),
        () => l.setIdleTimeout(-5),
        () => l.setIdleTimeout(Number.NaN),
      ]) {
        try {
          call();
          refusals.push('accepted');
        } catch (error) {
          refusals.push((error as Error).constructor.name);
        }
      }
      expect(l.connect(id, report, '127.0.0.1', port, 1000)).toBe(0);
    });
    const client = await dial(listener.port);
    expect((await readAll(client)).toString()).toBe('still here');
    expect(refusals).toEqual(Array.from({ length: 15 }, () => 'TypeError'));
    const native = createForwarder(noCallbacks);
    try {
      // The addon's errors come from Node's realm, not the test's: compared by name.
      const nameOf = (call: () => unknown) => {
        try {
          call();
          return 'accepted';
        } catch (error) {
          return (error as Error).name;
        }
      };
      expect(nameOf(() => native.listen(1.5, '127.0.0.1', 0))).toBe('TypeError');
      expect(nameOf(() => native.listen(0, '127.0.0.1', 65536))).toBe('TypeError');
      expect(nameOf(() => native.listen(0, '127.0.0.1', -1))).toBe('TypeError');
      expect(nameOf(() => native.listen(0, '127.0.0.1', 0, 'yes' as unknown as boolean))).toBe('TypeError');
      expect(native.openConnections()).toBe(0);
    } finally {
      native.destroy();
    }
  });
});
