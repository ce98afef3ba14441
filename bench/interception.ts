// Benchmark of traffic interception (issue #4), in a network namespace made for it:
//  1. time to apply one pod's rules: iptables-restore alone (the anchor: about 4 ms for Istio's) and
//     the whole `flb iptables apply`, Node start-up included, for both backends;
//  2. the added cost of the redirect path: new connections per second and 64-byte requests per
//     second through REDIRECT (app -> VIP -> 127.0.0.1:15001) against the same echo server dialled
//     directly on loopback, same run, as a ratio. Server on core 0, client on core 1.
// Needs root. Usage: npm run bench:interception [-- --seconds 5]
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';
import { InterceptionSchema } from '../common/contract/index.js';
import { buildRules, printDocument } from '../cni/rules.js';
import { createNetns, deleteNetns, link, requireRoot, type Netns } from '../test-e2e/harness/netns.js';
import { report } from './lib/report.js';

requireRoot('the interception benchmark');
const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] || 5) || 5;
const here = fileURLToPath(new URL('.', import.meta.url));
const flb = fileURLToPath(new URL('../../bin/flb.js', import.meta.url));
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const settings = InterceptionSchema.parse({ version: 1, mode: 'iptables', ipv6: 'disabled' });
const doc = printDocument(buildRules(settings, 4));

async function timeApply(backend: 'legacy' | 'nft', runs = 15) {
  const restore: number[] = [];
  const whole: number[] = [];
  for (let i = 0; i < runs; i++) {
    const ns = await createNetns('apply');
    try {
      // The nat table exists in a real pod before the init container runs.
      await ns.exec(`iptables-${backend}`, ['-t', 'nat', '-N', 'FLBT_PROBE']);
      await ns.exec(`iptables-${backend}`, ['-t', 'nat', '-X', 'FLBT_PROBE']);
      let t = performance.now();
      await execa('ip', ['netns', 'exec', ns.name, `iptables-${backend}-restore`, '--noflush'], { input: doc });
      restore.push(performance.now() - t);
      await ns.exec(`iptables-${backend}-restore`, ['--noflush'], {
        input: `*nat\n${buildRules(settings, 4)
          .chains.map((c) => `:${c} - [0:0]`)
          .join('\n')}\n-D PREROUTING -p tcp -j FLB_INBOUND\n-D OUTPUT -p tcp -j FLB_OUTPUT\n-D OUTPUT -p udp -m udp --dport 53 -j FLB_DNS\n${buildRules(
          settings,
          4,
        )
          .chains.map((c) => `-X ${c}`)
          .join('\n')}\nCOMMIT\n`,
      });
      t = performance.now();
      await execa('ip', ['netns', 'exec', ns.name, process.execPath, flb, 'iptables', 'apply', `--backend=${backend}`, '--ipv6=disabled'], {
        env: { FLB_LOG_LEVEL: 'warn' },
      });
      whole.push(performance.now() - t);
    } finally {
      await deleteNetns(ns);
    }
  }
  return { restoreMs: median(restore), wholeMs: median(whole) };
}

async function measurePaths(ns: Netns) {
  const server = execa(
    'ip',
    ['netns', 'exec', ns.name, 'setpriv', '--pdeathsig', 'KILL', '--', 'taskset', '-c', '0', process.execPath, `${here}lib/echo-server.js`, '0.0.0.0', '15001'],
    { reject: false },
  );
  await new Promise<void>((resolve) => server.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
  const client = async (mode: string, host: string, port: number) =>
    JSON.parse(
      (
        await ns.exec('taskset', [
          '-c',
          '1',
          'setpriv',
          '--reuid=1000',
          '--regid=1000',
          '--clear-groups',
          '--',
          process.execPath,
          `${here}lib/conn-client.js`,
          mode,
          host,
          String(port),
          String(seconds),
        ])
      ).stdout,
    ) as {
      rate: number;
      p50Us: number;
      p99Us: number;
    };
  try {
    const out: Record<string, { rate: number; p50Us: number; p99Us: number }> = {};
    for (const mode of ['connections', 'requests']) {
      progress(`${mode}: direct to 127.0.0.1:15001`);
      out[`${mode} direct`] = await client(mode, '127.0.0.1', 15001);
      progress(`${mode}: through REDIRECT (240.240.0.10:80 -> 15001)`);
      out[`${mode} redirected`] = await client(mode, '240.240.0.10', 80);
    }
    return out;
  } finally {
    server.kill('SIGKILL');
  }
}

const rows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = {};
for (const backend of ['legacy', 'nft'] as const) {
  progress(`${backend}: timing rule application`);
  const t = await timeApply(backend);
  rows.push({ measure: `apply one pod's rules (${backend})`, 'iptables-restore alone ms': t.restoreMs, 'flb iptables apply ms': t.wholeMs });
  extra[`apply-${backend}`] = t;
}
const pod = await createNetns('bench');
const peer = await createNetns('benchpeer');
try {
  await link(pod, ['10.214.0.1/24'], peer, ['10.214.0.2/24']);
  await pod.exec('ip', ['route', 'add', 'default', 'via', '10.214.0.2']);
  await execa('ip', ['netns', 'exec', pod.name, process.execPath, flb, 'iptables', 'apply', '--ipv6=disabled'], { env: { FLB_LOG_LEVEL: 'warn' } });
  const paths = await measurePaths(pod);
  extra.paths = paths;
  for (const mode of ['connections', 'requests']) {
    const direct = paths[`${mode} direct`]!;
    const redirected = paths[`${mode} redirected`]!;
    rows.push({
      measure: mode === 'connections' ? 'new connections/s (connect, 64 B ping, close)' : '64-byte requests/s on one connection',
      direct: Math.round(direct.rate),
      redirected: Math.round(redirected.rate),
      'ratio redirected/direct': redirected.rate / direct.rate,
      'added p50 us': redirected.p50Us - direct.p50Us,
      'added p99 us': redirected.p99Us - direct.p99Us,
    });
  }
} finally {
  await deleteNetns(pod);
  await deleteNetns(peer);
}
const file = report('interception', 'Traffic interception: rule application and the cost of the redirect path', rows, extra);
progress(`results in ${file}`);
