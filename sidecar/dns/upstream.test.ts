import { afterEach, describe, expect, it } from '@jest/globals';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { createServer } from 'node:net';
import dnsPacket from 'dns-packet';
import { createLogger } from '../../common/log.js';
import { DnsMetrics } from './metrics.js';
import { startDnsServer, type DnsServer } from './server.js';
import { buildDnsTable } from './table.js';
import { orders } from './testing/fixtures.js';
import { Forwarder, parseUpstream } from './upstream.js';
import { parseQuery, parseResponse, type Query } from './wire.js';

const log = createLogger('dns-upstream-test', 'silent');
const table = buildDnsTable([orders], [], ['shop.svc.cluster.local']);

let nextId = 100;
const query = (name: string, type: dnsPacket.RecordType = 'A') =>
  dnsPacket.encode({ type: 'query', id: (nextId = (nextId + 1) & 0xffff), flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: 'IN' }] });

async function udp(port: number, msg: Buffer, timeoutMs = 3000): Promise<Buffer> {
  const socket = createSocket('udp4');
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no UDP answer from port ${port} in ${timeoutMs} ms`)), timeoutMs);
      socket.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      socket.send(msg, port, '127.0.0.1');
    });
  } finally {
    socket.close();
  }
}

const decode = (m: Buffer) => dnsPacket.decode(m) as dnsPacket.DecodedPacket & { rcode: string };
const addresses = (m: Buffer) => (decode(m).answers ?? []).map((a) => (a as { data: string }).data);
const questionEnd = (msg: Buffer) => (parseQuery(msg) as Query).questionEnd;

/** The header and question of `asked` (as sent, letter case included) as a response with `rcode` and the counts given. */
function responseHead(asked: Buffer, rcode: number, counts: { an?: number; ns?: number; ar?: number } = {}): Buffer {
  const head = Buffer.from(asked.subarray(0, questionEnd(asked)));
  head[2] = 0x81;
  head[3] = 0x80 | rcode;
  head.writeUInt16BE(counts.an ?? 0, 6);
  head.writeUInt16BE(counts.ns ?? 0, 8);
  head.writeUInt16BE(counts.ar ?? 0, 10);
  return head;
}

/** An A record for the question's name (a pointer to offset 12). */
const aRecord = (address: string, ttl = 60) => {
  const r = Buffer.alloc(16);
  r.writeUInt16BE(0xc00c, 0);
  r.writeUInt16BE(1, 2);
  r.writeUInt16BE(1, 4);
  r.writeUInt32BE(ttl, 6);
  r.writeUInt16BE(4, 10);
  Buffer.from(address.split('.').map(Number)).copy(r, 12);
  return r;
};

/** NXDOMAIN whose authority SOA (owned by the root) has RDLENGTH 0 and ends the message. */
const emptySoaAnswer = (asked: Buffer) => Buffer.concat([responseHead(asked, 3, { ns: 1 }), Buffer.from([0, 0, 6, 0, 1, 0, 0, 0, 30, 0, 0])]);

/** An upstream written byte by byte, UDP and TCP on one port: `answer` sees each query as sent and replies (or not) itself. */
interface RawUpstream {
  port: number;
  socket: UdpSocket;
  close(): Promise<void>;
}
type Answer = (asked: Buffer, from: RemoteInfo | 'tcp', reply: (bytes: Buffer) => void) => void;
async function rawUpstream(answer: Answer): Promise<RawUpstream> {
  // Another process may hold the TCP side of the port UDP got: try another.
  for (let attempt = 0; ; attempt++) {
    const socket = createSocket('udp4');
    const send = (bytes: Buffer, to: RemoteInfo) => {
      try {
        socket.send(bytes, to.port, to.address);
      } catch {
        // A late answer after the test closed the upstream.
      }
    };
    socket.on('message', (asked, from) => answer(asked, from, (bytes) => send(bytes, from)));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const port = socket.address().port;
    const server = createServer((conn) => {
      conn.on('error', () => {});
      conn.once('data', (chunk: Buffer) =>
        answer(chunk.subarray(2, 2 + chunk.readUInt16BE(0)), 'tcp', (bytes) =>
          conn.write(Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes])),
        ),
      );
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
      });
    } catch (error) {
      socket.close();
      if (attempt < 20) continue;
      throw error;
    }
    return { port, socket, close: async () => void (socket.close(), await new Promise((r) => server.close(r))) };
  }
}

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function serverWith(upstream: RawUpstream, options: { upstreamTimeoutMs?: number } = {}): Promise<DnsServer> {
  const server = await startDnsServer({ table, listen: [{ host: '127.0.0.1', port: 0 }], upstreams: [`127.0.0.1:${upstream.port}`], log, ...options });
  closers.push(() => server.close());
  return server;
}

describe('a hostile upstream answer', () => {
  it('an NXDOMAIN whose authority SOA has RDLENGTH 0 at the very end is refused, not looped on', () => {
    const asked = query('gone.example.com');
    expect(parseResponse(emptySoaAnswer(asked), questionEnd(asked))).toBeUndefined();
  });

  it('costs the client who asked a SERVFAIL, and the server keeps answering everyone else', async () => {
    const upstream = await rawUpstream((asked, _from, reply) => {
      const name = dnsPacket.decode(asked).questions![0]!.name.toLowerCase();
      reply(name === 'gone.example.com' ? emptySoaAnswer(asked) : Buffer.concat([responseHead(asked, 0, { an: 1 }), aRecord('192.0.2.7')]));
    });
    closers.push(upstream.close);
    const server = await serverWith(upstream);
    const port = server.ports[0]!.port;
    expect(decode(await udp(port, query('gone.example.com')))).toMatchObject({ rcode: 'SERVFAIL' });
    expect(addresses(await udp(port, query('orders.shop.svc.cluster.local')))).toEqual(['10.96.14.20']);
    expect(addresses(await udp(port, query('fine.example.com')))).toEqual(['192.0.2.7']);
  });
});

/** The question's name as asked, letter case and all. */
const askedName = (msg: Buffer) => dnsPacket.decode(msg).questions![0]!.name;
/** `msg` with every letter of its question name (ending at `end`, as in the query) in the other case. */
function otherCase(msg: Buffer, end: number): Buffer {
  const out = Buffer.from(msg);
  for (let i = 12; i < end - 4; i++) if (/[a-z]/i.test(String.fromCharCode(out[i]!))) out[i]! ^= 0x20;
  return out;
}
const answerWith = (asked: Buffer, address: string) => Buffer.concat([responseHead(asked, 0, { an: 1 }), aRecord(address)]);

describe('spoofed upstream answers (RFC 5452)', () => {
  it('ignores an answer from another port or with another id, and takes the real one that follows', async () => {
    const spoofer = createSocket('udp4');
    await new Promise<void>((resolve) => spoofer.bind(0, '127.0.0.1', resolve));
    closers.push(() => spoofer.close());
    const upstream = await rawUpstream((asked, from, reply) => {
      if (from === 'tcp') return reply(answerWith(asked, '192.0.2.99'));
      // Exact question and id, but from another port; from the right port, the id one off.
      spoofer.send(answerWith(asked, '192.0.2.66'), from.port, from.address);
      const wrongId = answerWith(asked, '192.0.2.67');
      wrongId.writeUInt16BE((wrongId.readUInt16BE(0) + 1) & 0xffff, 0);
      reply(wrongId);
      setTimeout(() => reply(answerWith(asked, '192.0.2.1')), 30);
    });
    closers.push(upstream.close);
    const server = await serverWith(upstream);
    expect(addresses(await udp(server.ports[0]!.port, query('spoofed.example.com')))).toEqual(['192.0.2.1']);
  });

  it('does not believe an answer naming the question in another letter case than sent: it asks again over TCP', async () => {
    const seen: string[] = [];
    const upstream = await rawUpstream((asked, from, reply) => {
      seen.push(`${from === 'tcp' ? 'tcp' : 'udp'} ${askedName(asked)}`);
      if (from === 'tcp') return reply(answerWith(asked, '192.0.2.1'));
      reply(otherCase(answerWith(asked, '192.0.2.68'), questionEnd(asked)));
      setTimeout(() => reply(answerWith(asked, '192.0.2.2')), 30);
    });
    closers.push(upstream.close);
    const server = await serverWith(upstream);
    const answer = await udp(server.ports[0]!.port, query('case-spoofed.example.com'));
    expect(addresses(answer)).toEqual(['192.0.2.1']);
    expect(askedName(answer)).toBe('case-spoofed.example.com');
    expect(seen.map((s) => s.split(' ')[0])).toEqual(['udp', 'tcp']);
  });

  it('still answers through an upstream that does not keep the letter case, over TCP', async () => {
    const upstream = await rawUpstream((asked, from, reply) => {
      const lowered = answerWith(asked, '192.0.2.3');
      lowered.write(
        askedName(asked)
          .toLowerCase()
          .split('.')
          .map((l) => String.fromCharCode(l.length) + l)
          .join(''),
        12,
        'latin1',
      );
      reply(from === 'tcp' ? answerWith(asked, '192.0.2.3') : lowered);
    });
    closers.push(upstream.close);
    const server = await serverWith(upstream);
    expect(addresses(await udp(server.ports[0]!.port, query('lowercasing.example.com')))).toEqual(['192.0.2.3']);
  });

  it('sends queries from ports that change and with the name in random case, and answers each client in its own case', async () => {
    const sent: { port: number; name: string }[] = [];
    const upstream = await rawUpstream((asked, from, reply) => {
      if (from !== 'tcp') sent.push({ port: from.port, name: askedName(asked) });
      reply(answerWith(asked, '192.0.2.4'));
    });
    closers.push(upstream.close);
    const server = await serverWith(upstream);
    // More queries than the pool's 16 sockets serve before each is retired (256 each).
    const names = Array.from({ length: 4800 }, (_, i) => `Client-Case-${i}.Example.COM`);
    for (let i = 0; i < names.length; i += 100) {
      const answers = await Promise.all(names.slice(i, i + 100).map((name) => udp(server.ports[0]!.port, query(name))));
      answers.forEach((answer, j) => expect([askedName(answer), addresses(answer)]).toEqual([names[i + j], ['192.0.2.4']]));
    }
    expect(sent).toHaveLength(names.length);
    const uses = new Map<number, number>();
    for (const { port } of sent) uses.set(port, (uses.get(port) ?? 0) + 1);
    // A pool of 16 sockets, each retired after 256 queries for one on a new port.
    expect(uses.size).toBeGreaterThanOrEqual(names.length / 256);
    expect(Math.max(...uses.values())).toBeLessThanOrEqual(256);
    // One bit per letter: a name of 20 letters or more goes out in the client's own case once in a million.
    expect(sent.every(({ name }, i) => name.toLowerCase() === names[i]!.toLowerCase())).toBe(true);
    expect(sent.filter(({ name }, i) => name === names[i]).length).toBeLessThan(3);
  });
});

describe('the sockets queries leave from', () => {
  it('a closed port at an upstream (ICMP port unreachable) moves the query on to the next upstream at once, not after the timeout', async () => {
    const closed = createSocket('udp4');
    await new Promise<void>((resolve) => closed.bind(0, '127.0.0.1', resolve));
    const closedPort = closed.address().port;
    await new Promise<void>((resolve) => closed.close(resolve));
    const upstream = await rawUpstream((asked, _from, reply) => reply(answerWith(asked, '192.0.2.5')));
    closers.push(upstream.close);
    const server = await startDnsServer({
      table,
      listen: [{ host: '127.0.0.1', port: 0 }],
      upstreams: [`127.0.0.1:${closedPort}`, `127.0.0.1:${upstream.port}`],
      upstreamTimeoutMs: 10_000,
      log,
    });
    closers.push(() => server.close());
    expect(addresses(await udp(server.ports[0]!.port, query('refused.example.com'), 5000))).toEqual(['192.0.2.5']);
    expect(server.metrics.upstreamOutcomes).toEqual({ answer: 1, timeout: 0, error: 1 });
  });

  it('a socket retired while answers to it are still owed stays open until they came, then closes', async () => {
    const ports: number[] = [];
    const upstream = await rawUpstream((asked, from, reply) => {
      if (from !== 'tcp') ports.push(from.port);
      setTimeout(() => reply(answerWith(asked, '192.0.2.6')), 150);
    });
    closers.push(upstream.close);
    const udpHandles = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap').length;
    // Sockets closed by the tests before finish closing on the loop's next turns.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const before = udpHandles();
    const metrics = new DnsMetrics();
    const forwarder = new Forwarder([parseUpstream(`127.0.0.1:${upstream.port}`)], {
      timeoutMs: 5000,
      attempts: 1,
      maxInflight: 100,
      log,
      metrics,
      portPool: 2,
      queriesPerPort: 1,
    });
    await forwarder.start();
    closers.push(() => forwarder.close());
    // Every query retires the socket it left from while its answer is 150 ms away.
    const asked = Array.from({ length: 24 }, (_, i) => query(`retired-${i}.example.com`));
    const answers = await Promise.all(
      asked.map((msg) => new Promise<Buffer | undefined>((resolve) => forwarder.forward(msg, parseQuery(msg) as Query, resolve))),
    );
    expect(answers.map((a) => a && addresses(a))).toEqual(asked.map(() => ['192.0.2.6']));
    expect(new Set(ports).size).toBe(24);
    expect(metrics.upstreamOutcomes).toEqual({ answer: 24, timeout: 0, error: 0 });
    // What is left open is the pool: two sockets (handles close on the loop's next turns).
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(udpHandles() - before).toBe(2);
  });
});
