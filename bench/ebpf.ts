// Benchmark of eBPF interception (issue #20) against iptables REDIRECT and a direct connection,
// in one run over the same endpoint server:
//  1. the data path, in alternating repetitions (each in a different order), first with a minimal
//     listener on 15001 (bench/lib/redirect-listener.c, in C: SO_ORIGINAL_DST, dial, relay; its cost
//     is in both redirected columns alike) and then with the full `flb sidecar`: new connections
//     per second one at a time (bench/lib/connect-time.c), with the time connect() takes (the
//     interception's own set-up cost: the kernel completes the handshake before the listener
//     accepts) and the whole connection's (connect, 64-byte ping, answer, close); p50/p99 per
//     64-byte request at a fixed rate; bulk throughput on one connection;
//  2. per-pod setup: eBPF registration (the addon, in this process, as the node agent does it)
//     against iptables-restore of the same pod's rules as bench:interception measures it, and the
//     eBPF mode's whole setup as the agent does it (registration + the inbound iptables rule).
//
// Namespaces: "ep" holds one C endpoint server (bench/lib/tcp-endpoint.c) answering on every
// address; three pod namespaces, each with a veth of its own to ep, are set up as deployed:
//   direct    10.216.1.1  no interception at all
//   iptables  10.216.2.1  `flb iptables apply`'s rules (outbound REDIRECT to 15001)
//   ebpf      10.216.3.1  registered with the programs (loaded into a cgroup of this run's own, never
//                         the root) plus the inbound-only nat rule the node agent writes (the hybrid)
// The eBPF column's load generator and listener/sidecar join that cgroup before entering the
// namespace (`ip netns exec` remounts /sys). Listener or sidecar on core 0, as the proxy UID;
// load generator (bench/lib/tcp-load.c) and endpoint server on core 1.
// Goals (issue): eBPF's added connection set-up cost at most half of iptables'; per-pod setup at
// least 10 times faster. Where eBPF does not win is printed too.
// Needs root, gcc, bpftool and the built programs (bash scripts/build-native.sh), and `npm run build`.
// Usage: npm run bench:ebpf [-- --reps 5 --seconds 5 --rate 1000 --setup-runs 20]; `-- --small` for a
// quick check (2 repetitions of 1 s, 5 setup runs: not for judging the goals).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { checkFeatures, defaultCgroup, load as loadPrograms, register, unload, unregister } from '../bpf/loader.js';
import { EbpfNode } from '../cni/ebpf.js';
import { applyInterception, detectBackend, type Backend } from '../cni/iptables.js';
import { buildRules, printDocument } from '../cni/rules.js';
import { InterceptionSchema, SidecarTemplateSchema } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { createNetns, deleteNetns, link, removeStaleNamespaces, requireRoot, type Netns } from '../test-e2e/harness/netns.js';
import { report } from './lib/report.js';

const run = promisify(execFile);
const small = process.argv.includes('--small');
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) || fallback : fallback;
};
const reps = arg('reps', small ? 2 : 5);
const seconds = arg('seconds', small ? 1 : 5);
const warmup = small ? 0.5 : 1;
const fixedRate = arg('rate', 1000);
const rateConns = 10;
/** connect-time gives up on a connection's connect, write or read after this long and counts it as failed. */
const CONNECT_TIMEOUT_MS = 1000;
const setupRuns = arg('setup-runs', small ? 5 : 20);

const PROXY_UID = 1500;
const PROXY_CORE = 0;
const LOAD_CORE = 1;
const OUTBOUND_PORT = 15001;
const ECHO_PORT = 9090;
const SOURCE_PORT = 9091;
const ONCE_PORT = 9092;
const VIP = '240.240.0.10';
const MESH = `flbbench-${process.pid}`;

type Column = 'direct' | 'iptables' | 'ebpf';
const COLUMNS: readonly Column[] = ['direct', 'iptables', 'ebpf'];
const SUBNET: Record<Column, number> = { direct: 1, iptables: 2, ebpf: 3 };
const podIp = (c: Column) => `10.216.${SUBNET[c]}.1`;
/** The service's three endpoints as seen from that pod: addresses of the one endpoint server. */
const endpointsOf = (c: Column) => [2, 3, 4].map((n) => `10.216.${SUBNET[c]}.${n}`);

const root = fileURLToPath(new URL('../../', import.meta.url));
const flbBin = join(root, 'bin/flb.js');
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const median = (xs: number[]) => sorted(xs)[Math.floor(xs.length / 2)]!;
const r1 = (x: number) => Math.round(10 * x) / 10;
const r3 = (x: number) => Math.round(1000 * x) / 1000;

// Everything set up is undone here, on success, failure or a signal; processes also get
// --pdeathsig KILL so that they die with this one if it is killed.
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
    throw new Error(`${command} is not installed; the eBPF benchmark needs it: ${install}`);
  }
}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

interface Proc {
  name: string;
  child: ChildProcess;
  stderr: string[];
  exited: Promise<number | null>;
}

/**
 * The command line that runs `command` in the pod's namespace, in the eBPF cgroup first when given
 * (the programs see only that cgroup's sockets; the cgroup is joined before `ip netns exec`, which
 * remounts /sys), as `uid` when given, pinned to a core, dying with this process.
 */
function podCommand(ns: Netns, command: string[], o: { core: number; uid?: number; cgroup?: string }): [string, string[]] {
  // pdeathsig is cleared when the UID changes, so it is set by a second setpriv after the first.
  const asUser = o.uid !== undefined ? ['setpriv', `--reuid=${o.uid}`, `--regid=${o.uid}`, '--clear-groups', '--'] : [];
  const inNs = ['ip', 'netns', 'exec', ns.name, ...asUser, 'setpriv', '--pdeathsig', 'KILL', '--', 'taskset', '-c', String(o.core), ...command];
  return o.cgroup ? ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', o.cgroup, ...inNs]] : [inNs[0]!, inNs.slice(1)];
}

function startIn(ns: Netns, name: string, command: string[], o: { core: number; uid?: number; cgroup?: string; env?: NodeJS.ProcessEnv }): Proc {
  const [file, args] = podCommand(ns, command, o);
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  const stderr: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 40) stderr.shift();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: Proc = { name, child, stderr, exited };
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

/** Resolves at the process's first line on stdout ("ready"); the rest of stdout is drained. */
async function untilReady(proc: Proc): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.child.stdout! }).once('line', () => resolve());
    void proc.exited.then(() => reject(failed(proc, 'exited before it was ready')));
  });
  proc.child.stdout!.resume();
}

/** What tcp-load (rate, bulk) and connect-time print; each measure reads its own fields. */
interface LoadResult {
  rate?: number;
  gbitPerSecond?: number;
  p50Us?: number;
  p99Us?: number;
  connectP50Us?: number;
  connectP99Us?: number;
  cycleP50Us?: number;
  cycleP99Us?: number;
  errors?: number;
  lost?: number;
  /** connect-time's failures by kind, and the first one's reason. */
  connectTimeouts?: number;
  connectErrors?: number;
  answerTimeouts?: number;
  answerErrors?: number;
  shortAnswers?: number;
  firstFailure?: string;
}

/** What a killed run left: this benchmark's meshes, cgroups and work directories whose process is gone. */
async function removeStale(cgroupRoot: string): Promise<void> {
  await removeStaleNamespaces();
  const deadRun = (name: string, prefix: string) => {
    const pid = Number(new RegExp(`^${prefix}(\\d+)`).exec(name)?.[1]);
    return pid > 0 && pid !== process.pid && !isAlive(pid);
  };
  const meshes = '/sys/fs/bpf/flb-mesh';
  for (const mesh of existsSync(meshes) ? readdirSync(meshes) : []) if (deadRun(mesh, 'flbbench-')) await unload({ mesh });
  for (const name of readdirSync(cgroupRoot)) {
    if (!deadRun(name, 'flb-bench-ebpf-')) continue;
    try {
      rmdirSync(join(cgroupRoot, name));
    } catch {
      progress(`a killed run's cgroup ${join(cgroupRoot, name)} still holds a process; left`);
    }
  }
  for (const name of readdirSync(tmpdir())) if (deadRun(name, 'flb-bench-ebpf-')) rmSync(join(tmpdir(), name), { recursive: true, force: true });
}

requireRoot('the eBPF benchmark');
if (availableParallelism() < 2) throw new Error('the eBPF benchmark needs two cores: one for the listener or sidecar, one for the load generator and endpoint');
const gcc = await requireCommand('gcc', 'apt-get install gcc libc6-dev (or npm run setup)');
const cgroupRoot = defaultCgroup();
const features = await checkFeatures(cgroupRoot ? { cgroup: cgroupRoot } : {});
if (!features.ok || !cgroupRoot) throw new Error(`eBPF interception cannot run here, so neither can its benchmark: ${features.missing.join('; ')}`);
await removeStale(cgroupRoot);

const work = mkdtempSync(join(tmpdir(), `flb-bench-ebpf-${process.pid}-`));
undo.push(() => rmSync(work, { recursive: true, force: true }));
// The listener and the sidecar run as the proxy UID and read from here.
chmodSync(work, 0o755);

const rows: Record<string, string | number>[] = [];
const setupRows: Record<string, string | number>[] = [];
const verdicts: { goal: string; met: boolean | 'not measurable'; detail: string }[] = [];
const losses: string[] = [];
const extra: Record<string, unknown> = {};
try {
  progress('building the C load generator, endpoint server and redirect listener');
  const bin = (name: string) => join(work, name);
  for (const name of ['tcp-load', 'tcp-endpoint', 'redirect-listener', 'connect-time'])
    await run(gcc, ['-O2', '-Wall', '-o', bin(name), join(root, `bench/lib/${name}.c`)]);

  // --- the eBPF programs, in a cgroup of this run's own -------------------------------------------
  const cgroup = join(cgroupRoot, `flb-bench-ebpf-${process.pid}`);
  mkdirSync(cgroup);
  undo.push(() => rmdirSync(cgroup));
  const loaded = await loadPrograms({ mesh: MESH, cgroup });
  undo.push(() => unload({ mesh: MESH }));
  progress(`programs loaded as mesh ${loaded.mesh} on ${cgroup}`);

  // --- namespaces ---------------------------------------------------------------------------------
  const ep = await createNetns('ebpf-ep');
  undo.push(() => deleteNetns(ep));
  const pods = {} as Record<Column, Netns>;
  for (const c of COLUMNS) {
    const ns = await createNetns(`ebpf-${c}`);
    undo.push(() => deleteNetns(ns));
    pods[c] = ns;
    await link(
      ns,
      [`${podIp(c)}/24`],
      ep,
      endpointsOf(c).map((a) => `${a}/24`),
    );
    // To the VIP on ep: a route, or connect() fails before the nat rules see the packet.
    await ns.exec('ip', ['route', 'add', 'default', 'via', endpointsOf(c)[0]!]);
    // New connections one after another for seconds from one address to one destination: more
    // source ports, reused 1 s after TIME_WAIT, in conntrack too (the nat table loads it).
    await ns.exec('sysctl', ['-q', '-w', 'net.ipv4.ip_local_port_range=20000 65535', 'net.ipv4.tcp_tw_reuse=1']);
  }
  // The VIP is also an address of the endpoint server, so every column in both phases dials the
  // same address: the direct one reaches it, the listener relays to it, the sidecar balances it.
  // Dialling different addresses in the two phases made the second phase's SYNs under REDIRECT
  // meet the first phase's TIME_WAIT sockets on 127.0.0.1:15001 with another timestamp offset
  // (the kernel keys it by the addresses dialled), which PAWS refuses: ~12 ms each, for iptables only.
  await ep.exec('ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  const iptablesSettings = InterceptionSchema.parse({ version: 1, mode: 'iptables', ipv6: 'disabled' });
  const ebpfSettings = InterceptionSchema.parse({ version: 1, mode: 'ebpf', ipv6: 'disabled' });
  await run('ip', ['netns', 'exec', pods.iptables.name, process.execPath, flbBin, 'iptables', 'apply', '--settings', JSON.stringify(iptablesSettings)], {
    env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
  });
  // As the node agent's ADD does it for an eBPF pod: the inbound rule, then the registration.
  await applyInterception(ebpfSettings, { netns: pods.ebpf.path });
  await register({ mesh: MESH, netns: pods.ebpf.path, settings: ebpfSettings });
  for (const c of ['iptables', 'ebpf'] as const)
    await pods[c].exec('sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=1'], { reject: false });
  const cgroupOf = (c: Column) => (c === 'ebpf' ? cgroup : undefined);

  const endpoint = startIn(ep, 'the endpoint server', [bin('tcp-endpoint'), String(ECHO_PORT), String(SOURCE_PORT), String(ONCE_PORT)], { core: LOAD_CORE });
  await untilReady(endpoint);

  /** Runs a load command in the pod (the eBPF column's in the cgroup) on the load core; its JSON line. */
  const loadFrom = async (c: Column, command: string[]): Promise<LoadResult> => {
    const cg = cgroupOf(c);
    const [file, args] = podCommand(pods[c], command, { core: LOAD_CORE, ...(cg ? { cgroup: cg } : {}) });
    const { stdout } = await run(file, args, { timeout: (seconds * 2 + warmup + 30) * 1000, maxBuffer: 1 << 20 });
    return JSON.parse(stdout) as LoadResult;
  };
  const answers = async (c: Column, host: string, port: number) => {
    const cg = cgroupOf(c);
    const [file, args] = podCommand(pods[c], [bin('tcp-load'), 'probe', host, String(port)], { core: LOAD_CORE, ...(cg ? { cgroup: cg } : {}) });
    return await run(file, args).then(
      () => true,
      () => false,
    );
  };
  const untilAnswering = async (c: Column, host: string, port: number, proc?: Proc) => {
    const deadline = Date.now() + 30_000;
    while (!(await answers(c, host, port))) {
      if (proc && proc.child.exitCode !== null) throw failed(proc, 'exited');
      if (Date.now() > deadline) throw new Error(`${c}: nothing answers ${host}:${port} after 30 s${proc ? ` (${proc.name})` : ''}`);
      await sleep(100);
    }
  };

  // The namespace's TCP counters around each new-connections run (TIME_WAIT recycling, dropped
  // SYNs, resets, listen queue overflows), in the JSON: what explains a slow column's tail.
  const tcpCounters = async (ns: Netns): Promise<Map<string, number>> => {
    const counters = new Map<string, number>();
    const lines = (await ns.exec('cat', ['/proc/net/netstat', '/proc/net/snmp'])).stdout.split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i]!.split(/\s+/);
      const values = lines[i + 1]!.split(/\s+/);
      for (let k = 1; k < names.length; k++) counters.set(`${names[0]}${names[k]}`, Number(values[k]));
    }
    return counters;
  };
  const changedCounters = (before: Map<string, number>, after: Map<string, number>) =>
    Object.fromEntries([...after].filter(([name, v]) => v !== (before.get(name) ?? 0)).map(([name, v]) => [name, v - (before.get(name) ?? 0)]));
  const counterDeltas: { phase: string; column: Column; repetition: number; changed: Record<string, number> }[] = [];
  extra.tcpCountersDuringNewConnections = counterDeltas;
  // The TCP sockets by state in the pod and on the endpoint server right after each new-connections
  // run: TIME_WAIT sockets left to meet a reused source port are what a stalled handshake hits.
  const tcpStates = async (ns: Netns): Promise<Record<string, number>> => {
    const counts: Record<string, number> = {};
    for (const line of (await ns.exec('ss', ['-Htan'])).stdout.split('\n')) {
      const state = line.split(/\s+/)[0];
      if (state) counts[state] = (counts[state] ?? 0) + 1;
    }
    return counts;
  };
  const socketStates: { phase: string; column: Column; repetition: number; pod: Record<string, number>; endpoint: Record<string, number> }[] = [];
  extra.tcpStatesAfterNewConnections = socketStates;

  /**
   * Where eBPF's own time goes: one more new-connections run in the eBPF column (not in the table)
   * with the kernel's per-program statistics on (kernel.bpf_stats_enabled, which adds a clock read
   * to every program run, hence the separate run), each program's runs and time per connection.
   * The connection's own handshake runs connect4 and sockops for the app's socket, sockops for the
   * listener's, and the listener's own dial and getsockopt calls run them again.
   */
  async function profilePrograms(): Promise<Record<string, { runsPerConnection: number; nsPerConnection: number; nsPerRun: number }>> {
    const attached = JSON.parse((await run('bpftool', ['cgroup', 'show', cgroup, '--json'])).stdout) as { id: number; name?: string; attach_type: string }[];
    const snapshot = async () => {
      const stats = new Map<number, { runs: number; ns: number }>();
      for (const { id } of attached) {
        const info = JSON.parse((await run('bpftool', ['prog', 'show', 'id', String(id), '--json'])).stdout) as { run_cnt?: number; run_time_ns?: number };
        stats.set(id, { runs: info.run_cnt ?? 0, ns: info.run_time_ns ?? 0 });
      }
      return stats;
    };
    const previous = (await run('sysctl', ['-n', 'kernel.bpf_stats_enabled'])).stdout.trim();
    await run('sysctl', ['-q', '-w', 'kernel.bpf_stats_enabled=1']);
    try {
      progress('listener phase, eBPF programs profiled: one more new-connections run with kernel.bpf_stats_enabled=1');
      const before = await snapshot();
      const conn = await loadFrom('ebpf', [bin('connect-time'), VIP, String(ONCE_PORT), String(seconds), '0', String(CONNECT_TIMEOUT_MS)]);
      const after = await snapshot();
      // Runs during the warm-up-free run divided by its connections (those that failed count too).
      const connections = (conn.rate ?? 0) * seconds + (conn.errors ?? 0);
      return Object.fromEntries(
        attached.map(({ id, name, attach_type }) => {
          const runs = after.get(id)!.runs - before.get(id)!.runs;
          const ns = after.get(id)!.ns - before.get(id)!.ns;
          return [
            `${attach_type} ${name ?? id}`,
            { runsPerConnection: r3(runs / connections), nsPerConnection: r1(ns / connections), nsPerRun: runs ? r1(ns / runs) : 0 },
          ];
        }),
      );
    } finally {
      await run('sysctl', ['-q', '-w', `kernel.bpf_stats_enabled=${previous}`]);
    }
  }

  // --- the data path --------------------------------------------------------------------------------
  type Measure = 'conn' | 'rate' | 'bulk';
  const raw: Record<string, Record<Column, Record<Measure, LoadResult[]>>> = {};
  const phases = [
    { phase: 'listener', title: 'minimal C listener on 15001 (interception alone)' },
    { phase: 'sidecar', title: 'full flb sidecar' },
  ] as const;
  for (const { phase, title } of phases) {
    const proxies: Partial<Record<Column, Proc>> = {};
    if (phase === 'listener') {
      // With nothing on 15001 yet, a redirected connection is refused and a direct one answered:
      // otherwise a column that is not intercepted would be measured as if it were.
      await untilAnswering('direct', VIP, ECHO_PORT);
      for (const c of ['iptables', 'ebpf'] as const)
        if (await answers(c, VIP, ECHO_PORT)) throw new Error(`${c}: ${VIP}:${ECHO_PORT} answered with no listener on 15001: not intercepted`);
    }
    for (const c of ['iptables', 'ebpf'] as const) {
      const cg = cgroupOf(c);
      if (phase === 'listener') {
        proxies[c] = startIn(pods[c], `the ${c} listener`, [bin('redirect-listener'), String(OUTBOUND_PORT)], {
          core: PROXY_CORE,
          uid: PROXY_UID,
          ...(cg ? { cgroup: cg } : {}),
        });
        await untilReady(proxies[c]);
      } else {
        proxies[c] = await startSidecar(c, cg);
      }
      await untilAnswering(c, VIP, ECHO_PORT, proxies[c]);
    }
    const results = (raw[phase] = {} as Record<Column, Record<Measure, LoadResult[]>>);
    for (const c of COLUMNS) results[c] = { conn: [], rate: [], bulk: [] };
    const checkAlive = () => {
      for (const p of [endpoint, ...Object.values(proxies)])
        if (p.child.exitCode !== null || p.child.signalCode !== null) throw failed(p, 'exited during the run');
    };
    for (let rep = 0; rep < reps; rep++) {
      // Each repetition in a different order, so that no column always runs right after another.
      for (let i = 0; i < COLUMNS.length; i++) {
        const c = COLUMNS[(i + rep) % COLUMNS.length]!;
        progress(`${phase}, repetition ${rep + 1}/${reps}, ${c}: new connections, ${fixedRate} req/s, bulk (${seconds} s each)`);
        const tcpLoad = (mode: string, port: number, params: Record<string, number>) => [
          bin('tcp-load'),
          mode,
          VIP,
          String(port),
          ...Object.entries({ warmup, seconds, ...params }).map(([k, v]) => `${k}=${v}`),
        ];
        checkAlive();
        const before = await tcpCounters(pods[c]);
        const conn = await loadFrom(c, [bin('connect-time'), VIP, String(ONCE_PORT), String(seconds), String(warmup), String(CONNECT_TIMEOUT_MS)]);
        results[c].conn.push(conn);
        counterDeltas.push({ phase, column: c, repetition: rep + 1, changed: changedCounters(before, await tcpCounters(pods[c])) });
        socketStates.push({ phase, column: c, repetition: rep + 1, pod: await tcpStates(pods[c]), endpoint: await tcpStates(ep) });
        if (conn.errors) progress(`  ${c}: ${conn.errors} connections failed (first: ${conn.firstFailure}); the row is flagged`);
        results[c].rate.push(await loadFrom(c, tcpLoad('rate', ECHO_PORT, { conns: rateConns, rate: fixedRate, size: 64 })));
        results[c].bulk.push(await loadFrom(c, tcpLoad('bulk', SOURCE_PORT, {})));
        checkAlive();
      }
    }
    if (phase === 'listener') extra.ebpfProgramsPerConnection = await profilePrograms();
    for (const p of Object.values(proxies)) await stopProc(p);

    // The table: each cell the median of the repetitions, with their range (the spread).
    // A new-connections cell some of whose connections failed is flagged: its times are of the
    // connections that succeeded, and a failed one (timed out after CONNECT_TIMEOUT_MS) is not in them.
    const failedConnections = (c: Column) => results[c].conn.reduce((s, r) => s + (r.errors ?? 0), 0);
    const cell = (c: Column, m: Measure, f: (r: LoadResult) => number, round: (x: number) => number) => {
      const xs = results[c][m].map(f);
      const flag = m === 'conn' && failedConnections(c) > 0 ? ` [${failedConnections(c)} FAILED]` : '';
      return `${round(median(xs))} (${round(sorted(xs)[0]!)}-${round(sorted(xs).at(-1)!)})${flag}`;
    };
    const med = (c: Column, m: Measure, f: (r: LoadResult) => number) => median(results[c][m].map(f));
    const added = (c: Column, m: Measure, f: (r: LoadResult) => number) => med(c, m, f) - med('direct', m, f);
    // Times: what each way adds to direct; rates: its share of direct.
    const addRow = (measure: string, m: Measure, f: (r: LoadResult) => number, round: (x: number) => number, kind: 'time' | 'rate') => {
      const versus = (c: Column) =>
        kind === 'time' ? `${added(c, m, f) >= 0 ? '+' : ''}${round(added(c, m, f))}` : `${r3(med(c, m, f) / med('direct', m, f))} x`;
      rows.push({
        phase,
        measure,
        ...Object.fromEntries(COLUMNS.map((c) => [c, cell(c, m, f, round)])),
        'iptables vs direct': versus('iptables'),
        'ebpf vs direct': versus('ebpf'),
      });
    };
    const field = (name: keyof LoadResult) => (r: LoadResult) => Number(r[name] ?? Number.NaN);
    addRow('new connections/s, one at a time', 'conn', field('rate'), Math.round, 'rate');
    addRow('  connect() p50 (us)', 'conn', field('connectP50Us'), r1, 'time');
    addRow('  connect() p99 (us)', 'conn', field('connectP99Us'), r1, 'time');
    addRow('  whole connection p50 (us): connect, ping, answer, close', 'conn', field('cycleP50Us'), r1, 'time');
    addRow('  whole connection p99 (us)', 'conn', field('cycleP99Us'), r1, 'time');
    addRow(`64 B request p50 at ${fixedRate} req/s, ${rateConns} connections (us)`, 'rate', field('p50Us'), r1, 'time');
    addRow(`64 B request p99 at ${fixedRate} req/s (us)`, 'rate', field('p99Us'), r1, 'time');
    addRow('bulk throughput, 1 connection (Gbit/s)', 'bulk', field('gbitPerSecond'), r3, 'rate');
    rows.push({
      phase,
      measure: '  failed connections / lost requests (all repetitions)',
      ...Object.fromEntries(COLUMNS.map((c) => [c, `${failedConnections(c)} / ${results[c].rate.reduce((s, r) => s + (r.lost ?? 0), 0)}`])),
    });
    // A SYN that meets the proxy's TIME_WAIT socket of an earlier connection from the same port
    // is dropped (PAWS) and sent again after a timeout: under REDIRECT the client cannot see that
    // socket when it picks a port (NAT hides it), which is where a slow connect() tail comes from.
    const counted = (c: Column, name: string) =>
      counterDeltas.filter((d) => d.phase === phase && d.column === c).reduce((sum, d) => sum + (d.changed[name] ?? 0), 0);
    rows.push({
      phase,
      measure: '  SYNs sent again / SYNs refused by a TIME_WAIT socket (PAWS), all repetitions',
      ...Object.fromEntries(COLUMNS.map((c) => [c, `${counted(c, 'TcpExt:TCPSynRetrans')} / ${counted(c, 'TcpExt:PAWSTimewait')}`])),
    });

    // Where eBPF does not beat iptables in this phase (lower is better for times, higher for rates).
    const compare = (what: string, m: Measure, f: (r: LoadResult) => number, higherIsBetter: boolean) => {
      const e = med('ebpf', m, f);
      const i = med('iptables', m, f);
      if (higherIsBetter ? e < i : e > i) losses.push(`${title}: ${what}: ebpf ${r3(e)} vs iptables ${r3(i)}`);
    };
    compare('new connections/s', 'conn', field('rate'), true);
    compare('connect() p50 (us)', 'conn', field('connectP50Us'), false);
    compare('connect() p99 (us)', 'conn', field('connectP99Us'), false);
    compare('whole connection p50 (us)', 'conn', field('cycleP50Us'), false);
    compare('whole connection p99 (us)', 'conn', field('cycleP99Us'), false);
    compare(`request p50 at ${fixedRate} req/s (us)`, 'rate', field('p50Us'), false);
    compare(`request p99 at ${fixedRate} req/s (us)`, 'rate', field('p99Us'), false);
    compare('bulk throughput (Gbit/s)', 'bulk', field('gbitPerSecond'), true);

    // The goal on connection set-up: what each adds to connect() over direct, p50. connect()
    // returns once the kernel has completed the handshake, before the listener or sidecar accepts,
    // so it holds the interception's own cost and not the proxy's.
    const addedIptables = added('iptables', 'conn', field('connectP50Us'));
    const addedEbpf = added('ebpf', 'conn', field('connectP50Us'));
    const signed = (x: number) => `${x >= 0 ? '+' : ''}${r1(x)}`;
    const failing = COLUMNS.filter((c) => failedConnections(c) > 0);
    const failures = failing.map((c) => `${c} ${failedConnections(c)} (first: ${results[c].conn.find((r) => r.errors)?.firstFailure})`).join(', ');
    verdicts.push({
      goal: `${title}: eBPF's added connection set-up cost <= 0.5 x iptables' (connect() p50 over direct)`,
      met: addedIptables <= 0 || failing.length ? 'not measurable' : addedEbpf <= 0.5 * addedIptables,
      detail: `ebpf ${signed(addedEbpf)} us, iptables ${signed(addedIptables)} us${addedIptables > 0 ? ` (${r3(addedEbpf / addedIptables)} x)` : ': iptables adds nothing measurable here'}${failing.length ? `; connections failed: ${failures}` : ''}`,
    });
  }
  extra.raw = raw;

  async function startSidecar(c: 'iptables' | 'ebpf', cg: string | undefined): Promise<Proc> {
    // The sidecar's configuration, as local files: one service with a tcp port for each of the
    // endpoint server's behaviours, its three endpoints as this pod reaches them, round-robin.
    const cfg = join(work, `cfg-${c}`);
    const state = join(work, `state-${c}`);
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
        endpoints: endpointsOf(c).map((address) => ({ address, port: ECHO_PORT, ports: { source: SOURCE_PORT, once: ONCE_PORT } })),
      }),
    );
    for (const dir of [cfg, join(cfg, 'services')]) chmodSync(dir, 0o755);
    for (const file of ['mesh.json', 'sidecar.json', 'services/echo.static.json']) chmodSync(join(cfg, file), 0o644);
    mkdirSync(state);
    chownSync(state, PROXY_UID, PROXY_UID);
    const proc = startIn(
      pods[c],
      `the ${c} flb sidecar`,
      [process.execPath, flbBin, 'sidecar', '--id', 'vm.bench', '--config-dir', cfg, '--state-dir', state, '--drain', '0s'],
      {
        core: PROXY_CORE,
        uid: PROXY_UID,
        ...(cg ? { cgroup: cg } : {}),
        // As the injector runs it: the mesh's default NODE_OPTIONS for the sidecar container.
        env: { FLB_LOG_LEVEL: 'warn', NODE_OPTIONS: SidecarTemplateSchema.parse({}).nodeOptions },
      },
    );
    proc.child.stdout!.resume();
    await run('ip', ['netns', 'exec', pods[c].name, process.execPath, flbBin, 'sidecar', 'wait-ready', '--timeout', '30s'], {
      env: { ...process.env, FLB_LOG_LEVEL: 'warn' },
    }).catch(() => {
      throw failed(proc, 'did not become ready in 30 s');
    });
    return proc;
  }

  // --- per-pod setup --------------------------------------------------------------------------------
  // Each run a fresh namespace, the three ways alternating: iptables-restore of the iptables pod's
  // rules (the pod's whole nat document, spawned with `ip netns exec` as bench:interception does),
  // the registration alone (in-process, as the agent's EbpfNode.register), and the agent's whole
  // eBPF ADD (applyInterception of the inbound rule, then the registration).
  const backend: Backend = await detectBackend();
  const backends: Backend[] = ['legacy', 'nft'];
  const document = printDocument(buildRules(iptablesSettings, 4));
  const inboundDocument = printDocument(buildRules(ebpfSettings, 4));
  // As the node agent holds it: the fresh-namespace backend is detected at its first pod and kept.
  const agentNode = new EbpfNode({ mesh: MESH, cgroup, log: createLogger('bench-ebpf', 'warn') });
  const times: Record<string, number[]> = {
    'iptables-restore legacy': [],
    'iptables-restore nft': [],
    'ebpf register': [],
    'ebpf whole (agent: fresh namespace, no live read)': [],
    'ebpf whole, with the live read (applyInterception, the agent before)': [],
    [`ebpf inbound rule alone, iptables-restore ${backend}`]: [],
  };
  for (let i = 0; i < setupRuns; i++) {
    if (i % 5 === 0) progress(`per-pod setup: runs ${i + 1}-${Math.min(setupRuns, i + 5)} of ${setupRuns}`);
    const ns = await createNetns('ebpf-setup');
    try {
      for (const b of backends) {
        // The nat table exists in a real pod before interception is set up (bench:interception does the same).
        await ns.exec(`iptables-${b}`, ['-t', 'nat', '-N', 'FLBT_PROBE']);
        await ns.exec(`iptables-${b}`, ['-t', 'nat', '-X', 'FLBT_PROBE']);
      }
      const steps: [string, () => Promise<unknown>, () => Promise<unknown>][] = [
        ...backends.map(
          (b) =>
            [
              `iptables-restore ${b}`,
              () => execa('ip', ['netns', 'exec', ns.name, `iptables-${b}-restore`, '--noflush'], { input: document }),
              () => ns.exec(`iptables-${b}-restore`, [], { input: '*nat\nCOMMIT\n' }),
            ] as [string, () => Promise<unknown>, () => Promise<unknown>],
        ),
        ['ebpf register', () => register({ mesh: MESH, netns: ns.path, settings: ebpfSettings }), async () => unregister({ mesh: MESH, netns: ns.path })],
        // The floor of the hybrid's inbound rule: its document restored, without applyInterception's reads of the live rules.
        [
          `ebpf inbound rule alone, iptables-restore ${backend}`,
          () => execa('ip', ['netns', 'exec', ns.name, `iptables-${backend}-restore`, '--noflush'], { input: inboundDocument }),
          () => ns.exec(`iptables-${backend}-restore`, [], { input: '*nat\nCOMMIT\n' }),
        ],
        [
          'ebpf whole (agent: fresh namespace, no live read)',
          async () => {
            await agentNode.applyInboundToFresh(ebpfSettings, ns.path);
            await agentNode.register(ns.path, ebpfSettings);
          },
          async () => {
            unregister({ mesh: MESH, netns: ns.path });
            for (const b of backends) await ns.exec(`iptables-${b}-restore`, [], { input: '*nat\nCOMMIT\n' });
          },
        ],
        [
          'ebpf whole, with the live read (applyInterception, the agent before)',
          async () => {
            await applyInterception(ebpfSettings, { netns: ns.path });
            await register({ mesh: MESH, netns: ns.path, settings: ebpfSettings });
          },
          async () => {
            unregister({ mesh: MESH, netns: ns.path });
            // Whichever backend applyInterception chose for this namespace.
            for (const b of backends) await ns.exec(`iptables-${b}-restore`, [], { input: '*nat\nCOMMIT\n' });
          },
        ],
      ];
      // Rotated each run, so that no way always goes first into a fresh namespace.
      for (let k = 0; k < steps.length; k++) {
        const [name, step, undoStep] = steps[(k + i) % steps.length]!;
        const t = performance.now();
        await step();
        times[name]!.push(performance.now() - t);
        await undoStep();
      }
    } finally {
      await deleteNetns(ns);
    }
  }
  const spread = (xs: number[]) => `${r3(median(xs))} (${r3(sorted(xs)[0]!)}-${r3(sorted(xs).at(-1)!)})`;
  for (const [name, xs] of Object.entries(times)) setupRows.push({ 'per-pod setup': name, 'median ms (min-max)': spread(xs), runs: xs.length });
  const restoreMs = median(times[`iptables-restore ${backend}`]!);
  const registerMs = median(times['ebpf register']!);
  const wholeMs = median(times['ebpf whole (agent: fresh namespace, no live read)']!);
  verdicts.push({
    goal: `per-pod setup: eBPF registration >= 10 x faster than iptables-restore (${backend}, this host's backend)`,
    met: restoreMs / registerMs >= 10,
    detail: `register ${r3(registerMs)} ms, iptables-restore ${r3(restoreMs)} ms: ${r1(restoreMs / registerMs)} x`,
  });
  verdicts.push({
    goal: 'per-pod setup as the agent does it in eBPF mode (registration + the inbound rule) >= 10 x faster than iptables-restore',
    met: restoreMs / wholeMs >= 10,
    detail: `whole ${r3(wholeMs)} ms (the inbound rule is an iptables-restore run), iptables-restore ${r3(restoreMs)} ms: ${r1(restoreMs / wholeMs)} x`,
  });
  if (wholeMs > restoreMs)
    losses.push(
      `per-pod setup: eBPF mode's whole setup (${r3(wholeMs)} ms) is slower than iptables-restore alone (${r3(restoreMs)} ms): the hybrid's inbound rule costs an iptables run`,
    );
  extra.setup = { runs: setupRuns, backend, times };

  const revision = await run('git', ['-C', root, 'describe', '--always', '--dirty']).then(
    (r) => r.stdout.trim(),
    () => 'unknown',
  );
  const loadAverage = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  Object.assign(extra, {
    small,
    reps,
    seconds,
    warmup,
    fixedRate,
    rateConns,
    environment: { cores: availableParallelism(), kernel: release(), node: process.version, revision, loadAverageAtEnd: loadAverage },
    placement: {
      proxy: `core ${PROXY_CORE}: bench/lib/redirect-listener.c (C, one epoll thread, read/write relay) or flb sidecar, as UID ${PROXY_UID}`,
      loadGenerator: `core ${LOAD_CORE}: bench/lib/tcp-load.c in the pod namespace (the eBPF column's in the run's cgroup)`,
      endpoint: `core ${LOAD_CORE}: bench/lib/tcp-endpoint.c in the ep namespace`,
      cgroup,
    },
    goals: verdicts,
    ebpfDoesNotWin: losses,
  });
} finally {
  await cleanUp();
}

function printTable(title: string, table: Record<string, string | number>[]): void {
  const columns = Object.keys(table[0] ?? {});
  const widths = columns.map((c) => Math.max(c.length, ...table.map((r) => String(r[c] ?? '').length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i]!)).join('  ');
  process.stdout.write(
    `\n${title}\n${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${table.map((r) => line(columns.map((c) => String(r[c] ?? '')))).join('\n')}\n`,
  );
}
const file = report(
  'ebpf',
  `eBPF interception vs iptables REDIRECT vs direct; median of ${reps} alternating repetitions (min-max); listener/sidecar on core ${PROXY_CORE}, load and endpoint on core ${LOAD_CORE}${small ? '; --small: not for judging' : ''}`,
  rows,
  { setup: setupRows, ...extra },
);
printTable(`Per-pod setup, ${setupRuns} fresh namespaces, the ways alternating`, setupRows);
if (extra.ebpfProgramsPerConnection) {
  const profile = extra.ebpfProgramsPerConnection as Record<string, { runsPerConnection: number; nsPerConnection: number; nsPerRun: number }>;
  printTable(
    'eBPF programs per new connection (listener phase, kernel.bpf_stats_enabled, one extra run)',
    Object.entries(profile).map(([program, p]) => ({
      program,
      'runs per connection': p.runsPerConnection,
      'ns per connection': p.nsPerConnection,
      'ns per run': p.nsPerRun,
    })),
  );
}
process.stdout.write('\nGoals\n');
for (const v of verdicts) process.stdout.write(`  ${v.met === true ? 'MET    ' : v.met === false ? 'NOT MET' : 'N/A    '}  ${v.goal}: ${v.detail}\n`);
process.stdout.write(`\nWhere eBPF does not win${losses.length ? '' : ': nowhere in this run'}\n`);
for (const l of losses) process.stdout.write(`  - ${l}\n`);
progress(`results in ${file}`);
