// Benchmark of the injector webhook (issue #3): AdmissionReviews per second and latency of the
// real injector's HTTPS server on one core, against a bare node:https server that parses the
// same review and returns a fixed patch (same TLS, keep-alive, answer size and framing); the load
// generator runs on the other core, the same client for both. The machine may be shared: the two
// servers run side by side and are measured in alternating rounds (the order swaps every round),
// so a neighbour's burst of work falls on both, and the load average is reported.
// Latency: open loop at a fixed rate, counted from each request's scheduled send time (no
// coordinated omission), the rounds pooled per server; the client's own lateness is reported too.
// Usage: npm run bench:webhook [-- --seconds 10] [-- --rounds 3] [-- --rate 1000]
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, issueCertificate } from '../common/pki.js';
import { admissionReview, realisticPod } from '../injector/testdata/reviews.js';
import { report } from './lib/report.js';
import { runPinned, startPinned, stop } from './lib/processes.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const numberFlag = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  const value = at >= 0 ? Number(process.argv[at + 1]) : Number.NaN;
  return value > 0 ? value : fallback;
};
/** Seconds of each measurement: full load, and the fixed rate (plus its uncounted first second), per server and round. */
const seconds = numberFlag('--seconds', 10);
const rounds = numberFlag('--rounds', 3);
const fixedRate = numberFlag('--rate', 1000);
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const GOALS = { minThroughputRatio: 0.5, maxP99Ratio: 1.25 };
/** A client this late at p99 was kept from its core: the round's latencies are the machine's as much as the server's. */
const CLIENT_LATE_MS = 0.5;
/** Under full load a server should keep its core this busy; less, and the throughput is the client's or the machine's. */
const SERVER_BUSY_MIN = 0.9;

interface Load {
  rps: number;
  p50: number;
  p99: number;
  p999: number;
  errors: number;
  non2xx: number;
  timeouts: number;
  /** Fixed rate only: how late the client itself sent (its p99 and worst), and every counted latency. */
  sendLagP99?: number;
  sendLagMax?: number;
  latencies?: number[];
}

type Kind = 'bare' | 'flb';

const ca = createCertificateAuthority('bench-ca');
const serving = issueCertificate(ca, { commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
const certArgs = [Buffer.from(serving.certPem).toString('base64'), Buffer.from(serving.keyPem).toString('base64')];
const body = JSON.stringify(admissionReview(realisticPod));

/** autocannon for throughput; our open-loop generator (microsecond latencies) at a fixed rate. */
async function load(port: number, connections: number, durationSeconds: number, rate?: number): Promise<Load> {
  const options = JSON.stringify({
    url: `https://127.0.0.1:${port}/mutate`,
    body,
    ca: ca.certPem,
    connections,
    durationSeconds,
    ...(rate ? { rate, raw: true } : {}),
  });
  const out = await runPinned(1, join(here, rate ? 'lib/rate-worker.js' : 'lib/load-worker.js'), [options]);
  return JSON.parse(out) as Load;
}

function startServer(kind: Kind, profileDir?: string) {
  return startPinned(0, join(here, 'webhook-servers.js'), [kind, ...certArgs], profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []);
}

const quantile = (sorted: readonly number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const load1 = () => Math.round(loadavg()[0]! * 100) / 100;
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
/** CPU seconds a process has used (user and system), from /proc. */
const cpuSeconds = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    .replace(/^.*\) /, '')
    .split(' ');
  // After the command: state is field 3, utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
};

/**
 * Both servers up at once, warmed, then measured in alternating rounds. The one not measured is
 * stopped (SIGSTOP), so that not even its timers (the injector's event-loop-delay metric) take
 * the core from the other.
 */
async function measureRounds() {
  const servers = { bare: await startServer('bare'), flb: await startServer('flb') };
  const port = (kind: Kind) => Number(servers[kind].firstLine);
  const only = (kind: Kind) => {
    servers[kind === 'bare' ? 'flb' : 'bare'].child.kill('SIGSTOP');
    servers[kind].child.kill('SIGCONT');
    return port(kind);
  };
  try {
    for (const kind of ['bare', 'flb'] as const) {
      progress(`${kind}: warm-up`);
      await load(only(kind), 16, 3);
    }
    const results: { round: number; kind: Kind; max: Load; serverBusy: number; fixed: Load; loadAverage: number }[] = [];
    for (let round = 1; round <= rounds; round++) {
      const order: Kind[] = round % 2 ? ['bare', 'flb'] : ['flb', 'bare'];
      const max = new Map<Kind, Load>();
      const serverBusy = new Map<Kind, number>();
      for (const kind of order) {
        progress(`round ${round}/${rounds}, ${kind}: full load, ${seconds} s, 16 connections`);
        const cpuBefore = cpuSeconds(servers[kind].child.pid!);
        const result = await load(only(kind), 16, seconds);
        // Over the load's own seconds, not the worker's start-up, when the server waits.
        serverBusy.set(kind, (cpuSeconds(servers[kind].child.pid!) - cpuBefore) / seconds);
        max.set(kind, result);
      }
      for (const kind of order) {
        progress(`round ${round}/${rounds}, ${kind}: fixed ${fixedRate} reviews/s, ${seconds} s`);
        const fixed = await load(only(kind), 16, seconds, fixedRate);
        results.push({ round, kind, max: max.get(kind)!, serverBusy: serverBusy.get(kind)!, fixed, loadAverage: load1() });
        progress(`  p99 ${fixed.p99.toFixed(3)} ms, client late by ${fixed.sendLagP99?.toFixed(3)} ms at p99; load average ${load1()}`);
      }
    }
    return results;
  } finally {
    for (const server of [servers.bare, servers.flb]) {
      server.child.kill('SIGCONT');
      await stop(server.child);
    }
  }
}

async function profileFlb(profileDir: string) {
  const { child, firstLine } = await startServer('flb', profileDir);
  try {
    progress('flb: warm-up, then profiling under full load');
    await load(Number(firstLine), 16, 3);
    await load(Number(firstLine), 16, Math.min(seconds, 5));
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

progress(
  `AdmissionReview of ${body.length} bytes; servers on core 0, load on core 1; ${rounds} rounds; load average ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
const loadBefore = loadavg();
const results = await measureRounds();
const loadAfter = loadavg();
const profileDir = mkdtempSync(join(tmpdir(), 'flb-bench-prof-'));
await profileFlb(profileDir);
const profile = summariseProfile(profileDir);
rmSync(profileDir, { recursive: true, force: true });

const ms = (v: number | undefined) => (v === undefined ? Number.NaN : Math.round(v * 1000) / 1000);
const errorsOf = (r: { max: Load; fixed: Load }) => r.max.errors + r.max.non2xx + r.max.timeouts + r.fixed.errors + r.fixed.non2xx + r.fixed.timeouts;
const of = (round: number, kind: Kind) => results.find((r) => r.round === round && r.kind === kind)!;
const perRound = Array.from({ length: rounds }, (_, i) => {
  const bare = of(i + 1, 'bare');
  const flb = of(i + 1, 'flb');
  return { round: i + 1, throughputRatio: flb.max.rps / bare.max.rps, p99Ratio: flb.fixed.p99 / bare.fixed.p99 };
});
/** Each server's latencies at the fixed rate, all rounds together: the run's p99. */
const pooled = (kind: Kind, inRounds: readonly number[] = perRound.map((r) => r.round)) => {
  const all = results.filter((r) => r.kind === kind && inRounds.includes(r.round)).flatMap((r) => r.fixed.latencies ?? []);
  all.sort((a, b) => a - b);
  return { p50: quantile(all, 0.5), p99: quantile(all, 0.99), p999: quantile(all, 0.999), count: all.length };
};
const bare = pooled('bare');
const flb = pooled('flb');
const throughputRatio = median(perRound.map((r) => r.throughputRatio));
const p99Ratio = flb.p99 / bare.p99;

const rows: Record<string, string | number>[] = results.map((r) => ({
  round: r.round,
  server: r.kind === 'bare' ? 'bare node:https' : 'flb webhook',
  'max reviews/s': Math.round(r.max.rps),
  'server busy': `${Math.round(100 * r.serverBusy)}%`,
  [`p50 ms @${fixedRate}/s`]: ms(r.fixed.p50),
  [`p99 ms @${fixedRate}/s`]: ms(r.fixed.p99),
  [`p99.9 ms @${fixedRate}/s`]: ms(r.fixed.p999),
  'client late p99 ms': ms(r.fixed.sendLagP99),
  'load avg': r.loadAverage,
  errors: errorsOf(r),
}));
for (const [name, p] of [
  ['bare node:https', bare],
  ['flb webhook', flb],
] as const)
  rows.push({
    round: 'all',
    server: name,
    'max reviews/s': Math.round(median(results.filter((r) => (r.kind === 'bare') === (p === bare)).map((r) => r.max.rps))),
    [`p50 ms @${fixedRate}/s`]: ms(p.p50),
    [`p99 ms @${fixedRate}/s`]: ms(p.p99),
    [`p99.9 ms @${fixedRate}/s`]: ms(p.p999),
  });
const verdict = (m: boolean | string) => (typeof m === 'string' ? m : m ? 'met' : 'MISSED');
const late = results.filter((r) => (r.fixed.sendLagP99 ?? 0) > CLIENT_LATE_MS);
// Under full load a server that did not keep its core busy was not the bottleneck: the client or the machine was.
const idle = results.filter((r) => r.serverBusy < SERVER_BUSY_MIN);
// Rounds in which the client kept its schedule for both servers: their p99s compare the servers.
const onTime = perRound.map((r) => r.round).filter((round) => !late.some((r) => r.round === round));
const p99RatioOnTime = onTime.length ? pooled('flb', onTime).p99 / pooled('bare', onTime).p99 : undefined;
const met = {
  throughput: idle.length ? 'not measured' : throughputRatio >= GOALS.minThroughputRatio,
  p99: p99RatioOnTime === undefined ? 'not measured' : p99RatioOnTime <= GOALS.maxP99Ratio,
};
const file = report(
  'webhook',
  `Webhook, one core (${body.length}-byte AdmissionReview, TLS, keep-alive, 16 connections), ${rounds} alternating rounds of ${seconds} s; ` +
    `flb/bare: throughput ${throughputRatio.toFixed(2)} (median of rounds; goal >= ${GOALS.minThroughputRatio}), ` +
    `p99 at ${fixedRate}/s ${p99Ratio.toFixed(2)} (rounds pooled; goal <= ${GOALS.maxP99Ratio})`,
  rows,
  {
    throughputRatio,
    p99Ratio,
    p99RatioOnTime: p99RatioOnTime === undefined ? null : { ratio: p99RatioOnTime, rounds: onTime },
    perRound,
    goals: GOALS,
    met,
    serverNotBusyRounds: idle.map((r) => ({ round: r.round, server: r.kind, serverBusy: r.serverBusy })),
    clientLateRounds: late.map((r) => ({ round: r.round, server: r.kind, sendLagP99: r.fixed.sendLagP99 })),
    loadAverage: { before: loadBefore, after: loadAfter },
    profile,
  },
);
if (idle.length)
  process.stdout.write(
    `note: under full load ${idle.map((r) => `round ${r.round} (${r.kind}) kept the server ${Math.round(100 * r.serverBusy)}% busy`).join(', ')}: ` +
      `the client or the machine, not the server, set those reviews per second\n`,
  );
if (late.length)
  process.stdout.write(
    `note: the client itself sent more than ${CLIENT_LATE_MS} ms late at p99 in ${late.map((r) => `round ${r.round} (${r.kind})`).join(', ')}: ` +
      `the machine was busy, and those latencies measure its other work as much as the server\n`,
  );
process.stdout.write(
  `per round (flb/bare): ${perRound.map((r) => `#${r.round} throughput ${r.throughputRatio.toFixed(2)}, p99 ${r.p99Ratio.toFixed(2)}`).join('; ')}\n` +
    (p99RatioOnTime === undefined ? '' : `p99 ratio over the rounds with the client on time (${onTime.join(', ')}): ${p99RatioOnTime.toFixed(2)}\n`) +
    `goals: throughput >= ${GOALS.minThroughputRatio} ${verdict(met.throughput)}, p99 <= ${GOALS.maxP99Ratio}x ${verdict(met.p99)} (rounds with the client on time); ` +
    `load average (1, 5, 15 min) before ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, after ${loadAfter.map((l) => l.toFixed(2)).join(' ')}\n`,
);
if (profile) {
  process.stdout.write('\nWhere the flb webhook spends its busy time (CPU profile under full load):\n');
  for (const a of profile.areas) process.stdout.write(`  ${String(a.percentOfBusy).padStart(5)}%  ${a.area}\n`);
  process.stdout.write('Top functions by self time:\n');
  for (const f of profile.top) process.stdout.write(`  ${String(f.percentOfBusy).padStart(5)}%  ${f.function}\n`);
}
progress(`results in ${file}`);
