// UDP DNS load in its own process (pinned to a core by the caller); prints JSON on stdout.
//  max:  closed loop, `inflight` queries outstanding at all times (a query lost under overload is
//        re-sent after 1 s), counting answers per second after a warm-up second.
//  rate: open loop at a fixed rate; latency counts from the scheduled send time, so a slow server
//        cannot hide its queueing (no coordinated omission).
// Queries cycle through `names` (type A); answers must carry the id sent and rcode NOERROR with
// at least one answer, or they count as errors.
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';

interface LoadOptions {
  host: string;
  port: number;
  names: string[];
  mode: 'max' | 'rate';
  seconds: number;
  inflight?: number;
  rate?: number;
}

const o = JSON.parse(process.argv[2]!) as LoadOptions;
const queries = o.names.map((name) =>
  dnsPacket.encode({ type: 'query', id: 0, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] }),
);
const socket = createSocket(o.host.includes(':') ? 'udp6' : 'udp4');
await new Promise<void>((resolve) => socket.bind(0, resolve));
// Bursts at 100k+ qps overflow the default receive buffer.
socket.setRecvBufferSize(8 << 20);
socket.setSendBufferSize(8 << 20);

let nextName = 0;
function send(id: number): void {
  const q = queries[nextName]!;
  nextName = (nextName + 1) % queries.length;
  // A fresh buffer per send: a queued datagram's bytes must not change under it.
  const b = Buffer.allocUnsafe(q.length);
  q.copy(b);
  b[0] = id >> 8;
  b[1] = id & 0xff;
  socket.send(b, o.port, o.host);
}
const good = (m: Buffer) => m.length >= 12 && (m[3]! & 0x0f) === 0 && ((m[6]! << 8) | m[7]!) > 0;

if (o.mode === 'max') {
  const slots = o.inflight ?? 200;
  const sentAt = new Float64Array(slots);
  let answered = 0;
  let errors = 0;
  let lost = 0;
  socket.on('message', (m) => {
    const id = (m[0]! << 8) | m[1]!;
    if (id >= slots || sentAt[id] === 0) return;
    if (good(m)) answered++;
    else errors++;
    sentAt[id] = performance.now();
    send(id);
  });
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (let id = 0; id < slots; id++) {
      if (now - sentAt[id]! > 1000) {
        lost++;
        sentAt[id] = now;
        send(id);
      }
    }
  }, 100);
  for (let id = 0; id < slots; id++) {
    sentAt[id] = performance.now();
    send(id);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const a0 = answered;
  const t0 = performance.now();
  const perSecond: number[] = [];
  let last = answered;
  for (let s = 0; s < o.seconds; s++) {
    await new Promise((r) => setTimeout(r, 1000));
    perSecond.push(answered - last);
    last = answered;
  }
  const qps = ((answered - a0) * 1000) / (performance.now() - t0);
  clearInterval(watchdog);
  process.stdout.write(`${JSON.stringify({ qps, perSecond, errors, lost, inflight: slots })}\n`);
} else {
  const rate = o.rate ?? 5000;
  const warmup = rate;
  const total = warmup + Math.round(rate * o.seconds);
  if (total > 65536) throw new Error('rate x seconds must stay under 65,536 queries (one id each)');
  const latencies = new Float64Array(total).fill(Number.NaN);
  let done = 0;
  let errors = 0;
  const start = performance.now();
  const intervalMs = 1000 / rate;
  let finish!: () => void;
  const finished = new Promise<void>((r) => (finish = r));
  socket.on('message', (m) => {
    const id = (m[0]! << 8) | m[1]!;
    if (id >= total || !Number.isNaN(latencies[id]!)) return;
    latencies[id] = performance.now() - (start + id * intervalMs);
    if (!good(m)) errors++;
    if (++done === total) finish();
  });
  // A setImmediate loop rather than timers (which fire at best every millisecond, in bursts): this
  // process has a core of its own, so it may spin.
  let next = 0;
  const pump = () => {
    const elapsed = performance.now() - start;
    while (next < total && next * intervalMs <= elapsed) send(next++);
    if (next < total) setImmediate(pump);
  };
  pump();
  await Promise.race([finished, new Promise((r) => setTimeout(r, (o.seconds + 1) * 1000 + 3000))]);
  const measured = Array.from(latencies.subarray(warmup));
  const lost = measured.filter((v) => Number.isNaN(v)).length;
  const sorted = measured.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
  process.stdout.write(
    `${JSON.stringify({ rate, queries: total - warmup, p50: q(0.5), p99: q(0.99), p999: q(0.999), max: sorted[sorted.length - 1], errors, lost })}\n`,
  );
}
socket.close();
