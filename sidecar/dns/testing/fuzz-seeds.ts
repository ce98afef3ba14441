// Writes the seed corpora of the DNS fuzz targets (fuzz-targets.ts) into sidecar/dns/testing/fuzz/corpus/:
// queries as resolvers send them and answers as upstreams send them, built with dns-packet, and
// the same questions answered by a real dnsmasq (its own compression, SOA and OPT placement).
// Run again (from the repository root) only to change the seeds, and commit the files it writes:
//   npx esbuild sidecar/dns/testing/fuzz-seeds.ts --bundle --platform=node --format=esm \
//     --packages=external --outfile=/tmp/fuzz-seeds.mjs && node /tmp/fuzz-seeds.mjs
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import dnsPacket, { type Answer, type Packet, type Question } from 'dns-packet';

const corpus = resolve('sidecar/dns/testing/fuzz/corpus');
const opt = (udpPayloadSize: number, flags = 0, options: unknown[] = []) => ({ type: 'OPT', name: '.', udpPayloadSize, flags, options }) as unknown as Answer;

const questions: (Question & { edns?: number; dnssecOk?: boolean })[] = [
  { name: 'orders.shop.svc.cluster.local', type: 'A' },
  { name: 'Orders.SHOP.svc.cluster.local', type: 'AAAA', edns: 1232 },
  { name: '_grpc._tcp.orders.shop.svc.cluster.local', type: 'SRV', edns: 4096 },
  { name: '20.14.96.10.in-addr.arpa', type: 'PTR' },
  { name: 'big.example', type: 'A', edns: 1232, dnssecOk: true },
  { name: 'dual.example', type: 'ANY' as Question['type'] },
  { name: 'example.com', type: 'MX' },
  { name: 'example.com', type: 'TXT', edns: 512 },
  { name: 'www.example.com', type: 'CNAME' },
  { name: 'gone.example.com', type: 'A', edns: 1232 },
  { name: 'example.com', type: 'SOA' },
  { name: 'example.com', type: 'AXFR' as Question['type'] },
];

const query = (q: (typeof questions)[number], id: number) =>
  dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name: q.name, type: q.type, class: 'IN' }],
    ...(q.edns ? { additionals: [opt(q.edns, q.dnssecOk ? dnsPacket.DNSSEC_OK : 0)] } : {}),
  });

const soa = (zone: string): Answer => ({
  type: 'SOA',
  name: zone,
  ttl: 300,
  data: { mname: `ns1.${zone}`, rname: `hostmaster.${zone}`, serial: 2024010101, refresh: 7200, retry: 3600, expire: 1209600, minimum: 60 },
});

/** Answers as an upstream writes them (dns-packet does not compress owner names: the long form). */
const answers: Packet[] = [
  { answers: [{ type: 'A', name: 'example.com', ttl: 300, data: '93.184.216.34' }], additionals: [opt(1232)] },
  { answers: [{ type: 'AAAA', name: 'example.com', ttl: 300, data: '2606:2800:220:1:248:1893:25c8:1946' }] },
  {
    answers: [
      { type: 'CNAME', name: 'www.example.com', ttl: 60, data: 'example.com' },
      { type: 'A', name: 'example.com', ttl: 300, data: '93.184.216.34' },
    ],
  },
  {
    answers: [{ type: 'MX', name: 'example.com', ttl: 300, data: { preference: 10, exchange: 'mail.example.com' } }],
    additionals: [{ type: 'A', name: 'mail.example.com', ttl: 300, data: '192.0.2.25' }, opt(4096)],
  },
  { answers: [{ type: 'TXT', name: 'example.com', ttl: 300, data: ['v=spf1 -all', 'hello'] }] },
  {
    answers: [
      {
        type: 'SRV',
        name: '_grpc._tcp.orders.shop.svc.cluster.local',
        ttl: 30,
        data: { priority: 0, weight: 100, port: 9090, target: 'orders.shop.svc.cluster.local' },
      },
    ],
  },
  { answers: [{ type: 'PTR', name: '20.14.96.10.in-addr.arpa', ttl: 30, data: 'orders.shop.svc.cluster.local' }] },
  { rcode: 'NXDOMAIN', flags: 3, authorities: [soa('example.com')], additionals: [opt(1232)] } as Packet,
  { answers: [], authorities: [soa('example.com')] },
  { answers: [soa('example.com')] },
  { rcode: 'SERVFAIL', flags: 2 } as Packet,
  {
    answers: [],
    authorities: [{ type: 'NS', name: 'example.com', ttl: 3600, data: 'ns1.example.com' }],
    additionals: [opt(1232), { type: 'A', name: 'ns1.example.com', ttl: 3600, data: '192.0.2.53' }],
  },
  { answers: Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, name: 'big.example', ttl: 30, data: `10.1.0.${i}` })) },
];

function write(target: string, name: string, bytes: Uint8Array): void {
  mkdirSync(join(corpus, target), { recursive: true });
  writeFileSync(join(corpus, target, name), bytes);
}

questions.forEach((q, i) => write('dns-query', `${String(i).padStart(2, '0')}-${q.type}-${q.name}`.toLowerCase(), query(q, 0x1000 + i)));
// A question name compressed (a pointer where none may be), a NOTIFY, two OPTs, EDNS version 1.
const compressed = Buffer.concat([query(questions[0]!, 1).subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
write('dns-query', 'x-pointer-in-question', compressed);
write(
  'dns-query',
  'x-two-opts',
  dnsPacket.encode({ type: 'query', id: 2, questions: [{ name: 'example.com', type: 'A' }], additionals: [opt(1232), opt(4096)] }),
);
write(
  'dns-query',
  'x-edns-version-1',
  dnsPacket.encode({
    type: 'query',
    id: 3,
    questions: [{ name: 'example.com', type: 'A' }],
    additionals: [{ ...opt(1232), ednsVersion: 1 } as unknown as Answer],
  }),
);

const [dnsmasqQuestions, dnsmasqAnswers] = await fromDnsmasq();
answers.forEach((packet, i) => {
  const q = packet.answers?.[0]?.name ?? 'example.com';
  const type = (packet.answers?.[0]?.type ?? 'A') as Question['type'];
  write(
    'upstream-answer',
    `packet-${String(i).padStart(2, '0')}`,
    dnsPacket.encode({
      type: 'response',
      id: 0x2000 + i,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (packet.flags ?? 0),
      questions: [{ name: q, type, class: 'IN' }],
      ...packet,
    }),
  );
});
dnsmasqAnswers.forEach((bytes, i) => write('upstream-answer', `dnsmasq-${String(i).padStart(2, '0')}-${dnsmasqQuestions[i]}`, bytes));
process.stderr.write(`seeds written to ${corpus}\n`);

/** The questions asked of a dnsmasq serving an authoritative zone and a few records, and its answers. */
async function fromDnsmasq(): Promise<[string[], Buffer[]]> {
  const work = mkdtempSync(join(tmpdir(), 'flb-dns-seeds-'));
  const probe = createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', r));
  const port = probe.address().port;
  probe.close();
  const child = spawn(
    'dnsmasq',
    [
      '--no-daemon',
      '--no-resolv',
      '--no-hosts',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--user=root',
      '--pid-file=',
      '--auth-server=ns1.example.test',
      '--auth-zone=example.test',
      '--auth-soa=2024010101,hostmaster.example.test',
      '--host-record=www.example.test,192.0.2.80,2001:db8::80',
      '--cname=alias.example.test,www.example.test',
      '--mx-host=example.test,mail.example.test,10',
      '--host-record=mail.example.test,192.0.2.25',
      '--txt-record=example.test,"v=spf1 -all","second string"',
      '--srv-host=_http._tcp.example.test,www.example.test,80,0,100',
      '--ptr-record=80.2.0.192.in-addr.arpa,www.example.test',
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const asked: [string, Question['type'], number?][] = [
    ['www.example.test', 'A'],
    ['www.example.test', 'AAAA', 1232],
    ['alias.example.test', 'A'],
    ['example.test', 'MX', 1232],
    ['example.test', 'TXT'],
    ['_http._tcp.example.test', 'SRV', 1232],
    ['example.test', 'SOA'],
    ['example.test', 'NS', 1232],
    ['missing.example.test', 'A', 1232],
    ['www.example.test', 'TXT'],
    ['WwW.ExAmPlE.TeSt', 'A', 1232],
    ['example.test', 'ANY' as Question['type']],
  ];
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  try {
    await new Promise((r) => setTimeout(r, 300));
    const out: Buffer[] = [];
    for (const [i, [name, type, edns]] of asked.entries()) {
      const q = query({ name, type, ...(edns ? { edns } : {}) }, 0x3000 + i);
      out.push(
        await new Promise<Buffer>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`dnsmasq did not answer ${name} ${type}`)), 2000);
          socket.once('message', (m) => {
            clearTimeout(timer);
            resolve(m);
          });
          socket.send(q, port, '127.0.0.1');
        }),
      );
    }
    return [asked.map(([name, type]) => `${type}-${name}`.toLowerCase()), out];
  } finally {
    socket.close();
    child.kill();
    rmSync(work, { recursive: true, force: true });
  }
}
