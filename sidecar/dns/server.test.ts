import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server } from 'node:net';
import dnsPacket, { type Answer, type Packet } from 'dns-packet';
import { Registry } from 'prom-client';
import { createLogger } from '../../common/log.js';
import { startDnsServer, type DnsServer } from './server.js';
import { buildDnsTable } from './table.js';
import { orders, service } from './testing/fixtures.js';

const log = createLogger('dns-test', 'silent');
const search = ['shop.svc.cluster.local', 'svc.cluster.local', 'cluster.local'];
const catalog = [
  orders,
  service({
    id: 'payments.eureka-prod.eureka',
    name: 'PAYMENTS',
    registry: 'eureka-prod',
    source: 'eureka',
    hostnames: ['payments', 'payments.eureka'],
    vips: [{ address: '240.240.0.17', allocation: 'mesh' }],
  }),
  service({
    id: 'dual.static',
    name: 'dual',
    source: 'static',
    hostnames: ['dual.example'],
    vips: [
      { address: '240.240.0.18', allocation: 'mesh' },
      { address: 'fd00::18', allocation: 'mesh' },
    ],
  }),
  // 40 VIPs: 640 bytes of answers, more than 512 and less than 1,232; 100 VIPs: 1,600, more than both.
  service({
    id: 'mid.static',
    name: 'mid',
    source: 'static',
    hostnames: ['mid.example'],
    vips: Array.from({ length: 40 }, (_, i) => ({ address: `240.240.8.${i + 1}`, allocation: 'mesh' as const })),
  }),
  service({
    id: 'big.static',
    name: 'big',
    source: 'static',
    hostnames: ['big.example'],
    vips: Array.from({ length: 100 }, (_, i) => ({ address: `240.240.9.${i + 1}`, allocation: 'mesh' as const })),
  }),
];
const table = buildDnsTable(catalog, [], search);
/** kube-dns's answer for Service payments in shop, which the catalog does not hold. */
const UNEXPORTED_SERVICE_IP = '10.96.7.7';

let nextId = 1;
function query(name: string, type: dnsPacket.RecordType = 'A', options: { edns?: number; id?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: options.id ?? (nextId = (nextId + 1) & 0xffff),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
    ...(options.edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: options.edns, flags: 0, options: [] } as unknown as Answer] } : {}),
  });
}

async function udp(port: number, msg: Buffer, host = '127.0.0.1', timeoutMs = 2000): Promise<Buffer> {
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no UDP answer from ${host}:${port} in ${timeoutMs} ms`)), timeoutMs);
      socket.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      socket.send(msg, port, host);
    });
  } finally {
    socket.close();
  }
}

/** Sends every message on one connection at once and collects as many framed answers. */
async function tcp(port: number, msgs: Buffer[], host = '127.0.0.1'): Promise<Buffer[]> {
  const socket = connect({ host, port });
  const out: Buffer[] = [];
  let data = Buffer.alloc(0);
  try {
    return await new Promise<Buffer[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no TCP answer')), 3000);
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        data = Buffer.concat([data, chunk]);
        while (data.length >= 2 && data.length >= 2 + data.readUInt16BE(0)) {
          out.push(data.subarray(2, 2 + data.readUInt16BE(0)));
          data = data.subarray(2 + data.readUInt16BE(0));
        }
        if (out.length === msgs.length) {
          clearTimeout(timer);
          resolve(out);
        }
      });
      socket.write(Buffer.concat(msgs.map((m) => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]))));
    });
  } finally {
    socket.destroy();
  }
}

const decode = (m: Buffer) => dnsPacket.decode(m) as dnsPacket.DecodedPacket & { rcode: string; opcode: string };
const addresses = (p: Packet) => (p.answers ?? []).map((a) => (a as { data: string }).data);

/** A stand-in for kube-dns on another port: UDP and TCP, answers as `answer` says, counts what it gets. */
interface FakeUpstream {
  port: number;
  seen: string[];
  close(): Promise<void>;
}
async function fakeUpstream(answer: (q: Packet, transport: 'udp' | 'tcp') => Packet | undefined): Promise<FakeUpstream> {
  const seen: string[] = [];
  const respond = (msg: Buffer, transport: 'udp' | 'tcp') => {
    const q = dnsPacket.decode(msg);
    // Names arrive in mixed case (0x20): matched as a DNS server does, in any case, and echoed as sent.
    seen.push(`${transport} ${q.questions?.[0]?.type} ${q.questions?.[0]?.name.toLowerCase()}`);
    const asked = { ...q, questions: q.questions?.map((question) => ({ ...question, name: question.name.toLowerCase() })) };
    const packet = answer(asked, transport);
    return packet && dnsPacket.encode({ id: q.id, questions: q.questions, ...packet, type: 'response' });
  };
  // UDP and TCP on one port; another process may hold the TCP side of the port UDP got, so retry.
  for (let attempt = 0; ; attempt++) {
    const socket: UdpSocket = createSocket('udp4');
    socket.on('message', (msg, rinfo) => {
      let out = respond(msg, 'udp');
      // As a real server does: what does not fit the asker's UDP size goes out empty with TC set.
      const opt = dnsPacket.decode(msg).additionals?.find((r) => r.type === 'OPT') as { udpPayloadSize?: number } | undefined;
      if (out && out.length > Math.max(512, opt?.udpPayloadSize ?? 512)) {
        const q = dnsPacket.decode(msg);
        out = dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.TRUNCATED_RESPONSE, questions: q.questions });
      }
      if (out) socket.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    const port = socket.address().port;
    const server: Server = createServer((conn) => {
      conn.on('data', (chunk: Buffer) => {
        const out = respond(chunk.subarray(2, 2 + chunk.readUInt16BE(0)), 'tcp');
        if (out) conn.write(Buffer.concat([Buffer.from([out.length >> 8, out.length & 0xff]), out]));
      });
      conn.on('error', () => {});
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
    return {
      port,
      seen,
      close: async () => {
        socket.close();
        await new Promise((r) => server.close(r));
      },
    };
  }
}

const soa = (zone: string, minimum: number): Answer => ({
  type: 'SOA',
  name: zone,
  ttl: 30,
  data: { mname: `ns.${zone}`, rname: `hostmaster.${zone}`, serial: 1, refresh: 60, retry: 60, expire: 60, minimum },
});

describe('the sidecar DNS server', () => {
  let upstream: FakeUpstream;
  let server: DnsServer;
  let port: number;
  const registry = new Registry();

  beforeAll(async () => {
    upstream = await fakeUpstream((q) => {
      const question = q.questions![0]!;
      if (question.name === 'payments.shop.svc.cluster.local' && question.type === 'A')
        return { answers: [{ type: 'A', name: question.name, ttl: 5, data: UNEXPORTED_SERVICE_IP }] };
      if (question.name === 'example.com' && question.type === 'A') return { answers: [{ type: 'A', name: 'example.com', ttl: 1, data: '93.184.216.34' }] };
      if (question.name === 'long.example.com') return { answers: [{ type: 'A', name: 'long.example.com', ttl: 60, data: '192.0.2.60' }] };
      if (question.name === 'many.example.com')
        return {
          answers: Array.from({ length: 120 }, (_, i) => ({ type: 'A' as const, name: 'many.example.com', ttl: 60, data: `10.1.${i >> 8}.${i & 255}` })),
        };
      return { rcode: 'NXDOMAIN', flags: 3, authorities: [soa('cluster.local', 1)] } as Packet;
    });
    server = await startDnsServer({
      table,
      listen: [
        { host: '127.0.0.1', port: 0 },
        { host: '::1', port: 0 },
      ],
      upstreams: [`127.0.0.1:${upstream.port}`],
      log,
      registry,
    });
    port = server.ports[0]!.port;
  });
  afterAll(async () => {
    await server.close();
    await upstream.close();
  });

  it('listens on 127.0.0.1 and ::1, one port for UDP and TCP', async () => {
    expect(server.ports).toEqual([
      { host: '127.0.0.1', port },
      { host: '::1', port },
    ]);
    for (const host of ['127.0.0.1', '::1']) {
      expect(addresses(decode(await udp(port, query('orders.shop.svc.cluster.local'), host)))).toEqual(['10.96.14.20']);
      const [overTcp] = await tcp(port, [query('orders.shop.svc.cluster.local')], host);
      expect(addresses(decode(overTcp!))).toEqual(['10.96.14.20']);
    }
  });

  it('answers the names a pod resolver builds from its search list, echoing the id and the letter case asked', async () => {
    // `orders` (and `orders.shop`) arrive with the search domain appended.
    const asked = query('Orders.SHOP.svc.cluster.local', 'A', { id: 4242 });
    const answer = decode(await udp(port, asked));
    expect(answer).toMatchObject({ id: 4242, rcode: 'NOERROR', flag_aa: true, questions: [{ name: 'Orders.SHOP.svc.cluster.local', type: 'A' }] });
    expect(answer.answers).toEqual([expect.objectContaining({ name: 'Orders.SHOP.svc.cluster.local', type: 'A', ttl: 5, data: '10.96.14.20' })]);
    // A Eureka app's `payments`: under svc.cluster.local the resolver's tries are kube-dns's (next
    // test); `payments.cluster.local` and `payments` as is are ours.
    expect(addresses(decode(await udp(port, query('payments.cluster.local'))))).toEqual(['240.240.0.17']);
    expect(addresses(decode(await udp(port, query('payments'))))).toEqual(['240.240.0.17']);
    expect(addresses(decode(await udp(port, query('payments.eureka'))))).toEqual(['240.240.0.17']);
  });

  it("never answers a Kubernetes Service's name from a registry's bare name: kube-dns answers under svc.cluster.local", async () => {
    // Service payments in shop is not in the catalog (its namespace not exported); the pod in shop
    // that dials `payments` asks payments.shop.svc.cluster.local first and must get the Service.
    const before = upstream.seen.length;
    const service = decode(await udp(port, query('payments.shop.svc.cluster.local')));
    expect(service).toMatchObject({ rcode: 'NOERROR', flag_aa: false });
    expect(addresses(service)).toEqual([UNEXPORTED_SERVICE_IP]);
    // `payments.eureka` with the svc.cluster.local search domain is Service payments in namespace eureka.
    expect(decode(await udp(port, query('payments.eureka.svc.cluster.local')))).toMatchObject({ rcode: 'NXDOMAIN' });
    expect(decode(await udp(port, query('payments.svc.cluster.local')))).toMatchObject({ rcode: 'NXDOMAIN' });
    expect(upstream.seen.slice(before)).toEqual([
      'udp A payments.shop.svc.cluster.local',
      'udp A payments.eureka.svc.cluster.local',
      'udp A payments.svc.cluster.local',
    ]);
  });

  it('gives NODATA, not NXDOMAIN, for AAAA of an IPv4-only service; AAAA where there is one', async () => {
    const nodata = decode(await udp(port, query('orders.shop.svc.cluster.local', 'AAAA')));
    expect(nodata).toMatchObject({ rcode: 'NOERROR', flag_aa: true, answers: [] });
    expect(addresses(decode(await udp(port, query('dual.example', 'AAAA'))))).toEqual(['fd00::18']);
    expect(decode(await udp(port, query('dual.example', 'TXT')))).toMatchObject({ rcode: 'NOERROR', answers: [] });
  });

  it('answers SRV for named ports with the service name and port, and its address alongside', async () => {
    const answer = decode(await udp(port, query('_grpc._tcp.orders.shop.svc.cluster.local', 'SRV')));
    expect(answer.answers).toEqual([
      expect.objectContaining({ type: 'SRV', data: { priority: 0, weight: 100, port: 9090, target: 'orders.shop.svc.cluster.local' } }),
    ]);
    expect(answer.additionals).toEqual([expect.objectContaining({ type: 'A', name: 'orders.shop.svc.cluster.local', data: '10.96.14.20' })]);
  });

  it('answers PTR for a VIP', async () => {
    const answer = decode(await udp(port, query('20.14.96.10.in-addr.arpa', 'PTR')));
    expect(answer.answers).toEqual([expect.objectContaining({ type: 'PTR', data: 'orders.shop.svc.cluster.local' })]);
  });

  it('forwards other names upstream and caches the answer for its TTL', async () => {
    const before = upstream.seen.length;
    const first = decode(await udp(port, query('example.com')));
    expect(first).toMatchObject({ rcode: 'NOERROR', flag_aa: false });
    expect(addresses(first)).toEqual(['93.184.216.34']);
    expect(upstream.seen.slice(before)).toEqual(['udp A example.com']);
    const second = decode(await udp(port, query('EXAMPLE.com')));
    expect(addresses(second)).toEqual(['93.184.216.34']);
    expect(second.questions![0]!.name).toBe('EXAMPLE.com');
    expect(upstream.seen.length).toBe(before + 1);
    const long = decode(await udp(port, query('long.example.com')));
    expect(long.answers).toEqual([expect.objectContaining({ ttl: 60, data: '192.0.2.60' })]);
    await new Promise((r) => setTimeout(r, 1100));
    expect(addresses(decode(await udp(port, query('example.com'))))).toEqual(['93.184.216.34']);
    expect(upstream.seen.length).toBe(before + 3);
    // Held for a second: served with the TTL it has left, so a client's cache never outlives ours.
    expect(decode(await udp(port, query('long.example.com'))).answers).toEqual([expect.objectContaining({ ttl: 59, data: '192.0.2.60' })]);
    expect(upstream.seen.length).toBe(before + 3);
  });

  it("forwards a name under the cluster domain that is not ours (kube-dns's word) and caches NXDOMAIN per the SOA", async () => {
    const before = upstream.seen.length;
    for (const name of ['orders.shop.shop.svc.cluster.local', 'orders.default.svc.cluster.local']) {
      expect(decode(await udp(port, query(name)))).toMatchObject({ rcode: 'NXDOMAIN' });
      expect(decode(await udp(port, query(name)))).toMatchObject({ rcode: 'NXDOMAIN' });
    }
    expect(upstream.seen.slice(before)).toEqual(['udp A orders.shop.shop.svc.cluster.local', 'udp A orders.default.svc.cluster.local']);
  });

  it('asks upstream once for the same question asked many times at once', async () => {
    const before = upstream.seen.length;
    const answers = await Promise.all(Array.from({ length: 20 }, () => udp(port, query('nothing.example.org'))));
    expect(answers.map((a) => decode(a).rcode)).toEqual(Array<string>(20).fill('NXDOMAIN'));
    expect(upstream.seen.length).toBe(before + 1);
  });

  it('truncates over UDP what does not fit, and answers it whole over TCP', async () => {
    const plain = decode(await udp(port, query('big.example')));
    expect(plain).toMatchObject({ flag_tc: true, answers: [] });
    const edns = decode(await udp(port, query('big.example', 'A', { edns: 1232 })));
    expect(edns).toMatchObject({ flag_tc: true, answers: [] });
    expect(edns.additionals).toEqual([expect.objectContaining({ type: 'OPT' })]);
    // Fits in 1,232 but not in 512: EDNS decides.
    expect(decode(await udp(port, query('mid.example')))).toMatchObject({ flag_tc: true, answers: [] });
    expect(addresses(decode(await udp(port, query('mid.example', 'A', { edns: 1232 }))))).toHaveLength(40);
    expect(addresses(decode(await udp(port, query('dual.example', 'ANY' as dnsPacket.RecordType))))).toEqual(['240.240.0.18', 'fd00::18']);
    const [whole, small] = await tcp(port, [query('big.example'), query('orders.shop.svc.cluster.local')]);
    expect(addresses(decode(whole!))).toHaveLength(100);
    expect(decode(whole!).flag_tc).toBe(false);
    expect(addresses(decode(small!))).toEqual(['10.96.14.20']);
  });

  it('takes an upstream answer too big for UDP over TCP, and truncates it for a UDP client as needed', async () => {
    const before = upstream.seen.length;
    const [whole] = await tcp(port, [query('many.example.com')]);
    expect(addresses(decode(whole!))).toHaveLength(120);
    // 120 A records, owners uncompressed (dns-packet), are 3,840 bytes: truncated upstream over UDP.
    expect(upstream.seen.slice(before)).toEqual(['udp A many.example.com', 'tcp A many.example.com']);
    expect(decode(await udp(port, query('many.example.com', 'A', { edns: 1232 })))).toMatchObject({ flag_tc: true, answers: [] });
    expect(upstream.seen.length).toBe(before + 2);
  });

  it('answers garbage with FORMERR (echoing the id), other opcodes with NOTIMP, and keeps answering', async () => {
    const garbage = Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0xff, 0xff, 0x00]);
    expect(decode(await udp(port, garbage))).toMatchObject({ id: 0x1234, rcode: 'FORMERR', questions: [] });
    const badLabel = Buffer.concat([query('orders.shop.svc.cluster.local', 'A', { id: 77 }).subarray(0, 12), Buffer.from([0x50, 0x41, 0x41, 0, 0, 1, 0, 1])]);
    expect(decode(await udp(port, badLabel))).toMatchObject({ id: 77, rcode: 'FORMERR' });
    const twoQuestions = query('orders.shop.svc.cluster.local', 'A', { id: 78 });
    twoQuestions[5] = 2;
    expect(decode(await udp(port, twoQuestions))).toMatchObject({ id: 78, rcode: 'FORMERR' });
    const update = query('orders.shop.svc.cluster.local', 'A', { id: 79 });
    update[2] = 5 << 3;
    expect(decode(await udp(port, update))).toMatchObject({
      id: 79,
      rcode: 'NOTIMP',
      opcode: 'UPDATE',
      questions: [{ name: 'orders.shop.svc.cluster.local' }],
    });
    const [overTcp] = await tcp(port, [Buffer.from([0xab, 0xcd, 0x01])]);
    expect(decode(overTcp!)).toMatchObject({ id: 0xabcd, rcode: 'FORMERR' });
    const noise = createSocket('udp4');
    for (let i = 0; i < 200; i++) {
      const random = Buffer.from(Array.from({ length: 1 + ((i * 7) % 60) }, (_, j) => (i * 31 + j * 17) & 0xff));
      await new Promise((r) => noise.send(random, port, '127.0.0.1', r));
    }
    noise.close();
    expect(addresses(decode(await udp(port, query('orders.shop.svc.cluster.local'))))).toEqual(['10.96.14.20']);
  });

  it('swaps its table whole', async () => {
    const moved = service({
      id: 'orders.shop',
      name: 'orders',
      namespace: 'shop',
      source: 'kubernetes',
      vips: [{ address: '10.96.14.99', allocation: 'cluster-ip' }],
    });
    await server.setTable(buildDnsTable([moved], [], search));
    try {
      expect(addresses(decode(await udp(port, query('orders.shop.svc.cluster.local'))))).toEqual(['10.96.14.99']);
      // payments left the table: now upstream's to answer.
      expect(decode(await udp(port, query('payments.cluster.local')))).toMatchObject({ rcode: 'NXDOMAIN' });
    } finally {
      await server.setTable(table);
    }
    expect(addresses(decode(await udp(port, query('orders.shop.svc.cluster.local'))))).toEqual(['10.96.14.20']);
  });

  it('encodes a big table without holding up the event loop, and the last table set wins', async () => {
    // 1,000 services of 10 hostnames each, and each hostname under 3 search domains outside
    // svc.cluster.local (those are kube-dns's): 40,000 names.
    const many = Array.from({ length: 1000 }, (_, i) =>
      service({
        id: `svc-${i}.static`,
        name: `svc-${i}`,
        source: 'static',
        hostnames: Array.from({ length: 10 }, (_, h) => `h${h}.svc-${i}.example`),
        vips: [{ address: `240.241.${i >> 8}.${i & 255}`, allocation: 'mesh' }],
      }),
    );
    const bigTable = buildDnsTable([...catalog, ...many], [], [...search, 'corp.example', 'eu.corp.example']);
    expect(bigTable.size).toBeGreaterThan(40_000);
    let ticks = 0;
    const ticker = setInterval(() => (ticks += 1), 1);
    try {
      const superseded = server.setTable(buildDnsTable([], [], search));
      const swapped = server.setTable(bigTable).then(() => performance.now());
      const answered = udp(port, query('orders.shop.svc.cluster.local')).then((m) => ({ at: performance.now(), m }));
      const [swappedAt, meanwhile] = await Promise.all([swapped, answered, superseded]);
      // Queries are answered (from the old table) while the new one is encoded; timers run too.
      expect(meanwhile.at).toBeLessThan(swappedAt);
      expect(addresses(decode(meanwhile.m))).toEqual(['10.96.14.20']);
      expect(ticks).toBeGreaterThan(3);
    } finally {
      clearInterval(ticker);
    }
    expect(addresses(decode(await udp(port, query('h9.svc-999.example.eu.corp.example'))))).toEqual(['240.241.3.231']);
    expect(addresses(decode(await udp(port, query('orders.shop.svc.cluster.local'))))).toEqual(['10.96.14.20']);
    await server.setTable(table);
  });

  it('counts queries by type and result in its Prometheus registry', async () => {
    const text = await registry.metrics();
    expect(text).toMatch(/flb_dns_queries_total\{type="A",result="local"\} \d+/);
    expect(text).toMatch(/flb_dns_queries_total\{type="AAAA",result="nodata"\} [1-9]/);
    expect(text).toMatch(/flb_dns_queries_total\{type="other",result="formerr"\} [1-9]/);
    expect(text).toMatch(/flb_dns_cache_hits_total [1-9]/);
    expect(text).toMatch(/flb_dns_upstream_duration_seconds_count\{upstream="127.0.0.1:\d+",outcome="answer"\} [1-9]/);
  });
});

describe('upstream failures', () => {
  it('answers SERVFAIL within its attempts x timeout when upstream is silent, and tries the next upstream', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    const good = await fakeUpstream(() => ({ answers: [{ type: 'A', name: 'example.net', ttl: 60, data: '192.0.2.1' }] }));
    const lonely = await startDnsServer({
      listen: [{ host: '127.0.0.1', port: 0 }],
      upstreams: [`127.0.0.1:${silent.address().port}`],
      upstreamTimeoutMs: 100,
      log,
    });
    const paired = await startDnsServer({
      listen: [{ host: '127.0.0.1', port: 0 }],
      upstreams: [`127.0.0.1:${silent.address().port}`, `127.0.0.1:${good.port}`],
      upstreamTimeoutMs: 100,
      log,
    });
    try {
      let started = performance.now();
      expect(decode(await udp(lonely.ports[0]!.port, query('example.net')))).toMatchObject({ rcode: 'SERVFAIL' });
      expect(performance.now() - started).toBeLessThan(600);
      started = performance.now();
      const [overTcp] = await tcp(lonely.ports[0]!.port, [query('example.net')]);
      expect(decode(overTcp!)).toMatchObject({ rcode: 'SERVFAIL' });
      started = performance.now();
      expect(addresses(decode(await udp(paired.ports[0]!.port, query('example.net'))))).toEqual(['192.0.2.1']);
      expect(performance.now() - started).toBeLessThan(600);
    } finally {
      await lonely.close();
      await paired.close();
      await good.close();
      silent.close();
    }
  });

  it('never forwards to itself, and answers SERVFAIL when left with no upstream', async () => {
    const probe = createSocket('udp4');
    await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
    const free = probe.address().port;
    probe.close();
    const self = await startDnsServer({ listen: [{ host: '127.0.0.1', port: free }], upstreams: [`127.0.0.1:${free}`], log });
    try {
      expect(self.upstreams).toEqual([]);
      expect(decode(await udp(free, query('example.net')))).toMatchObject({ rcode: 'SERVFAIL' });
    } finally {
      await self.close();
    }
  });

  it('reads its upstreams from resolv.conf', async () => {
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'flb-dns-'));
    writeFileSync(
      join(dir, 'resolv.conf'),
      '# kubelet\nsearch shop.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00:0::10 # v6\noptions ndots:5\n',
    );
    const s = await startDnsServer({ listen: [{ host: '127.0.0.1', port: 0 }], resolvConf: join(dir, 'resolv.conf'), log });
    try {
      expect(s.upstreams).toEqual(['10.96.0.10:53', '[fd00::10]:53']);
    } finally {
      await s.close();
      rmSync(dir, { recursive: true });
    }
  });
});

describe('DNS over TCP', () => {
  it('closes a connection left idle, and not one with an answer still owed', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    const s = await startDnsServer({
      table,
      listen: [{ host: '127.0.0.1', port: 0 }],
      upstreams: [`127.0.0.1:${silent.address().port}`],
      upstreamTimeoutMs: 150,
      tcpIdleTimeoutMs: 100,
      log,
    });
    try {
      const closedAfter = async (msg?: Buffer) => {
        const socket = connect({ host: '127.0.0.1', port: s.ports[0]!.port });
        const started = performance.now();
        let answered = 0;
        socket.on('data', () => (answered += 1));
        if (msg) socket.write(Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]));
        await new Promise((resolve) => socket.once('close', resolve));
        return { ms: performance.now() - started, answered };
      };
      const idle = await closedAfter();
      expect(idle.ms).toBeGreaterThanOrEqual(90);
      expect(idle.ms).toBeLessThan(1000);
      // Upstream is silent: SERVFAIL comes after 2 x 150 ms, past the idle timeout, and still arrives.
      const owed = await closedAfter(query('example.net'));
      expect(owed.answered).toBe(1);
      expect(owed.ms).toBeGreaterThanOrEqual(290);
    } finally {
      await s.close();
      silent.close();
    }
  });

  it('closes a connection that trickles a query a byte at a time', async () => {
    const s = await startDnsServer({ table, listen: [{ host: '127.0.0.1', port: 0 }], upstreams: [], tcpIdleTimeoutMs: 200, log });
    const socket = connect({ host: '127.0.0.1', port: s.ports[0]!.port });
    const msg = query('orders.shop.svc.cluster.local');
    const framed = Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);
    let sent = 0;
    const trickle = setInterval(() => {
      if (!socket.destroyed && sent < framed.length) socket.write(framed.subarray(sent, ++sent));
    }, 40);
    try {
      const started = performance.now();
      await new Promise((resolve) => socket.once('close', resolve));
      // 47 bytes at one per 40 ms would take 1.9 s; idle counts whole queries, not bytes.
      expect(performance.now() - started).toBeLessThan(1000);
      expect(sent).toBeLessThan(framed.length);
    } finally {
      clearInterval(trickle);
      socket.destroy();
      await s.close();
    }
  });

  it('stops reading a client that sends queries and does not read the answers, and serves others meanwhile', async () => {
    const s = await startDnsServer({ table, listen: [{ host: '127.0.0.1', port: 0 }], upstreams: [], log });
    const port = s.ports[0]!.port;
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    try {
      // 100,000 answers of 1.6 KB: 160 MB, of which the kernel's buffers (4 MB to send, up to 32 MB
      // to receive here) take some 23,000 answers; the rest the server must not make and hold.
      const msg = query('big.example');
      const framed = Buffer.concat([Buffer.from([msg.length >> 8, msg.length & 0xff]), msg]);
      socket.write(Buffer.concat(Array.from({ length: 100_000 }, () => framed)));
      const answered = () => s.metrics.snapshot()['A/local'] ?? 0;
      let last = -1;
      for (let waited = 0; waited < 10_000 && answered() !== last; waited += 300) {
        last = answered();
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      expect(answered()).toBeGreaterThan(0);
      expect(answered()).toBeLessThan(40_000);
      const [answer] = await tcp(port, [query('orders.shop.svc.cluster.local')]);
      expect(addresses(decode(answer!))).toEqual(['10.96.14.20']);
    } finally {
      socket.destroy();
      await s.close();
    }
  });
});
