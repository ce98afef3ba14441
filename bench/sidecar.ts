// Benchmark of the sidecar's L4 data path against HAProxy and a direct connection, same machine,
// same run: bulk throughput, 64-byte request/response rate over 50 connections, new connections
// per second, latency at a fixed 1,000 requests/s, the proxy's CPU time per request and per new
// connection (/proc/PID/stat), RSS idle and with 1,000 open connections; then a CPU profile of
// the sidecar under request/response and new-connection load.
//
// Two namespaces joined by a veth pair: "app" (10.215.1.1, the interception rules of
// `flb iptables apply`, the proxies, the load generator) and "ep" (one C echo/source server
// answering on 10.215.1.2-.4, the service's three endpoints, and on .5, the direct target, which
// the rules leave alone). The load generator is C too (bench/lib/tcp-load.c, built here with gcc):
// the proxy under test has core 0 to itself, load generator and endpoint server share core 1, and
// a Node client or server there would saturate before HAProxy does.
//   direct:  app -> veth -> endpoint 10.215.1.5
//   haproxy: app -> 127.0.0.1:19090 (mode tcp, nbthread 1, roundrobin) -> veth -> endpoints
//   flb:     app -> VIP 240.240.0.10:9090 -> REDIRECT -> 15001 (SO_ORIGINAL_DST, `tcp` port,
//            round-robin) -> veth -> endpoints; `flb sidecar` as deployed, UID 1500
// A new connection is connect, 64-byte ping, answer, the server's close, close (as HTTP with
// `Connection: close`). Each number is the median of the rounds; a run during which other work
// took the proxy's core is repeated. perf, when installed, splits the proxy core's time into
// kernel and user space for both proxies.
// Goals (issue): request rate >= 0.8 of HAProxy's, CPU per request <= 1.25 x HAProxy's, new
// connections/s >= 0.5 of HAProxy's, added p99 at 1,000 requests/s < 1 ms, RSS idle < 60 MiB.
// A fourth target, HAProxy behind its own REDIRECT rule, is measured for request/response and new
// connections only: flb's ratios without the NAT its client leg pays (no goal; printed apart).
// Needs root, haproxy and gcc. Usage: npm run bench:sidecar [-- --seconds 5 --rounds 3]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, type Netns } from '../test-e2e/harness/netns.js';
import { SidecarTemplateSchema } from '../common/contract/index.js';
import { summariseProfile, type ProfileSummary } from './lib/cpu-profile.js';
import { report } from './lib/report.js';

const run = promisify(execFile);
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) || fallback : fallback;
};
const seconds = arg('seconds', 5);
const rounds = arg('rounds', 3);
const conns = arg('conns', 50);
const fixedRate = arg('rate', 1000);
const held = arg('hold', 1000);
const profileSeconds = arg('profile-seconds', 10);

const PROXY_UID = 1500;
/** How long an idle process is left before its memory is read as "idle". */
const IDLE_SETTLE_MS = 20_000;
const PROXY_CORE = 0;
const LOAD_CORE = 1;
const APP_IP = '10.215.1.1';
const ENDPOINTS = ['10.215.1.2', '10.215.1.3', '10.215.1.4'];
const DIRECT_IP = '10.215.1.5';
const VIP = '240.240.0.10';
/** Sent to HAProxy by a REDIRECT rule of its own, as a sidecar HAProxy would be: the NAT flb's client leg pays. */
const HAPROXY_VIP = '240.240.0.11';
const ECHO_PORT = 9090;
const SOURCE_PORT = 9091;
const ONCE_PORT = 9092;
const HAPROXY_ECHO = 19090;
const HAPROXY_SOURCE = 19091;
const HAPROXY_ONCE = 19092;

const root = fileURLToPath(new URL('../../', import.meta.url));
const flbBin = join(root, 'bin/flb.js');
const results = join(root, 'bench/results');
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// Everything this run sets up is undone here, on success, failure or a signal; processes are
// also started with --pdeathsig KILL so that they die with this one even if it is killed.
const undo: (() => Promise<unknown> | void)[] = [];
async function cleanUp(): Promise<void> {
  while (undo.length) {
    try {
      await undo.pop()!();
    } catch (error) {
      progress(`clean-up step failed: ${String(error)}`);
    }
  }
}
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    progress(`${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

async function requireCommand(command: string, install: string): Promise<string> {
  try {
    return (await run('sh', ['-c', `command -v ${command}`])).stdout.trim();
  } catch {
    throw new Error(`${command} is not installed; the sidecar benchmark needs it: ${install}`);
  }
}

interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  /** The last lines the process wrote to stderr, for error messages. */
  stderr: string[];
  exited: Promise<number | null>;
}

/**
 * Starts a command in a namespace, pinned to a core, as `uid` if given. `ip netns exec`, setpriv
 * and taskset all exec, so the pid is the command's own (the one /proc is read for).
 */
function startIn(ns: Netns, name: string, command: string[], o: { core: number; uid?: number; env?: NodeJS.ProcessEnv }): Proc {
  // pdeathsig is cleared when the UID changes, so it is set by a second setpriv after the first.
  const asUser = o.uid !== undefined ? ['setpriv', `--reuid=${o.uid}`, `--regid=${o.uid}`, '--clear-groups', '--'] : [];
  const child = spawn('ip', ['netns', 'exec', ns.name, ...asUser, 'setpriv', '--pdeathsig', 'KILL', '--', 'taskset', '-c', String(o.core), ...command], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...o.env },
  });
  // Read, or a process that writes to stdout would block on the full pipe.
  child.stdout!.resume();
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 40) stderr.shift();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: Proc = { name, child, pid: child.pid!, stderr, exited };
  undo.push(() => stopProc(proc, 'SIGKILL'));
  return proc;
}

async function stopProc(proc: Proc, signal: NodeJS.Signals = 'SIGTERM', waitMs = 15_000): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill(signal);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), waitMs);
  await proc.exited;
  clearTimeout(timer);
}

function failed(proc: Proc, what: string): Error {
  return new Error(`${proc.name} ${what}${proc.stderr.length ? `; its last output:\n${proc.stderr.join('\n')}` : ''}`);
}

/**
 * RSS, and the part of it that is the process's own (private pages): RSS also counts the pages of
 * the executable and its libraries, which every Node process on a host shares (most of a bare
 * Node's 39 MiB).
 */
function memoryMiB(pid: number): { rss: number; private: number } {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? Number.NaN);
  return { rss: kib('Rss') / 1024, private: (kib('Private_Clean') + kib('Private_Dirty')) / 1024 };
}

/** Busy share of each core over `ms`: whether something else on the machine would skew the run. */
async function coreBusy(ms: number): Promise<number[]> {
  const read = () =>
    readFileSync('/proc/stat', 'utf8')
      .split('\n')
      .filter((l) => /^cpu\d+ /.test(l))
      .map((l) => {
        const v = l.split(/\s+/).slice(1).map(Number);
        const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
        return { total, busy: total - v[3]! - v[4]! };
      });
  const a = read();
  await sleep(ms);
  const b = read();
  return b.map((x, i) => (x.busy - a[i]!.busy) / Math.max(1, x.total - a[i]!.total));
}

interface LoadResult {
  mode: string;
  seconds: number;
  requests?: number;
  connections?: number;
  rate?: number;
  bytes?: number;
  gbitPerSecond?: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
  errors?: number;
  lost?: number;
  cpuSeconds: Record<string, number>;
  coreBusy: number[];
}

interface Target {
  name: 'direct' | 'haproxy' | 'flb' | 'haproxy-nat';
  host: string;
  echo: number;
  source: number;
  once: number;
  proxy?: Proc;
}

requireRoot('the sidecar benchmark');
if (availableParallelism() < 2) throw new Error('the sidecar benchmark needs two cores: one for the proxy, one for the load generator and endpoints');
const haproxyPath = await requireCommand('haproxy', 'apt-get install haproxy (or npm run setup)');
const gcc = await requireCommand('gcc', 'apt-get install gcc libc6-dev (or npm run setup)');
const perf = await requireCommand('perf', '').catch(() => undefined);
// What a run killed with SIGKILL left: namespaces (by the harness) and work directories.
await removeStaleNamespaces();
for (const name of readdirSync(tmpdir())) {
  const pid = Number(/^flb-bench-sidecar-(\d+)-/.exec(name)?.[1]);
  if (!pid) continue;
  try {
    process.kill(pid, 0);
  } catch {
    rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
}

const work = mkdtempSync(join(tmpdir(), `flb-bench-sidecar-${process.pid}-`));
undo.push(() => rmSync(work, { recursive: true, force: true }));
// The sidecar and HAProxy run as the proxy UID and read their configuration from here.
chmodSync(work, 0o755);

const rows: Record<string, string | number>[] = [];
const natRows: Record<string, string | number>[] = [];
const extra: Record<string, unknown> = {};
const profiles: Record<string, ProfileSummary & { rate: number; file: string }> = {};
const perfSplits: Record<string, { kernel: number; user: number; idle: number; other: number }> = {};
// Runs in which something other than the proxy kept the proxy's core busy (another job on the
// machine): their numbers are not the proxy's alone.
const contended: { run: string; otherShare: number; kept: boolean }[] = [];
function noteContention(run: string, r: LoadResult, proxyPid?: number): boolean {
  const otherShare = (r.coreBusy[PROXY_CORE] ?? 0) - (proxyPid ? (r.cpuSeconds[String(proxyPid)] ?? 0) : 0) / r.seconds;
  if (otherShare <= 0.1) return false;
  contended.push({ run, otherShare, kept: true });
  progress(`warning: ${run}: ${Math.round(100 * otherShare)}% of core ${PROXY_CORE} went to something other than the proxy`);
  return true;
}
try {
  progress('building the C load generator and endpoint server');
  const tcpLoad = join(work, 'tcp-load');
  const tcpEndpoint = join(work, 'tcp-endpoint');
  await run(gcc, ['-O2', '-Wall', '-o', tcpLoad, join(root, 'bench/lib/tcp-load.c')]);
  await run(gcc, ['-O2', '-Wall', '-o', tcpEndpoint, join(root, 'bench/lib/tcp-endpoint.c')]);

  const background = await coreBusy(1000);
  extra.backgroundCoreBusy = background;
  if (background.some((b) => b > 0.1))
    progress(`warning: the machine is busy before the run (core busy ${background.map((b) => `${Math.round(100 * b)}%`).join(', ')}); numbers will be noisy`);

  progress('namespaces: app 10.215.1.1, ep 10.215.1.2-.5');
  const app = await createNetns('sc-app');
  undo.push(() => deleteNetns(app));
  const ep = await createNetns('sc-ep');
  undo.push(() => deleteNetns(ep));
  await link(
    app,
    [`${APP_IP}/24`],
    ep,
    [...ENDPOINTS, DIRECT_IP].map((a) => `${a}/24`),
  );
  // The mesh VIP range needs a route, or connect() fails before the nat rules see the packet.
  await app.exec('ip', ['route', 'add', 'default', 'via', ENDPOINTS[0]!]);
  const settings = { version: 1, mode: 'iptables', ipv6: 'disabled', excludeOutboundIpRanges: [`${DIRECT_IP}/32`] };
  await run('ip', ['netns', 'exec', app.name, process.execPath, flbBin, 'iptables', 'apply', '--settings', JSON.stringify(settings)], {
    env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
  });
  // HAProxy behind the same kind of REDIRECT, ahead of flb's rules: the comparison without the
  // NAT difference (HAProxy balances over fixed endpoints, so it needs no original destination).
  for (const [from, to] of [
    [ECHO_PORT, HAPROXY_ECHO],
    [SOURCE_PORT, HAPROXY_SOURCE],
    [ONCE_PORT, HAPROXY_ONCE],
  ] as const) {
    await run('ip', [
      'netns',
      'exec',
      app.name,
      'iptables-nft',
      '-t',
      'nat',
      '-I',
      'OUTPUT',
      '1',
      '-d',
      `${HAPROXY_VIP}/32`,
      '-p',
      'tcp',
      '--dport',
      String(from),
      '-j',
      'REDIRECT',
      '--to-ports',
      String(to),
    ]);
  }
  // New connections/s opens a hundred thousand connections from one address to one destination:
  // more source ports (above every port something listens on here), reused 1 s after TIME_WAIT,
  // in conntrack too.
  await app.exec('sysctl', [
    '-q',
    '-w',
    'net.ipv4.ip_local_port_range=20000 65535',
    'net.ipv4.tcp_tw_reuse=1',
    'net.netfilter.nf_conntrack_tcp_timeout_time_wait=1',
  ]);

  const endpoint = startIn(ep, 'the endpoint server', [tcpEndpoint, String(ECHO_PORT), String(SOURCE_PORT), String(ONCE_PORT)], { core: LOAD_CORE });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: endpoint.child.stdout! }).once('line', () => resolve());
    void endpoint.exited.then(() => reject(failed(endpoint, 'exited before it was ready')));
  });

  const load = async (
    mode: string,
    host: string,
    port: number,
    params: Record<string, string | number>,
    timeoutMs = (seconds + 30) * 1000,
  ): Promise<LoadResult> => {
    const args = [
      'netns',
      'exec',
      app.name,
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      'taskset',
      '-c',
      String(LOAD_CORE),
      tcpLoad,
      mode,
      host,
      String(port),
      ...Object.entries(params).map(([k, v]) => `${k}=${v}`),
    ];
    const { stdout } = await run('ip', args, { timeout: timeoutMs, maxBuffer: 1 << 20 });
    return JSON.parse(stdout) as LoadResult;
  };
  const answers = async (host: string, port: number) =>
    await run('ip', ['netns', 'exec', app.name, tcpLoad, 'probe', host, String(port)]).then(
      () => true,
      () => false,
    );
  const untilAnswering = async (proc: Proc, host: string, port: number) => {
    const deadline = Date.now() + 30_000;
    while (!(await answers(host, port))) {
      if (proc.child.exitCode !== null) throw failed(proc, 'exited');
      if (Date.now() > deadline) throw failed(proc, `does not answer on ${host}:${port} after 30 s`);
      await sleep(100);
    }
  };

  // HAProxy as the L4 balancer it is usually compared as: one thread, mode tcp, round robin.
  const haproxyCfg = join(work, 'haproxy.cfg');
  const backends = (port: number) => ENDPOINTS.map((a, i) => `  server e${i} ${a}:${port}`).join('\n');
  writeFileSync(
    haproxyCfg,
    `global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  balance roundrobin
  timeout connect 1s
  timeout client 60s
  timeout server 60s
listen echo
  bind 127.0.0.1:${HAPROXY_ECHO}
${backends(ECHO_PORT)}
listen source
  bind 127.0.0.1:${HAPROXY_SOURCE}
${backends(SOURCE_PORT)}
listen once
  bind 127.0.0.1:${HAPROXY_ONCE}
${backends(ONCE_PORT)}
`,
  );
  chmodSync(haproxyCfg, 0o644);
  // As the proxy UID: its connections to the endpoints must not be redirected to the sidecar.
  const haproxy = startIn(app, 'haproxy', [haproxyPath, '-db', '-f', haproxyCfg], { core: PROXY_CORE, uid: PROXY_UID });
  await untilAnswering(haproxy, '127.0.0.1', HAPROXY_ECHO);

  // The sidecar's configuration, as local files: one service with a tcp port for each of the
  // endpoint server's behaviours, three endpoints, the catalog's default policy (round-robin).
  const cfg = join(work, 'cfg');
  mkdirSync(join(cfg, 'services'), { recursive: true });
  writeFileSync(join(cfg, 'mesh.json'), JSON.stringify({ apiVersion: 'flb.flomesh.io/v1alpha1', kind: 'Mesh', name: 'flb' }));
  writeFileSync(
    join(cfg, 'sidecar.json'),
    JSON.stringify({
      apiVersion: 'flb.flomesh.io/v1alpha1',
      kind: 'Sidecar',
      id: 'vm.bench',
      mesh: 'flb',
      identity: { kind: 'vm', name: 'bench' },
      dns: { searchDomains: [] },
    }),
  );
  writeFileSync(
    join(cfg, 'services/echo.static.json'),
    JSON.stringify({
      apiVersion: 'flb.flomesh.io/v1alpha1',
      kind: 'Service',
      id: 'echo.static',
      name: 'echo',
      source: 'static',
      vips: [{ address: VIP, allocation: 'mesh' }],
      ports: [
        { name: 'echo', port: ECHO_PORT, protocol: 'tcp' },
        { name: 'source', port: SOURCE_PORT, protocol: 'tcp' },
        { name: 'once', port: ONCE_PORT, protocol: 'tcp' },
      ],
      endpoints: ENDPOINTS.map((address) => ({ address, port: ECHO_PORT, ports: { source: SOURCE_PORT, once: ONCE_PORT } })),
    }),
  );
  for (const dir of ['cfg', 'cfg/services']) chmodSync(join(work, dir), 0o755);
  const state = join(work, 'state');
  const prof = join(work, 'profiles');
  for (const dir of [state, prof]) {
    mkdirSync(dir);
    chownSync(dir, PROXY_UID, PROXY_UID);
  }
  const startFlb = async (nodeArgs: string[] = [], env: NodeJS.ProcessEnv = {}) => {
    const proc = startIn(
      app,
      'flb sidecar',
      [process.execPath, ...nodeArgs, flbBin, 'sidecar', '--id', 'vm.bench', '--config-dir', cfg, '--state-dir', state, '--drain', '0s'],
      {
        core: PROXY_CORE,
        uid: PROXY_UID,
        // As the injector runs it: the mesh's default NODE_OPTIONS for the sidecar container.
        env: { FLB_LOG_LEVEL: 'warn', NODE_OPTIONS: SidecarTemplateSchema.parse({}).nodeOptions, ...env },
      },
    );
    // Readiness as a pod's postStart hook checks it, then a ping through the VIP.
    await run('ip', ['netns', 'exec', app.name, process.execPath, flbBin, 'sidecar', 'wait-ready', '--timeout', '30s'], {
      env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
    }).catch(() => {
      throw failed(proc, 'did not become ready in 30 s');
    });
    await untilAnswering(proc, VIP, ECHO_PORT);
    return proc;
  };
  let flb = await startFlb();
  for (const p of [haproxy, flb, endpoint]) {
    const comm = readFileSync(`/proc/${p.pid}/comm`, 'utf8').trim();
    if (!['haproxy', 'node', 'tcp-endpoint'].includes(comm))
      throw new Error(`pid ${p.pid} of ${p.name} is ${comm}, not the process itself: CPU and RSS would be read from the wrong one`);
  }

  const targets: Target[] = [
    { name: 'direct', host: DIRECT_IP, echo: ECHO_PORT, source: SOURCE_PORT, once: ONCE_PORT },
    { name: 'haproxy', host: '127.0.0.1', echo: HAPROXY_ECHO, source: HAPROXY_SOURCE, once: HAPROXY_ONCE, proxy: haproxy },
    { name: 'flb', host: VIP, echo: ECHO_PORT, source: SOURCE_PORT, once: ONCE_PORT, proxy: flb },
    { name: 'haproxy-nat', host: HAPROXY_VIP, echo: ECHO_PORT, source: SOURCE_PORT, once: ONCE_PORT, proxy: haproxy },
  ];

  // Idle: started, answered one ping (above), then left alone. Read twice: 3 s after start-up, and
  // settled, once V8's memory reducer has given start-up garbage back (it runs on its own some
  // seconds after allocation stops); a sidecar idles for hours, so the settled number is the goal's.
  // A Node process that does nothing is the floor a Node sidecar starts from.
  const bare = startIn(app, 'a bare node process', [process.execPath, '-e', 'setInterval(() => {}, 1 << 30)'], { core: PROXY_CORE, uid: PROXY_UID });
  const idleFrom = Date.now();
  await sleep(3000);
  const memStartup = { haproxy: memoryMiB(haproxy.pid), flb: memoryMiB(flb.pid), bareNode: memoryMiB(bare.pid) };
  progress(`RSS 3 s after start: haproxy ${memStartup.haproxy.rss.toFixed(1)} MiB, flb ${memStartup.flb.rss.toFixed(1)} MiB; waiting for it to settle`);
  await sleep(IDLE_SETTLE_MS - (Date.now() - idleFrom));
  const memIdle = { haproxy: memoryMiB(haproxy.pid), flb: memoryMiB(flb.pid), bareNode: memoryMiB(bare.pid) };
  await stopProc(bare, 'SIGKILL');
  progress(
    `RSS idle: haproxy ${memIdle.haproxy.rss.toFixed(1)} MiB, flb ${memIdle.flb.rss.toFixed(1)} MiB, a bare node ${memIdle.bareNode.rss.toFixed(1)} MiB`,
  );

  const raw: Record<string, Record<string, LoadResult[]>> = { direct: {}, haproxy: {}, flb: {}, 'haproxy-nat': {} };
  // This machine may be shared: a run during which other work took the proxy's core is run again
  // (twice at most) rather than averaged in.
  const keep = async (t: Target, measure: string, once: () => Promise<LoadResult>) => {
    for (let attempt = 1; ; attempt++) {
      const r = await once();
      const shared = noteContention(`${t.name} ${measure}`, r, t.proxy?.pid);
      if (!shared || attempt === 3) {
        (raw[t.name]![measure] ??= []).push(r);
        return;
      }
      contended.at(-1)!.kept = false;
      progress(`${t.name} ${measure}: again (attempt ${attempt + 1} of 3)`);
      await sleep(3000);
    }
  };
  const pidsOf = (t: Target) => [t.proxy?.pid, endpoint.pid].filter((p) => p !== undefined).join(',');
  const checkAlive = () => {
    for (const p of [haproxy, flb, endpoint]) if (p.child.exitCode !== null) throw failed(p, 'exited during the run');
  };
  // Each round in a different order, so that no target always runs right after another.
  const inOrder = (round: number) => targets.map((_, i) => targets[(i + round) % targets.length]!);

  for (let round = 0; round < rounds; round++) {
    for (const t of inOrder(round)) {
      // The NAT comparison needs only the two CPU measures.
      const full = t.name !== 'haproxy-nat';
      if (!full) {
        progress(`round ${round + 1}/${rounds}, ${t.name}: 64-byte request/response and new connections`);
        await keep(t, 'rr', () => load('rr', t.host, t.echo, { conns, seconds, size: 64, pids: pidsOf(t) }));
        await keep(t, 'conn', () => load('conn', t.host, t.once, { conns, seconds, size: 64, pids: pidsOf(t) }));
        continue;
      }
      progress(`round ${round + 1}/${rounds}, ${t.name}: bulk, 1 connection, ${seconds} s`);
      await keep(t, 'bulk', () => load('bulk', t.host, t.source, { seconds, pids: pidsOf(t) }));
      progress(`round ${round + 1}/${rounds}, ${t.name}: 64-byte request/response, ${conns} connections, ${seconds} s`);
      await keep(t, 'rr', () => load('rr', t.host, t.echo, { conns, seconds, size: 64, pids: pidsOf(t) }));
      progress(`round ${round + 1}/${rounds}, ${t.name}: new connections, ${conns} in parallel, ${seconds} s`);
      await keep(t, 'conn', () => load('conn', t.host, t.once, { conns, seconds, size: 64, pids: pidsOf(t) }));
      progress(`round ${round + 1}/${rounds}, ${t.name}: ${fixedRate} requests/s over ${conns} connections, ${2 * seconds} s`);
      await keep(t, 'rate', () => load('rate', t.host, t.echo, { conns, seconds: 2 * seconds, rate: fixedRate, size: 64, pids: pidsOf(t) }));
      checkAlive();
    }
  }

  // RSS with `held` idle connections open through the proxy (each pinged once, so upstream too).
  const memHeld: Record<string, { rss: number; private: number }> = {};
  for (const t of targets.filter((x) => x.proxy && x.name !== 'haproxy-nat')) {
    progress(`${t.name}: RSS with ${held} open connections`);
    const holder = spawn(
      'ip',
      [
        'netns',
        'exec',
        app.name,
        'setpriv',
        '--pdeathsig',
        'KILL',
        '--',
        'taskset',
        '-c',
        String(LOAD_CORE),
        tcpLoad,
        'hold',
        t.host,
        String(t.echo),
        `conns=${held}`,
      ],
      {
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    );
    undo.push(() => void holder.kill('SIGKILL'));
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: holder.stdout! }).once('line', resolve);
      holder.once('exit', (code) => reject(new Error(`the connection holder exited (${code}) before holding ${held} connections through ${t.name}`)));
    });
    if (!line.includes('held')) throw new Error(`connection holder: ${line}`);
    await sleep(2000);
    memHeld[t.name] = memoryMiB(t.proxy!.pid);
    holder.stdin!.end();
    await new Promise((r) => holder.once('exit', r));
  }
  await sleep(IDLE_SETTLE_MS);
  const memAfter = { haproxy: memoryMiB(haproxy.pid), flb: memoryMiB(flb.pid) };

  // Where the proxy core's time goes, for both proxies alike: perf samples core 0 under the same
  // loads and splits the samples into the proxy's kernel time (syscalls and the network stack
  // they run), its user-space time, and the rest. The V8 profile below cannot make this split: a
  // syscall shows there as the JavaScript binding that made it. Optional: needs perf.
  if (perf) {
    for (const t of targets.filter((x) => x.proxy && x.name !== 'haproxy-nat')) {
      for (const mode of ['rr', 'conn'] as const) {
        progress(`${t.name}: perf samples of core ${PROXY_CORE} under ${mode === 'rr' ? 'request/response' : 'new connections'}`);
        const data = join(work, `perf-${t.name}-${mode}.data`);
        const loaded = load(mode, t.host, mode === 'rr' ? t.echo : t.once, { conns, seconds, size: 64, pids: pidsOf(t) });
        await sleep(1500);
        await run(perf, [
          'record',
          '-q',
          '-e',
          'cpu-clock',
          '-F',
          '999',
          '-C',
          String(PROXY_CORE),
          '-o',
          data,
          '--',
          'sleep',
          String(Math.max(1, seconds - 1)),
        ]);
        await loaded;
        const { stdout } = await run(perf, ['report', '-i', data, '--stdio', '--no-children', '--sort', 'pid,dso', '-g', 'none', '-t', '|'], {
          maxBuffer: 16 << 20,
        });
        // Every thread of the proxy (V8's GC helpers are threads of their own).
        const threads = new Set(readdirSync(`/proc/${t.proxy!.pid}/task`));
        const split = { kernel: 0, user: 0, idle: 0, other: 0 };
        for (const line of stdout.split('\n')) {
          const [share, thread, dso] = line.split('|').map((x) => x.trim());
          const pct = Number.parseFloat(share ?? '');
          if (line.startsWith('#') || !Number.isFinite(pct)) continue;
          const tid = thread?.split(':')[0] ?? '';
          if (threads.has(tid)) split[dso === '[kernel.kallsyms]' ? 'kernel' : 'user'] += pct;
          // The idle task (tid 0), and the softirqs that run while the core is otherwise idle.
          else if (tid === '0') split.idle += pct;
          else split.other += pct;
        }
        perfSplits[`${t.name} ${mode}`] = split;
        if (split.other > 10) contended.push({ run: `perf ${t.name} ${mode}`, otherShare: split.other / 100, kept: true });
      }
    }
  } else progress('perf is not installed: no kernel/user split of the proxy core (apt-get install linux-perf)');

  // Profiles of the sidecar, in runs of their own (profiling slows it down): request/response and
  // new connections, where the goals are.
  await stopProc(flb);
  mkdirSync(join(results, 'sidecar-profiles'), { recursive: true });
  for (const [mode, label] of [
    ['rr', `64-byte request/response, ${conns} connections`],
    ['conn', `new connections, ${conns} in parallel`],
  ] as const) {
    progress(`profiling the sidecar under ${label}, ${profileSeconds} s`);
    // Unbundled, so that samples name the file they are in: the bundle the sidecar runs by default
    // (dist/sidecar.bundle.mjs) folds our files and npm packages into one. Same functions, same JIT.
    flb = await startFlb(['--cpu-prof', '--cpu-prof-dir', prof, '--cpu-prof-name', `${mode}.cpuprofile`], { FLB_SIDECAR_UNBUNDLED: '1' });
    // V8 stamps samples with CLOCK_MONOTONIC microseconds, as hrtime counts: the summary keeps the
    // load's counted window and leaves out start-up and the warm-up second.
    const started = Number(process.hrtime.bigint() / 1000n);
    const r = await load(
      mode,
      VIP,
      mode === 'rr' ? ECHO_PORT : ONCE_PORT,
      { conns, seconds: profileSeconds, size: 64, pids: String(flb.pid) },
      (profileSeconds + 30) * 1000,
    );
    const window = { fromUs: started + 1_500_000, toUs: Number(process.hrtime.bigint() / 1000n) - 200_000 };
    noteContention(`profile ${mode}`, r, flb.pid);
    // The profile is written when the process exits; SIGTERM drains (0 s) and exits.
    await stopProc(flb, 'SIGTERM', 30_000);
    const file = readdirSync(prof).find((f) => f.startsWith(mode));
    if (!file) throw failed(flb, `left no profile in ${prof} (exit code ${flb.child.exitCode})`);
    const kept = join(results, 'sidecar-profiles', `${mode}.cpuprofile`);
    copyFileSync(join(prof, file), kept);
    chmodSync(kept, 0o644);
    profiles[mode] = { ...summariseProfile(kept, 15, window), rate: r.rate ?? 0, file: kept };
  }

  // --- the table ---------------------------------------------------------------------------------
  const m = (name: Target['name'], measure: string, f: (r: LoadResult, t: Target) => number) => {
    const t = targets.find((x) => x.name === name)!;
    return median(raw[name]![measure]!.map((r) => f(r, t)));
  };
  const cpuOf = (r: LoadResult, t: Target) => (t.proxy ? (r.cpuSeconds[String(t.proxy.pid)] ?? Number.NaN) : Number.NaN);
  const busy = (r: LoadResult) => `${Math.round(100 * (r.coreBusy[PROXY_CORE] ?? 0))}/${Math.round(100 * (r.coreBusy[LOAD_CORE] ?? 0))}`;
  const medianRun = (name: Target['name'], measure: string, by: (r: LoadResult) => number) => {
    const runs = [...raw[name]![measure]!].sort((a, b) => by(a) - by(b));
    return runs[Math.floor(runs.length / 2)]!;
  };
  const r1 = (x: number) => Math.round(10 * x) / 10;
  const r3 = (x: number) => Math.round(1000 * x) / 1000;
  const row = (
    measure: string,
    values: Partial<Record<Target['name'], number | string>>,
    goal?: { text: string; ok: (ratio: number, flb: number) => boolean; on?: 'ratio' | 'flb' },
  ) => {
    const h = values.haproxy;
    const f = values.flb;
    const ratio = typeof h === 'number' && typeof f === 'number' && h !== 0 ? r3(f / h) : '';
    const r: Record<string, string | number> = { measure, direct: values.direct ?? '', haproxy: h ?? '', flb: f ?? '', 'flb/haproxy': ratio };
    if (goal) {
      r.goal = goal.text;
      r.result = goal.ok(typeof ratio === 'number' ? ratio : Number.NaN, typeof f === 'number' ? f : Number.NaN) ? 'PASS' : 'FAIL';
    }
    rows.push(r);
  };
  const perfRow = (mode: 'rr' | 'conn') => {
    const split = (n: Target['name']) => perfSplits[`${n} ${mode}`];
    if (!split('haproxy') || !split('flb')) return;
    row(
      '  proxy core % kernel/user/idle/other (perf)',
      each((n) => (['kernel', 'user', 'idle', 'other'] as const).map((k) => Math.round(split(n)![k])).join('/'), proxies),
    );
  };
  const all = ['direct', 'haproxy', 'flb'] as const;
  const proxies = ['haproxy', 'flb'] as const;
  const each = (f: (n: Target['name']) => number | string, names: readonly Target['name'][] = all) => Object.fromEntries(names.map((n) => [n, f(n)]));

  row(
    'bulk throughput, 1 connection (Gbit/s)',
    each((n) => r3(m(n, 'bulk', (r) => r.gbitPerSecond ?? 0))),
  );
  row(
    '  proxy CPU per GB moved (ms)',
    each((n) => r1(m(n, 'bulk', (r, t) => (1000 * cpuOf(r, t)) / ((r.bytes ?? 0) / 1e9))), proxies),
  );
  row(
    `64 B request/response, ${conns} connections (req/s)`,
    each((n) => Math.round(m(n, 'rr', (r) => r.rate ?? 0))),
    { text: '>= 0.8 x haproxy', ok: (q) => q >= 0.8 },
  );
  row(
    '  proxy CPU per request (us)',
    each((n) => r1(m(n, 'rr', (r, t) => (1e6 * cpuOf(r, t)) / (r.requests ?? 1))), proxies),
    { text: '<= 1.25 x haproxy', ok: (q) => q <= 1.25 },
  );
  // The proxy's own CPU leaves out kernel work done for it outside its context (softirqs run
  // while it sleeps); the whole proxy core's busy time per request counts that too.
  const coreTime = (r: LoadResult, count: number) => (1e6 * (r.coreBusy[PROXY_CORE] ?? 0) * r.seconds) / Math.max(1, count);
  row(
    '  proxy core busy per request (us)',
    each((n) => r1(m(n, 'rr', (r) => coreTime(r, r.requests ?? 0))), proxies),
  );
  row(
    '  core busy % proxy/load (median run)',
    each((n) => busy(medianRun(n, 'rr', (r) => r.rate ?? 0))),
  );
  perfRow('rr');
  row(
    '  client-side p99 (us)',
    each((n) => Math.round(m(n, 'rr', (r) => r.p99Us))),
  );
  row(
    `new connections/s, ${conns} in parallel`,
    each((n) => Math.round(m(n, 'conn', (r) => r.rate ?? 0))),
    { text: '>= 0.5 x haproxy', ok: (q) => q >= 0.5 },
  );
  row(
    '  proxy CPU per new connection (us)',
    each((n) => r1(m(n, 'conn', (r, t) => (1e6 * cpuOf(r, t)) / (r.connections ?? 1))), proxies),
  );
  row(
    '  proxy core busy per new connection (us)',
    each((n) => r1(m(n, 'conn', (r) => coreTime(r, r.connections ?? 0))), proxies),
  );
  row(
    '  core busy % proxy/load (median run)',
    each((n) => busy(medianRun(n, 'conn', (r) => r.rate ?? 0))),
  );
  perfRow('conn');
  row(
    '  failed connections (all rounds)',
    each((n) => raw[n]!.conn!.reduce((s, r) => s + (r.errors ?? 0), 0)),
  );
  const p = (n: Target['name'], q: 'p50Us' | 'p99Us') => m(n, 'rate', (r) => r[q]);
  row(
    `p50 at ${fixedRate} req/s (us)`,
    each((n) => r1(p(n, 'p50Us'))),
  );
  row(
    `p99 at ${fixedRate} req/s (us)`,
    each((n) => r1(p(n, 'p99Us'))),
  );
  row(
    '  added p50 vs direct (us)',
    each((n) => r1(p(n, 'p50Us') - p('direct', 'p50Us')), proxies),
  );
  row(
    '  added p99 vs direct (us)',
    each((n) => r1(p(n, 'p99Us') - p('direct', 'p99Us')), proxies),
    { text: 'flb < 1000 us', ok: (_, f) => f < 1000 },
  );
  row(
    '  lost requests (all rounds)',
    each((n) => raw[n]!.rate!.reduce((s, r) => s + (r.lost ?? 0), 0)),
  );
  row(
    `RSS idle, settled (${IDLE_SETTLE_MS / 1000} s after start) (MiB)`,
    { haproxy: r1(memIdle.haproxy.rss), flb: r1(memIdle.flb.rss) },
    { text: 'flb < 60 MiB', ok: (_, f) => f < 60 },
  );
  row('  RSS 3 s after start (MiB)', { haproxy: r1(memStartup.haproxy.rss), flb: r1(memStartup.flb.rss) });
  row('  of which private, not shared (MiB)', { haproxy: r1(memIdle.haproxy.private), flb: r1(memIdle.flb.private) });
  row('  a bare node process: RSS / private (MiB)', { flb: `${r1(memIdle.bareNode.rss)} / ${r1(memIdle.bareNode.private)}` });
  row(`RSS with ${held} open connections (MiB)`, { haproxy: r1(memHeld.haproxy!.rss), flb: r1(memHeld.flb!.rss) });
  row('  of which private (MiB)', { haproxy: r1(memHeld.haproxy!.private), flb: r1(memHeld.flb!.private) });
  row(`RSS idle again, ${IDLE_SETTLE_MS / 1000} s after the run (MiB)`, { haproxy: r1(memAfter.haproxy.rss), flb: r1(memAfter.flb.rss) });

  // flb against HAProxy behind the same REDIRECT: what is left once both pay the NAT.
  const cpuPer = (name: Target['name'], measure: 'rr' | 'conn') =>
    m(name, measure, (r, t) => (1e6 * cpuOf(r, t)) / ((measure === 'rr' ? r.requests : r.connections) ?? 1));
  for (const [measure, label, unit] of [
    ['rr', `64 B request/response, ${conns} connections`, 'request'],
    ['conn', `new connections, ${conns} in parallel`, 'connection'],
  ] as const) {
    const rate = (n: Target['name']) => Math.round(m(n, measure, (r) => r.rate ?? 0));
    natRows.push({
      measure: `${label} (/s)`,
      'haproxy behind REDIRECT': rate('haproxy-nat'),
      flb: rate('flb'),
      'flb/haproxy': r3(rate('flb') / rate('haproxy-nat')),
    });
    natRows.push({
      measure: `  proxy CPU per ${unit} (us)`,
      'haproxy behind REDIRECT': r1(cpuPer('haproxy-nat', measure)),
      flb: r1(cpuPer('flb', measure)),
      'flb/haproxy': r3(cpuPer('flb', measure) / cpuPer('haproxy-nat', measure)),
    });
  }

  const haproxyVersion = (await run(haproxyPath, ['-v'])).stdout.split('\n')[0];
  // The sidecar measured is the working tree's build, which may be ahead of the commit.
  const revision = await run('git', ['-C', root, 'describe', '--always', '--dirty']).then(
    (r) => r.stdout.trim(),
    () => 'unknown',
  );
  Object.assign(extra, {
    seconds,
    rounds,
    conns,
    fixedRate,
    held,
    environment: { cores: availableParallelism(), kernel: release(), node: process.version, haproxy: haproxyVersion, revision },
    placement: {
      proxy: `core ${PROXY_CORE}: haproxy (nbthread 1, mode tcp, roundrobin) or flb sidecar, each as UID ${PROXY_UID} in the app namespace`,
      loadGenerator: `core ${LOAD_CORE}: bench/lib/tcp-load.c (one epoll thread) in the app namespace, as root, so redirected like any app`,
      endpoints: `core ${LOAD_CORE}: bench/lib/tcp-endpoint.c (one epoll thread) in the ep namespace: ${ENDPOINTS.join(', ')} (the service's endpoints) and ${DIRECT_IP} (direct; excluded from interception)`,
      paths: {
        direct: `${APP_IP} -> veth -> ${DIRECT_IP}:${ECHO_PORT}`,
        haproxy: `127.0.0.1:${HAPROXY_ECHO} -> haproxy -> veth -> endpoints`,
        flb: `${VIP}:${ECHO_PORT} -> iptables REDIRECT -> 15001 -> flb (SO_ORIGINAL_DST, tcp port) -> veth -> endpoints`,
        'haproxy-nat': `${HAPROXY_VIP}:${ECHO_PORT} -> iptables REDIRECT -> 127.0.0.1:${HAPROXY_ECHO} -> haproxy -> veth -> endpoints`,
      },
    },
    medianMeasures: 'each number is the median of the rounds; CPU from /proc/PID/stat (utime+stime, all threads) over the counted window only',
    natComparison: natRows,
    memory: { startup: memStartup, idle: memIdle, held: memHeld, afterRun: memAfter, idleSettleMs: IDLE_SETTLE_MS },
    perfSplits,
    contended,
    raw,
    profiles,
  });
} finally {
  await cleanUp();
}

const retried = contended.filter((c) => !c.kept).length;
const kept = contended.filter((c) => c.kept);
if (retried) progress(`${retried} run(s) were repeated because other work shared the proxy core`);
if (kept.length)
  progress(
    `warning: ${kept.length} run(s) in the results shared the proxy core with other work (${kept.map((c) => c.run).join(', ')}); rerun on a quiet machine`,
  );
const goals = Object.fromEntries(rows.filter((r) => r.result).map((r) => [`${String(r.measure).trim()} ${r.goal}`, r.result]));
const file = report(
  'sidecar',
  `flb sidecar vs HAProxy (L4, one thread) vs direct; proxy on core ${PROXY_CORE}, load generator and endpoint server (C, epoll) on core ${LOAD_CORE}`,
  rows,
  { goals, ...extra },
);
printTable('flb vs HAProxy behind the same iptables REDIRECT (both pay the NAT on the client leg; no goal, for reading the ratios above)', natRows);
// The profiles are in the JSON above; here they are printed for people.
function printTable(title: string, rows: Record<string, string | number>[]): void {
  const columns = Object.keys(rows[0] ?? {});
  const cell = (v: string | number | undefined) => String(v ?? '');
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  process.stdout.write(
    `\n${title}\n${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${rows.map((r) => line(columns.map((c) => cell(r[c])))).join('\n')}\n`,
  );
}
const pct = (x: number) => (Math.round(10 * x) / 10).toFixed(1);
for (const [mode, s] of Object.entries(profiles)) {
  const label =
    mode === 'rr' ? `64-byte request/response (${Math.round(s.rate)} req/s while profiled)` : `new connections (${Math.round(s.rate)} conn/s while profiled)`;
  printTable(
    `Profile of the sidecar (unbundled) under ${label}: ${Math.round(s.busyMs)} ms busy in ${Math.round(s.wallMs)} ms sampled; self time by area`,
    s.byArea.map((a) => ({ area: a.area, 'self %': pct(a.selfPercent) })),
  );
  printTable(
    `Top functions by self time (${mode})`,
    s.topSelf.map((f) => ({ 'self %': pct(f.selfPercent), function: f.function, where: f.where })),
  );
  printTable(
    `flb's own functions by inclusive time (${mode})`,
    s.oursInclusive.map((f) => ({ 'total %': pct(f.totalPercent), function: f.function, where: f.where })),
  );
}
progress(
  `goals: ${Object.entries(goals)
    .map(([g, r]) => `${g}: ${r}`)
    .join('; ')}`,
);
progress(`results in ${file}; profiles (open in Chrome DevTools) in ${join(results, 'sidecar-profiles')}`);
