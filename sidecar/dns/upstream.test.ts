import { afterEach, describe, expect, it } from '@jest/globals';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { createLogger } from '../../common/log.js';
import { startDnsServer, type DnsServer } from './server.js';
import { buildDnsTable } from './table.js';
import { orders } from './testing/fixtures.js';
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

/** A UDP upstream written byte by byte: `answer` sees each query as sent and replies (or not) itself. */
interface RawUpstream {
  port: number;
  socket: UdpSocket;
  close(): void;
}
async function rawUpstream(answer: (asked: Buffer, from: RemoteInfo, reply: (bytes: Buffer) => void) => void): Promise<RawUpstream> {
  const socket = createSocket('udp4');
  socket.on('message', (asked, from) => answer(asked, from, (bytes) => socket.send(bytes, from.port, from.address)));
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  return { port: socket.address().port, socket, close: () => socket.close() };
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
