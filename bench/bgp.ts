// Benchmark of the BGP announcer (sidecar/bgp) against its peers, each measured in the same run, in
// network namespaces with BIRD 2 as the router (run as root; bird2, gobgpd and exabgp from Debian):
//
// - withdraw: from the local process dying (SIGKILL) to its VIP leaving BIRD's RIB, over --trials
//   trials (50), p50 and p99: `flb bgp --config` (a TCP check every 200 ms, fall 3) against ExaBGP's
//   healthcheck with the same interval and thresholds (`--interval 0.2 --fast-interval 0.2 --fall 3
//   --withdraw-on-down`, its check a bash script connecting with /dev/tcp). Both gate their own VIP on
//   the same app, so one kill is one trial for both; BIRD's control socket is read every 5 ms.
//   Each trial kills the app 300-500 ms (random) after both VIPs are back, so the kill falls anywhere
//   in the check interval. Goal: p99 under 1 s, and no slower than ExaBGP.
// - scale: --prefixes prefixes (100,000) over --sessions sessions (10, a slice of prefixes each,
//   from its own source address) into BIRD, median of --runs runs (5): flb's speaker (one process,
//   one speaker per session), BIRD announcing the same to BIRD (static routes, a table per session)
//   and gobgpd (one per session, its slice injected from an MRT dump) to BIRD. The senders listen
//   (passive) with their routes loaded; a run is from `enable` of the receiving protocols to
//   BIRD's table holding every prefix. A run over --stall-seconds (120) is a stall, reported apart
//   and kept out of the median. Goal: at most 2 times BIRD's median.
// - cost: `flb sidecar` (a local config dir) without a bgp section, with one (1 peer Established to
//   BIRD, one VIP gated by a TCP check: the speaker idle) and with 10 peers; alternating rounds
//   (--rounds, 3): VmRSS --settle-seconds (20) after its sessions are up, and the CPU of the last 10 s. Goal: an
//   idle speaker adds at most 12 MiB.
//
// Usage: npm run bench:bgp [-- --part withdraw,scale,cost] [--small] [--trials 50] [--prefixes 100000]
//        [--sessions 10] [--runs 5] [--rounds 3] [--settle-seconds 20] [--stall-seconds 120]
// --small: 5 trials, 10,000 prefixes, 1 run, 1 round, 12 s settle: checks that every part works.
// Prints a table per part and writes bench/results/bgp-<part>.json.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, requireTools, type Netns } from '../test-e2e/harness/netns.js';
import { report } from './lib/report.js';

const small = process.argv.includes('--small');
const arg = (name: string, fallback: number, smallValue = fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) || fallback : small ? smallValue : fallback;
};
const partIndex = process.argv.indexOf('--part');
const parts = (partIndex >= 0 ? process.argv[partIndex + 1]! : 'withdraw,scale,cost').split(',');
const trials = arg('trials', 50, 5);
const prefixCount = arg('prefixes', 100_000, 10_000);
const sessionCount = arg('sessions', 10);
const runs = arg('runs', 5, 1);
const rounds = arg('rounds', 3, 1);
const settleSeconds = arg('settle-seconds', 20, 12);
const stallSeconds = arg('stall-seconds', 120);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FLB = join(ROOT, 'bin', 'flb.js');
const SPEAKERS = fileURLToPath(new URL('./lib/bgp-speakers.js', import.meta.url));
const progress = (message: string) => process.stderr.write(`bench:bgp: ${message}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.max(0, Math.ceil(p * xs.length) - 1)] ?? Number.NaN;
const median = (xs: number[]) => quantile(xs, 0.5);
const round1 = (x: number) => Math.round(x * 10) / 10;

const children: ChildProcess[] = [];
/** A process in a namespace that dies with this one (pdeathsig). */
function run(ns: Netns, command: string, args: string[], log?: string): ChildProcess {
  const logFd = log ? openSync(log, 'a') : undefined;
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'ip', 'netns', 'exec', ns.name, command, ...args], {
    stdio: ['ignore', 'pipe', logFd ?? 'ignore'],
  });
  if (logFd !== undefined) closeSync(logFd);
  child.stdout!.resume();
  children.push(child);
  return child;
}
async function stop(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}
function untilLine(child: ChildProcess, line: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`no "${line}" within ${timeoutMs} ms`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.split('\n').includes(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`exited (${code}) before "${line}"`)));
  });
}
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** BIRD's control socket, spoken directly (birdc is a process per question: too slow to time a withdraw). */
class BirdControl {
  private buffer = '';
  private waiting: ((reply: string) => void) | undefined;
  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffer += d.toString();
      // A reply ends with a line of a 4-digit code and a space (continuations have '-' or a leading space).
      const end = /^\d{4} .*\n/m.exec(this.buffer);
      if (!end || !this.waiting) return;
      const reply = this.buffer.slice(0, end.index + end[0].length);
      this.buffer = this.buffer.slice(reply.length);
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting(reply);
    });
  }
  static async open(path: string): Promise<BirdControl> {
    const socket = connect(path);
    const control = new BirdControl(socket);
    await new Promise<string>((resolve, reject) => {
      control.waiting = resolve;
      socket.once('error', reject);
    });
    return control;
  }
  command(line: string): Promise<string> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(`${line}\n`);
    });
  }
  async routes(protocol: string): Promise<string[]> {
    return [...(await this.command(`show route protocol ${protocol}`)).matchAll(/^(?:\d{4}-| )(\d+\.\d+\.\d+\.\d+\/\d+)/gm)].map((m) => m[1]!);
  }
  async count(): Promise<number> {
    const reply = await this.command('show route count table master4');
    return Number(/(\d+) of \d+ routes/.exec(reply)?.[1] ?? Number.NaN);
  }
  close(): void {
    this.socket.destroy();
  }
}

function startBird(ns: Netns, dir: string, config: string): { child: ChildProcess; control: () => Promise<BirdControl> } {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'bird.conf'), config);
  const socket = join(dir, 'bird.ctl');
  const child = run(ns, 'bird', ['-f', '-c', join(dir, 'bird.conf'), '-s', socket, '-P', join(dir, 'bird.pid')], join(dir, 'bird.err'));
  return {
    child,
    control: () => until('BIRD control socket', () => BirdControl.open(socket).catch(() => undefined), 20_000, 100),
  };
}

const cpuTicks = (pid: number) =>
  readFileSync(`/proc/${pid}/stat`, 'utf8')
    .split(') ')[1]!
    .split(' ')
    .slice(11, 13)
    .map(Number)
    .reduce((a, b) => a + b, 0);
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

// ---------------------------------------------------------------- withdraw
async function withdrawPart(work: string): Promise<void> {
  const ROUTER = '10.221.0.1';
  const FLB_HOST = '10.221.0.2';
  const EXA_HOST = '10.221.0.3';
  const FLB_VIP = '198.51.100.10/32';
  const EXA_VIP = '198.51.100.20/32';
  const APP_PORT = 8090;
  const router = await createNetns('bgpb-router');
  const host = await createNetns('bgpb-host');
  try {
    await link(router, [`${ROUTER}/24`], host, [`${FLB_HOST}/24`, `${EXA_HOST}/24`]);
    const timers = 'hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 2;';
    const bird = startBird(
      router,
      join(work, 'withdraw'),
      `router id ${ROUTER};
protocol device { scan time 10; }
protocol bgp flb { local ${ROUTER} as 65000; neighbor ${FLB_HOST} as 65001; passive on; ${timers} ipv4 { import all; export none; }; }
protocol bgp exabgp { local ${ROUTER} as 65000; neighbor ${EXA_HOST} as 65002; passive on; ${timers} ipv4 { import all; export none; }; }
`,
    );
    const control = await bird.control();
    const flbConfig = join(work, 'withdraw', 'flb-bgp.json');
    writeFileSync(
      flbConfig,
      JSON.stringify({
        localAs: 65001,
        routerId: FLB_HOST,
        holdTimeSeconds: 9,
        connectRetrySeconds: 1,
        drainSeconds: 0,
        peers: [{ address: ROUTER, remoteAs: 65000, localAddress: FLB_HOST }],
        vips: [
          {
            prefix: FLB_VIP,
            healthCheck: {
              protocol: 'tcp',
              address: '127.0.0.1',
              port: APP_PORT,
              intervalMs: 200,
              timeoutMs: 1000,
              healthyThreshold: 2,
              unhealthyThreshold: 3,
            },
          },
        ],
      }),
    );
    // ExaBGP's configuration parser takes no quotes within `run`: the check is a script.
    const exaCheck = join(work, 'withdraw', 'check-app.sh');
    writeFileSync(exaCheck, `#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/${APP_PORT}\n`, { mode: 0o755 });
    const exaConfig = join(work, 'withdraw', 'exabgp.conf');
    writeFileSync(
      exaConfig,
      `process healthcheck {
  run /usr/bin/python3 -m exabgp healthcheck --no-syslog --interval 0.2 --fast-interval 0.2 --rise 2 --fall 3 --timeout 1 --cmd ${exaCheck} --ip ${EXA_VIP} --next-hop ${EXA_HOST} --withdraw-on-down --no-ip-setup;
  encoder text;
}
neighbor ${ROUTER} {
  router-id ${EXA_HOST};
  local-address ${EXA_HOST};
  local-as 65002;
  peer-as 65000;
  hold-time 9;
  api { processes [ healthcheck ]; }
}
`,
    );
    const flb = run(host, process.execPath, [FLB, 'bgp', '--config', flbConfig, '--admin', '127.0.0.1:15179'], join(work, 'withdraw', 'flb-bgp.err'));
    const exabgp = run(
      host,
      'env',
      ['exabgp.daemon.user=root', 'exabgp.daemon.drop=false', 'exabgp.cli.enable=false', 'exabgp.log.destination=stderr', 'exabgp', exaConfig],
      join(work, 'withdraw', 'exabgp.err'),
    );
    let app: ChildProcess | undefined;
    const startApp = () =>
      (app = run(host, process.execPath, ['-e', `require('net').createServer((s) => s.on('error', () => {}).end()).listen(${APP_PORT}, '127.0.0.1')`]));
    const both = async () => (await control.routes('flb')).length === 1 && (await control.routes('exabgp')).length === 1;
    startApp();
    await until('both VIPs in BIRD', async () => ((await both()) ? true : undefined), 60_000, 100).catch(async (error: unknown) => {
      throw new Error(`${String(error)}: BIRD has ${JSON.stringify({ flb: await control.routes('flb'), exabgp: await control.routes('exabgp') })}`);
    });
    progress(`withdraw: both VIPs in BIRD; ${trials} trials`);
    const times: { flb: number[]; exabgp: number[]; stalls: { flb: number; exabgp: number } } = { flb: [], exabgp: [], stalls: { flb: 0, exabgp: 0 } };
    for (let trial = 0; trial < trials; trial++) {
      await until('both VIPs back in BIRD', async () => ((await both()) ? true : undefined), 30_000, 20);
      await sleep(300 + Math.random() * 200);
      const killed = performance.now();
      app!.kill('SIGKILL');
      const gone: { flb?: number; exabgp?: number } = {};
      while ((gone.flb === undefined || gone.exabgp === undefined) && performance.now() - killed < 10_000) {
        for (const name of ['flb', 'exabgp'] as const)
          if (gone[name] === undefined && (await control.routes(name)).length === 0) gone[name] = performance.now() - killed;
        await sleep(5);
      }
      for (const name of ['flb', 'exabgp'] as const) {
        if (gone[name] === undefined) times.stalls[name]++;
        else times[name].push(gone[name]);
      }
      progress(`withdraw trial ${trial + 1}: flb ${gone.flb?.toFixed(0) ?? 'stalled'} ms, exabgp ${gone.exabgp?.toFixed(0) ?? 'stalled'} ms`);
      startApp();
    }
    await stop(app, 'SIGKILL');
    await stop(flb);
    await stop(exabgp);
    control.close();
    await stop(bird.child);
    const row = (name: 'flb' | 'exabgp', label: string) => ({
      announcer: label,
      trials: times[name].length,
      'p50 ms': round1(quantile(times[name], 0.5)),
      'p99 ms': round1(quantile(times[name], 0.99)),
      'max ms': round1(Math.max(...times[name])),
      stalls: times.stalls[name],
    });
    const ratio = (p: number) => round1((quantile(times.flb, p) / quantile(times.exabgp, p)) * 100) / 100;
    report(
      'bgp-withdraw',
      `Withdraw: app SIGKILLed -> VIP gone from BIRD's RIB (200 ms checks, fall 3; ${trials} trials; load ${loadavg()[0]!.toFixed(1)})`,
      [row('flb', 'flb bgp'), row('exabgp', 'ExaBGP healthcheck'), { announcer: 'flb / ExaBGP', 'p50 ms': ratio(0.5), 'p99 ms': ratio(0.99) }],
      {
        goal: 'p99 under 1000 ms, and no slower than ExaBGP',
        met: quantile(times.flb, 0.99) < 1000 && quantile(times.flb, 0.99) <= quantile(times.exabgp, 0.99),
        samples: times,
      },
    );
  } finally {
    await deleteNetns(router);
    await deleteNetns(host);
  }
}

// ---------------------------------------------------------------- scale
/** An MRT TABLE_DUMP_V2 file (RFC 6396) of the prefixes, for `gobgp mrt inject global`. */
function mrtDump(prefixes: string[], nextHop: string, peer: string): Buffer {
  const record = (subtype: number, body: Buffer) => {
    const header = Buffer.alloc(12);
    header.writeUInt32BE(Math.floor(Date.now() / 1000), 0);
    header.writeUInt16BE(13, 4); // TABLE_DUMP_V2
    header.writeUInt16BE(subtype, 6);
    header.writeUInt32BE(body.length, 8);
    return Buffer.concat([header, body]);
  };
  const ipv4 = (address: string) => Buffer.from(address.split('.').map(Number));
  // PEER_INDEX_TABLE: collector id, no view name, one peer (IPv4, 4-octet AS)
  const peerIndex = Buffer.concat([ipv4(peer), Buffer.from([0, 0, 0, 1, 0b10]), ipv4(peer), ipv4(peer), Buffer.from([0, 0, 0xfd, 0xe8])]);
  // ORIGIN IGP, empty AS_PATH, NEXT_HOP
  const attributes = Buffer.concat([Buffer.from([0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4]), ipv4(nextHop)]);
  const ribs = prefixes.map((prefix, sequence) => {
    const [address, length] = prefix.split('/');
    const bytes = ipv4(address!).subarray(0, Math.ceil(Number(length) / 8));
    const head = Buffer.alloc(4);
    head.writeUInt32BE(sequence, 0);
    const entry = Buffer.alloc(8);
    entry.writeUInt16BE(0, 0); // peer index
    entry.writeUInt32BE(Math.floor(Date.now() / 1000), 2);
    entry.writeUInt16BE(attributes.length, 6);
    return record(2, Buffer.concat([head, Buffer.from([Number(length)]), bytes, Buffer.from([0, 1]), entry, attributes])); // RIB_IPV4_UNICAST
  });
  return Buffer.concat([record(1, peerIndex), ...ribs]);
}

async function scalePart(work: string): Promise<void> {
  const dir = join(work, 'scale');
  mkdirSync(dir, { recursive: true });
  const perSession = Math.ceil(prefixCount / sessionCount);
  // Each session has 10.<100+session>.x.y/32 and the address pair .10+session / .100+session: 65,536 prefixes and 90 sessions at most.
  if (perSession > 65_536 || sessionCount > 90)
    throw new Error(`--prefixes ${prefixCount} over --sessions ${sessionCount}: at most 65,536 prefixes a session and 90 sessions`);
  const slices = Array.from({ length: sessionCount }, (_, i) =>
    Array.from({ length: Math.min(perSession, prefixCount - i * perSession) }, (_, k) => `10.${100 + i}.${k >> 8}.${k & 255}/32`),
  );
  const total = slices.reduce((n, s) => n + s.length, 0);
  const senders = ['flb', 'bird', 'gobgpd'] as const;
  const senderAs = { flb: 65101, bird: 65102, gobgpd: 65103 };
  const subnet = (s: number) => `10.222.${s}`;
  // An address per session on both sides: BIRD tells its protocols apart by the neighbor's address.
  const routerAddress = (s: number, i: number) => `${subnet(s)}.${100 + i}`;
  const sessionAddress = (s: number, i: number) => `${subnet(s)}.${10 + i}`;
  const router = await createNetns('bgpb-rcv');
  const namespaces: Netns[] = [];
  const started: ChildProcess[] = [];
  try {
    for (const [s, name] of senders.entries()) {
      const ns = await createNetns(`bgpb-${name}`);
      namespaces.push(ns);
      await link(
        router,
        slices.map((_, i) => `${routerAddress(s, i)}/24`),
        ns,
        slices.map((_, i) => `${sessionAddress(s, i)}/24`),
      );
    }
    // The receiver: a protocol per sender and session, disabled until a run enables one sender's.
    const receiver = startBird(
      router,
      join(dir, 'receiver'),
      `router id 10.222.0.1;
protocol device { scan time 10; }
${senders
  .flatMap((name, s) =>
    slices.map(
      (_, i) =>
        `protocol bgp ${name}_${i} { disabled; local ${routerAddress(s, i)} as 65000; neighbor ${sessionAddress(s, i)} as ${senderAs[name]}; connect delay time 0; hold time 90; ipv4 { import all; export none; }; }`,
    ),
  )
  .join('\n')}
`,
    );
    const control = await receiver.control();

    // flb: one process, a speaker per session
    const flbNs = namespaces[0]!;
    const flbOptions = join(dir, 'flb-speakers.json');
    writeFileSync(
      flbOptions,
      JSON.stringify({
        localAs: senderAs.flb,
        routerAs: 65000,
        sessions: slices.map((prefixes, i) => ({ address: sessionAddress(0, i), router: routerAddress(0, i), prefixes })),
      }),
    );
    const flb = run(flbNs, process.execPath, [SPEAKERS, flbOptions], join(dir, 'flb.err'));
    started.push(flb);
    await untilLine(flb, 'ready', 60_000);

    // BIRD: a table per session, filled by static routes, exported on that session
    const birdSender = startBird(
      namespaces[1]!,
      join(dir, 'bird-sender'),
      `router id ${sessionAddress(1, 0)};
protocol device { scan time 10; }
${slices
  .map(
    (prefixes, i) => `ipv4 table t${i};
protocol static st${i} { ipv4 { table t${i}; }; ${prefixes.map((p) => `route ${p} blackhole;`).join(' ')} }
protocol bgp out${i} { local ${sessionAddress(1, i)} as ${senderAs.bird}; neighbor ${routerAddress(1, i)} as 65000; passive on; hold time 90; ipv4 { table t${i}; import none; export all; }; }`,
  )
  .join('\n')}
`,
    );
    started.push(birdSender.child);
    const birdSenderControl = await birdSender.control();
    await until(
      "the BIRD sender's routes",
      async () => {
        const reply = await birdSenderControl.command('show route count table all');
        return Number(/Total: (\d+) of/.exec(reply)?.[1]) === total ? true : undefined;
      },
      120_000,
      200,
    );
    birdSenderControl.close();

    // gobgpd: one per session, its slice injected into its global RIB
    const gobgpNs = namespaces[2]!;
    for (const [i, prefixes] of slices.entries()) {
      const conf = join(dir, `gobgpd-${i}.toml`);
      writeFileSync(
        conf,
        `[global.config]
  as = ${senderAs.gobgpd}
  router-id = "${sessionAddress(2, i)}"
  port = 179
  local-address-list = ["${sessionAddress(2, i)}"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "${routerAddress(2, i)}"
    peer-as = 65000
  [neighbors.timers.config]
    hold-time = 90
  [neighbors.transport.config]
    passive-mode = true
    local-address = "${sessionAddress(2, i)}"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
`,
      );
      const api = String(50_100 + i);
      const gobgpd = run(gobgpNs, 'gobgpd', ['-f', conf, '--api-hosts', `127.0.0.1:${api}`, '-l', 'warn'], join(dir, `gobgpd-${i}.err`));
      started.push(gobgpd);
      await until(
        'gobgpd to answer',
        async () => ((await gobgpNs.exec('gobgp', ['-p', api, 'global'], { reject: false })).exitCode === 0 ? true : undefined),
        30_000,
        200,
      );
      const held = async () =>
        Number(
          /Destination: (\d+)/.exec((await gobgpNs.exec('gobgp', ['-p', api, 'global', 'rib', 'summary', '-a', 'ipv4'], { reject: false })).stdout)?.[1],
        ) || 0;
      // `gobgp mrt inject` (3.10) loses the last few hundred routes of a dump (the CLI ends before
      // its last batch is sent): the dump goes in forwards, then backwards, until all are held.
      for (let attempt = 0; (await held()) < prefixes.length; attempt++) {
        if (attempt === 6) throw new Error(`gobgpd ${i} holds ${await held()} of ${prefixes.length} routes after 6 injections`);
        const dump = join(dir, `gobgpd-${i}-${attempt}.mrt`);
        writeFileSync(dump, mrtDump(attempt % 2 ? [...prefixes].reverse() : prefixes, sessionAddress(2, i), sessionAddress(2, i)));
        await gobgpNs.exec('gobgp', ['-p', api, 'mrt', 'inject', 'global', dump]);
        await sleep(1000);
      }
    }
    progress(`scale: the three senders hold ${total} prefixes over ${sessionCount} sessions each; ${runs} runs`);

    type Result = { ms: number[]; establishedMs: number[]; stalls: number };
    const results: Record<(typeof senders)[number], Result> = {
      flb: { ms: [], establishedMs: [], stalls: 0 },
      bird: { ms: [], establishedMs: [], stalls: 0 },
      gobgpd: { ms: [], establishedMs: [], stalls: 0 },
    };
    for (let r = 0; r < runs; r++) {
      // The order rotates each run, so no sender always comes first after a quiet spell.
      for (const k of senders.keys()) {
        const name = senders[(k + r) % senders.length]!;
        const began = performance.now();
        await control.command(`enable "${name}_*"`);
        let ms: number | undefined;
        // When every session is Established: the rest is the routes' transfer and BIRD's import.
        let establishedMs: number | undefined;
        while (performance.now() - began < stallSeconds * 1000) {
          if (establishedMs === undefined) {
            const up = ((await control.command(`show protocols "${name}_*"`)).match(/Established/g) ?? []).length;
            if (up === sessionCount) establishedMs = performance.now() - began;
          }
          if ((await control.count()) >= total) {
            ms = performance.now() - began;
            break;
          }
          await sleep(10);
        }
        if (ms === undefined) results[name].stalls++;
        else {
          results[name].ms.push(ms);
          results[name].establishedMs.push(establishedMs ?? ms);
        }
        const outcome =
          ms === undefined ? `stalled (${await control.count()} of ${total})` : `${ms.toFixed(0)} ms (sessions up at ${establishedMs?.toFixed(0)} ms)`;
        progress(`scale run ${r + 1}, ${name}: ${outcome}`);
        await control.command(`disable "${name}_*"`);
        await until('the receiver emptied', async () => ((await control.count()) === 0 ? true : undefined), 60_000, 100);
      }
    }
    control.close();
    const birdMedian = median(results.bird.ms);
    const rows = senders.map((name) => ({
      sender: name === 'flb' ? 'flb speaker' : name === 'bird' ? 'BIRD' : 'gobgpd',
      runs: results[name].ms.length,
      'median ms': round1(median(results[name].ms)),
      'min ms': round1(Math.min(...results[name].ms)),
      'max ms': round1(Math.max(...results[name].ms)),
      'sessions up ms': round1(median(results[name].establishedMs)),
      'routes after up ms': round1(median(results[name].ms.map((ms, i) => ms - results[name].establishedMs[i]!))),
      'prefixes/s': Math.round(total / (median(results[name].ms) / 1000)),
      'x BIRD': round1((median(results[name].ms) / birdMedian) * 100) / 100,
      stalls: results[name].stalls,
    }));
    report(
      'bgp-scale',
      `Scale: ${total} prefixes over ${sessionCount} sessions into BIRD, from enable to all in its table (median of ${runs}; load ${loadavg()[0]!.toFixed(1)})`,
      rows,
      {
        goal: "flb's median at most 2 times BIRD's",
        met: median(results.flb.ms) <= 2 * birdMedian,
        samples: results,
      },
    );
  } finally {
    for (const child of started.reverse()) await stop(child);
    await deleteNetns(router);
    for (const ns of namespaces) await deleteNetns(ns);
  }
}

// ---------------------------------------------------------------- cost
async function costPart(work: string): Promise<void> {
  const dir = join(work, 'cost');
  const PEERS = 10;
  const routerAddress = (i: number) => `10.223.0.${1 + i}`;
  const hostAddress = (i: number) => `10.223.0.${100 + i}`;
  const APP_PORT = 8090;
  const router = await createNetns('bgpb-crouter');
  const host = await createNetns('bgpb-chost');
  try {
    await link(
      router,
      Array.from({ length: PEERS }, (_, i) => `${routerAddress(i)}/24`),
      host,
      Array.from({ length: PEERS }, (_, i) => `${hostAddress(i)}/24`),
    );
    const bird = startBird(
      router,
      join(dir, 'router'),
      `router id ${routerAddress(0)};
protocol device { scan time 10; }
${Array.from(
  { length: PEERS },
  (_, i) =>
    `protocol bgp p${i} { local ${routerAddress(i)} as 65000; neighbor ${hostAddress(i)} as 65001; passive on; hold time 90; ipv4 { import all; export none; }; }`,
).join('\n')}
`,
    );
    const control = await bird.control();
    const app = run(host, process.execPath, ['-e', `require('net').createServer((s) => s.on('error', () => {}).end()).listen(${APP_PORT}, '127.0.0.1')`]);
    const bgpSection = (peers: number) => ({
      localAs: 65001,
      routerId: hostAddress(0),
      holdTimeSeconds: 90,
      connectRetrySeconds: 1,
      drainSeconds: 0,
      peers: Array.from({ length: peers }, (_, i) => ({
        address: routerAddress(i),
        remoteAs: 65000,
        localAddress: hostAddress(i),
        addressFamilies: ['ipv4-unicast'],
      })),
      vips: [{ prefix: '198.51.100.30/32', healthCheck: { protocol: 'tcp', address: '127.0.0.1', port: APP_PORT, intervalMs: 2000, healthyThreshold: 1 } }],
    });
    const { meshDoc, sidecarDoc } = await import('../sidecar/config/testing/fixtures.js');
    const configs = { none: undefined, '1 peer': bgpSection(1), '10 peers': bgpSection(PEERS) } as const;
    const samples: Record<keyof typeof configs, { rss: number[]; cpu: number[] }> = {
      none: { rss: [], cpu: [] },
      '1 peer': { rss: [], cpu: [] },
      '10 peers': { rss: [], cpu: [] },
    };
    for (let r = 0; r < rounds; r++) {
      const order = (Object.keys(configs) as (keyof typeof configs)[]).slice();
      if (r % 2 === 1) order.reverse();
      for (const name of order) {
        const configDir = join(dir, `sidecar-${r}-${name.replace(' ', '-')}`);
        mkdirSync(join(configDir, 'services'), { recursive: true });
        writeFileSync(join(configDir, 'mesh.json'), JSON.stringify(meshDoc()));
        const section = configs[name];
        writeFileSync(join(configDir, 'sidecar.json'), JSON.stringify(sidecarDoc('pod.shop.w', section ? { bgp: section } : {})));
        const sidecar = run(host, process.execPath, [FLB, 'sidecar', '--id', 'pod.shop.w', '--config-dir', configDir]);
        const established = () => control.command('show protocols').then((reply) => (reply.match(/^ ?\S*p\d+\s+BGP\s+.*Established/gm) ?? []).length);
        const wanted = section ? section.peers.length : 0;
        await until(`${wanted} sessions Established`, async () => ((await established()) === wanted ? true : undefined), 30_000, 200);
        const pid = await until(
          'the sidecar process',
          async () => {
            const out = (await host.exec('sh', ['-c', `ss -ltnp 'sport = :15000' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2`], { reject: false })).stdout;
            return Number(out) || undefined;
          },
          30_000,
          200,
        );
        const startedAt = Date.now();
        await sleep(Math.max(0, settleSeconds * 1000 - 10_000));
        const ticksBefore = cpuTicks(pid);
        await sleep(Math.min(10_000, settleSeconds * 1000));
        const cpu = ((cpuTicks(pid) - ticksBefore) / 100 / 10) * 100;
        const rss = rssMiB(pid);
        samples[name].rss.push(rss);
        samples[name].cpu.push(cpu);
        progress(
          `cost round ${r + 1}, ${name}: RSS ${rss.toFixed(1)} MiB, CPU ${cpu.toFixed(2)} % of a core (${((Date.now() - startedAt) / 1000).toFixed(0)} s after the sessions)`,
        );
        await stop(sidecar);
        await until('the sessions down', async () => ((await established()) === 0 ? true : undefined), 30_000, 200);
      }
    }
    await stop(app);
    control.close();
    await stop(bird.child);
    const base = median(samples.none.rss);
    const rows = (Object.keys(samples) as (keyof typeof samples)[]).map((name) => ({
      'flb sidecar': name === 'none' ? 'no bgp section' : `bgp, ${name}, 1 VIP`,
      rounds: samples[name].rss.length,
      'RSS MiB (median)': round1(median(samples[name].rss)),
      'added MiB': round1(median(samples[name].rss) - base),
      'CPU % of a core': Math.round(median(samples[name].cpu) * 100) / 100,
    }));
    report(
      'bgp-cost',
      `Cost: flb sidecar's RSS ${settleSeconds} s after its sessions are up, CPU over the last 10 s (${rounds} alternating rounds; load ${loadavg()[0]!.toFixed(1)})`,
      rows,
      {
        goal: 'an idle speaker adds at most 12 MiB',
        met: median(samples['1 peer'].rss) - base <= 12,
        samples,
      },
    );
  } finally {
    await deleteNetns(router);
    await deleteNetns(host);
  }
}

requireRoot('bench:bgp');
await requireTools(['bird', 'gobgpd', 'gobgp', 'exabgp', 'setpriv', 'ip']);
await removeStaleNamespaces();
const work = mkdtempSync(join(tmpdir(), 'flb-bench-bgp-'));
try {
  if (parts.includes('withdraw')) await withdrawPart(work);
  if (parts.includes('scale')) await scalePart(work);
  if (parts.includes('cost')) await costPart(work);
} finally {
  for (const child of children) child.kill('SIGKILL');
  if (!process.argv.includes('--keep')) rmSync(work, { recursive: true, force: true });
  else progress(`kept ${work}`);
}
