// Open-loop load at a fixed rate, for latency: requests are sent on a schedule whatever the
// server's speed, and latency counts from the scheduled send time, so a slow server cannot hide
// its queueing (no coordinated omission). Microsecond resolution; prints JSON on stdout, with every
// counted latency when asked (the caller pools rounds), and how late this process itself sent
// (a late send is counted against the server, so a busy client shows there, not as the server).
import { Agent, request } from 'node:https';

interface RateOptions {
  url: string;
  body: string;
  ca: string;
  connections: number;
  durationSeconds: number;
  rate: number;
  /** Print every counted latency too. */
  raw?: boolean;
}

const o = JSON.parse(process.argv[2]!) as RateOptions;
const url = new URL(o.url);
const agent = new Agent({ keepAlive: true, maxSockets: o.connections, ca: o.ca, noDelay: true });
// The first second opens connections and warms the JIT on both sides; it is sent but not counted,
// or its handshakes (queued behind by the schedule) would be most of the p99.
const warmup = Math.round(o.rate);
const total = warmup + Math.round(o.rate * o.durationSeconds);
const latencies = new Float64Array(total);
const sendLag = new Float64Array(total);
let done = 0;
let errors = 0;
let non2xx = 0;
// performance.now(), not hrtime.bigint(): the spinning scheduler would allocate a BigInt per turn,
// and the young-generation collections that caused were most of the measured tail.
const start = performance.now();
const intervalMs = 1000 / o.rate;

function fire(i: number): void {
  const scheduled = start + i * intervalMs;
  sendLag[i] = performance.now() - scheduled;
  const req = request(
    {
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(o.body) },
    },
    (res) => {
      if (res.statusCode !== 200) non2xx++;
      res.on('data', () => {});
      res.on('end', () => {
        latencies[i] = performance.now() - scheduled;
        if (++done === total) finish();
      });
    },
  );
  req.on('error', () => {
    errors++;
    latencies[i] = Number.NaN;
    if (++done === total) finish();
  });
  req.end(o.body);
}

// A setImmediate loop rather than timers (which fire at best every millisecond, in bursts): this
// process has a core of its own, so it may spin.
let next = 0;
const pump = () => {
  const elapsed = performance.now() - start;
  while (next < total && next * intervalMs <= elapsed) fire(next++);
  if (next < total) setImmediate(pump);
};
pump();

function finish(): void {
  const sorted = Array.from(latencies.subarray(warmup))
    .filter((v) => !Number.isNaN(v))
    .sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
  const lags = Array.from(sendLag.subarray(warmup)).sort((a, b) => a - b);
  process.stdout.write(
    `${JSON.stringify({
      rps: o.rate,
      requests: total - warmup,
      p50: q(0.5),
      p99: q(0.99),
      p999: q(0.999),
      max: sorted[sorted.length - 1],
      sendLagP99: lags[Math.floor(0.99 * lags.length)],
      sendLagMax: lags[lags.length - 1],
      errors,
      non2xx,
      timeouts: 0,
      ...(o.raw ? { latencies: sorted.map((v) => Math.round(v * 1000) / 1000) } : {}),
    })}\n`,
  );
  agent.destroy();
}
