// Benchmark of the injector webhook (issue #3): AdmissionReviews per second and latency of the
// real injector's HTTPS server on one core, against a bare node:https server that parses the
// same review and returns a fixed patch, same TLS, same run; the load generator runs on the other
// core. Then 1,000 pods through a real kube-apiserver with `flb webhook serve` installed.
// Usage: npm run bench:webhook [-- --seconds 10] [-- --skip-apiserver]
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { admissionReview, realisticPod } from '../injector/testdata/reviews.js';
import { report } from './lib/report.js';
import { runPinned, startPinned, stop } from './lib/processes.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] || 10) || 10;
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);

interface Load {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  errors: number;
  non2xx: number;
  timeouts: number;
}

const ca = createCertificateAuthority('bench-ca');
const serving = issueCertificate(ca, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
const certArgs = [Buffer.from(serving.certPem).toString('base64'), Buffer.from(serving.keyPem).toString('base64')];
const body = JSON.stringify(admissionReview(realisticPod));

/** autocannon for throughput; our open-loop generator (microsecond latencies) at a fixed rate. */
async function load(port: number, connections: number, durationSeconds: number, rate?: number): Promise<Load> {
  const options = JSON.stringify({ url: `https://127.0.0.1:${port}/mutate`, body, ca: ca.certPem, connections, durationSeconds, ...(rate ? { rate } : {}) });
  const out = await runPinned(1, join(here, rate ? 'lib/rate-worker.js' : 'lib/load-worker.js'), [options]);
  return JSON.parse(out) as Load;
}

async function measure(kind: 'bare' | 'flb', profileDir?: string) {
  const { child, firstLine } = await startPinned(
    0,
    join(here, 'webhook-servers.js'),
    [kind, ...certArgs],
    profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  );
  const port = Number(firstLine);
  try {
    progress(`${kind}: warm-up`);
    await load(port, 16, 3);
    if (profileDir) {
      progress(`${kind}: profiling under full load`);
      await load(port, 16, Math.min(seconds, 5));
      return undefined;
    }
    progress(`${kind}: full load, ${seconds} s, 16 connections`);
    const max = await load(port, 16, seconds);
    progress(`${kind}: fixed 1,000 reviews/s, ${seconds} s`);
    const fixed = await load(port, 16, seconds, 1000);
    return { max, fixed };
  } finally {
    await stop(child);
  }
}

/** Self time per function and per area, from a V8 .cpuprofile: where the time goes. */
function summariseProfile(dir: string) {
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return undefined;
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as {
    nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
    samples: number[];
  };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  const areas = new Map<string, number>();
  const area = (url: string, fn: string) => {
    if (fn === '(garbage collector)') return 'garbage collection';
    if (fn === '(idle)' || fn === '(program)') return fn === '(idle)' ? 'idle' : 'native (TLS, sockets, libuv)';
    if (url.includes('/zod/')) return 'zod (AdmissionReview validation)';
    if (/\/(express|body-parser|raw-body|router|iconv-lite|type-is|content-type|qs|finalhandler|send|on-finished)\//.test(url))
      return 'express and body parsing';
    if (url.includes('/injector/') || url.includes('/common/')) return 'injection (flb-mesh code)';
    if (url.includes('prom-client')) return 'metrics';
    if (url.startsWith('node:') || url === '') return 'Node.js core (http, tls, streams, JSON)';
    return 'other libraries';
  };
  for (const id of profile.samples) {
    const node = byId.get(id);
    if (!node) continue;
    const key = `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/dist\//, '')}`;
    self.set(key, (self.get(key) ?? 0) + 1);
    const a = area(node.callFrame.url, node.callFrame.functionName);
    areas.set(a, (areas.get(a) ?? 0) + 1);
  }
  const busy = profile.samples.length - (areas.get('idle') ?? 0);
  const pct = (n: number) => Math.round((1000 * n) / busy) / 10;
  areas.delete('idle');
  return {
    areas: [...areas.entries()].sort((a, b) => b[1] - a[1]).map(([name, n]) => ({ area: name, percentOfBusy: pct(n) })),
    top: [...self.entries()]
      .filter(([k]) => !k.startsWith('(idle)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, 12)
      .map(([fn, n]) => ({ function: fn, percentOfBusy: pct(n) })),
  };
}

progress(`AdmissionReview of ${body.length} bytes; servers on core 0, load on core 1`);
const bare = await measure('bare');
const flb = await measure('flb');
const profileDir = mkdtempSync(join(tmpdir(), 'flb-bench-prof-'));
await measure('flb', profileDir);
const profile = summariseProfile(profileDir);
rmSync(profileDir, { recursive: true, force: true });

const row = (name: string, r: { max: Load; fixed: Load }) => ({
  server: name,
  'max reviews/s': Math.round(r.max.rps),
  'p50 ms @1000/s': r.fixed.p50,
  'p99 ms @1000/s': r.fixed.p99,
  'p99.9 ms @1000/s': r.fixed.p999,
  errors: r.max.errors + r.max.non2xx + r.fixed.errors + r.fixed.non2xx + r.max.timeouts + r.fixed.timeouts,
});
const rows = [row('bare node:https', bare!), row('flb webhook', flb!)];
const ratio = flb!.max.rps / bare!.max.rps;
const file = report(
  'webhook',
  `Webhook, one core (${body.length}-byte AdmissionReview, TLS, keep-alive, 16 connections); throughput ratio flb/bare = ${ratio.toFixed(2)}`,
  rows,
  {
    ratio,
    goals: { p99AtFixedRateMs: 2, minRatio: 0.5 },
    met: { p99: flb!.fixed.p99 < 2, ratio: ratio >= 0.5 },
    profile,
  },
);
if (profile) {
  process.stdout.write('\nWhere the flb webhook spends its busy time (CPU profile under full load):\n');
  for (const a of profile.areas) process.stdout.write(`  ${String(a.percentOfBusy).padStart(5)}%  ${a.area}\n`);
  process.stdout.write('Top functions by self time:\n');
  for (const f of profile.top) process.stdout.write(`  ${String(f.percentOfBusy).padStart(5)}%  ${f.function}\n`);
}
progress(`results in ${file}`);
