// Benchmark of pod start (issue 13): from pod creation to Ready for a pod the injector meshes
// against a plain pod, same run, on the development environment (real control plane, node
// simulator, the repo, registry bridge and injector as processes). Pods of the two kinds are
// created alternately, open loop, at --rate pods/s in all (half of them injected), --pods of each;
// each pod is deleted (grace 0) once it is Ready, as a rollout replaces pods, so the node does not
// accumulate running pods over the run. Both kinds run the demo echo app with a readiness probe
// every second; injected pods get the init container (flb-init, iptables), the native sidecar and
// the rewritten probe.
//
// Where the time goes comes from a watch on the pods: the first moment each step is seen (pod IP,
// the init container terminated, the sidecar running, the sidecar started, the app running,
// Ready), to the millisecond. The API's own timestamps (startedAt, lastTransitionTime) have a
// resolution of one second, too coarse for a goal under a second: they are kept in the JSON as a
// cross-check. Inside the sidecar, its log says when it listened and when it had its configuration.
// Where the cores went: the CPU time of each server, of this process (the node simulator runs in
// it) and of the containers (its children) over the run, and the sidecar's and app's CPU time
// when their pod was Ready. The schedule is kept by this process's event loop, shared with the
// simulator: the rate achieved is printed beside the rate asked.
// Goal (issue): injection adds under 1 s at p99.
// Needs root. Usage: npm run bench:pod-start [-- --pods 50 --rate 5 --rounds 3]
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { CoreV1Api, Watch, type V1ContainerStatus, type V1Pod } from '@kubernetes/client-node';
import { INIT_CONTAINER_NAME, INJECT_LABEL, NAMESPACE_INJECT_ENABLED, REPO_CA_CONFIGMAP, SIDECAR_CONTAINER_NAME } from '../common/contract/index.js';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { KeepAliveKubeConfig } from '../devenv/keep-alive-kubeconfig.js';
import { startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { DEMO_IMAGE } from '../devenv/node-simulator/images.js';
import { report } from './lib/report.js';

const flag = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) || fallback : fallback;
};
const podsPerKind = flag('pods', 50);
const rate = flag('rate', 5);
/**
 * Rounds of --pods of each kind, a pause between them. A p99 of 50 is the slowest pod: one round's
 * added p99 is the difference of two maxima and swung from +777 to +1,490 ms between quiet runs of
 * the same code. The goal is judged on the p99 of all rounds' pods together; each round's is shown.
 */
const rounds = flag('rounds', 3);
const ROUND_PAUSE_MS = 5000;
const GOAL_MS = 1000;
const LABEL = 'flb-bench';
const KINDS = ['injected', 'plain'] as const;
type Kind = (typeof KINDS)[number];
const NAMESPACES: Record<Kind, string> = { injected: 'bench-injected', plain: 'bench-plain' };

const log = createLogger('bench', 'warn');
const progress = (m: string) => process.stderr.write(`bench: ${m}\n`);
const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? Number.NaN;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const signed = (ms: number) => `${ms < 0 ? '-' : '+'}${Math.abs(Math.round(ms))} ms`;

/** The first moment (epoch ms) each step of a pod's start was seen. */
interface Seen {
  created: number;
  createReturned?: number;
  sandbox?: number;
  initRunning?: number;
  initDone?: number;
  sidecarRunning?: number;
  sidecarStarted?: number;
  appRunning?: number;
  ready?: number;
  /** The sidecar started before flb-init, which applied the rules and then waited for it (the injector's order since 2026-12). */
  sidecarFirst?: boolean;
  /** From flb-init's own log: the rules in place, when it then waits for the sidecar. */
  initRulesApplied?: number;
  /** From the sidecar's own log. */
  sidecarListening?: number;
  sidecarConfigured?: number;
  /** The sidecar asked the repo before the bridge had published its codebase, and asked again later. */
  sidecarWaitedForPublish?: boolean;
  /** CPU time (ms) the sidecar and the app had used when the pod was Ready. */
  sidecarCpuMs?: number;
  appCpuMs?: number;
  /** The API's timestamps (1 s resolution), as a cross-check. */
  apiCreateToReadyS?: number;
}

interface Tracked {
  kind: Kind;
  name: string;
  seen: Seen;
  /** Seen Ready and measured (then deleted). */
  finished: boolean;
}

const status = (pod: V1Pod, name: string): V1ContainerStatus | undefined =>
  [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].find((c) => c.name === name);

function podSpec(kind: Kind, name: string): V1Pod {
  return {
    metadata: { name, labels: { [LABEL]: 'pod-start', kind } },
    spec: {
      terminationGracePeriodSeconds: 0,
      containers: [
        {
          name: 'app',
          image: DEMO_IMAGE,
          args: ['echo'],
          ports: [{ name: 'http', containerPort: 8080 }],
          // The echo app answers with it; the benchmark finds the app's process by it.
          env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
          readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 1 },
        },
      ],
    },
  };
}

const TICK_MS = 10; // USER_HZ is 100 on Linux
/** From a /proc/<pid>/stat text, ms: utime + stime, or with `reaped` cutime + cstime (its reaped children's). */
function statCpuMs(stat: string, reaped = false): number {
  const fields = stat.split(') ')[1]!.split(' ');
  const at = reaped ? 13 : 11;
  return (Number(fields[at]) + Number(fields[at + 1])) * TICK_MS;
}
/** utime + stime of a process, ms. */
const cpuMs = (pid: number | string) => statCpuMs(readFileSync(`/proc/${pid}/stat`, 'utf8'));
/** The same for the children this process has reaped (the pods' containers, which are its children). */
const reapedChildrenCpuMs = () => statCpuMs(readFileSync('/proc/self/stat', 'utf8'), true);

/**
 * CPU the pod's sidecar and app processes have used so far, by the process ids the node simulator
 * started them with (nsenter, unshare, sh and setpriv each exec the next). Read asynchronously:
 * the simulator shares this event loop (reading every child's cmdline and environ for each pod,
 * as this did before, held it about a second per 100 pods).
 */
async function containerCpu(env: DevEnvironment, pod: V1Pod): Promise<Pick<Seen, 'sidecarCpuMs' | 'appCpuMs'>> {
  const found: Pick<Seen, 'sidecarCpuMs' | 'appCpuMs'> = {};
  for (const [key, container] of [
    ['appCpuMs', 'app'],
    ['sidecarCpuMs', SIDECAR_CONTAINER_NAME],
  ] as const) {
    const pid = env.simulator.containerPid(pod, container);
    if (pid === undefined) continue;
    try {
      found[key] = statCpuMs(await readFile(`/proc/${pid}/stat`, 'utf8'));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The times (epoch ms) of a container's JSON log lines, by message, the first of each. */
function logTimes(env: DevEnvironment, pod: V1Pod, container: string): Map<string, number> {
  const file = env.simulator.logFile(pod, container);
  const times = new Map<string, number>();
  if (!file) return times;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { time?: number; msg?: string };
      if (entry.msg !== undefined && entry.time !== undefined && !times.has(entry.msg)) times.set(entry.msg, entry.time);
    } catch {
      // a line cut by the reader: the next read has it whole
    }
  }
  return times;
}

/** From the containers' logs: when the sidecar listened and first had a configuration, when flb-init had applied the rules. */
function containerLogTimes(
  env: DevEnvironment,
  pod: V1Pod,
): Pick<Seen, 'sidecarListening' | 'sidecarConfigured' | 'sidecarWaitedForPublish' | 'initRulesApplied'> {
  const sidecar = logTimes(env, pod, SIDECAR_CONTAINER_NAME);
  const init = logTimes(env, pod, INIT_CONTAINER_NAME);
  const rules = init.get('rules applied') ?? init.get('rules already in place');
  return {
    ...(sidecar.has('sidecar started') ? { sidecarListening: sidecar.get('sidecar started')! } : {}),
    ...(sidecar.has('ready') ? { sidecarConfigured: sidecar.get('ready')! } : {}),
    ...([...sidecar.keys()].some((m) => m.startsWith('codebase not published yet')) ? { sidecarWaitedForPublish: true } : {}),
    ...(rules !== undefined ? { initRulesApplied: rules } : {}),
  };
}

/** Records what this version of the pod shows for the first time; true once it is Ready. */
function observe(tracked: Tracked, pod: V1Pod, at: number): boolean {
  const seen = tracked.seen;
  seen.sidecarFirst ??= pod.spec?.initContainers?.[0]?.name === SIDECAR_CONTAINER_NAME;
  if (pod.status?.podIP) seen.sandbox ??= at;
  const init = status(pod, INIT_CONTAINER_NAME);
  if (init?.state?.running) seen.initRunning ??= at;
  if (init?.state?.terminated?.exitCode === 0) seen.initDone ??= at;
  const sidecar = status(pod, SIDECAR_CONTAINER_NAME);
  if (sidecar?.state?.running) seen.sidecarRunning ??= at;
  if (sidecar?.started) seen.sidecarStarted ??= at;
  if (status(pod, 'app')?.state?.running) seen.appRunning ??= at;
  const ready = pod.status?.conditions?.find((c) => c.type === 'Ready' && c.status === 'True');
  if (ready && !seen.ready) {
    seen.ready = at;
    const created = pod.metadata?.creationTimestamp;
    if (created && ready.lastTransitionTime) seen.apiCreateToReadyS = (new Date(ready.lastTransitionTime).getTime() - new Date(created).getTime()) / 1000;
    return true;
  }
  return false;
}

/** Steps seen in the same status write count as taking no time: a later step fills an earlier unseen one. */
function filled(seen: Seen, kind: Kind): Required<Pick<Seen, 'created' | 'sandbox' | 'appRunning' | 'ready'>> & Seen {
  type Step = 'sandbox' | 'initRunning' | 'initDone' | 'sidecarRunning' | 'sidecarStarted' | 'appRunning' | 'ready';
  const order: Step[] =
    kind === 'plain'
      ? ['sandbox', 'appRunning', 'ready']
      : seen.sidecarFirst
        ? ['sandbox', 'sidecarRunning', 'sidecarStarted', 'initRunning', 'initDone', 'appRunning', 'ready']
        : ['sandbox', 'initRunning', 'initDone', 'sidecarRunning', 'sidecarStarted', 'appRunning', 'ready'];
  const out: Seen = { ...seen };
  for (let i = order.length - 2; i >= 0; i--) out[order[i]!] ??= out[order[i + 1]!];
  return out as ReturnType<typeof filled>;
}

/** Each step's duration in ms, in order; the steps of the two kinds line up by name. */
function steps(t: Tracked): Record<string, number> {
  const s = filled(t.seen, t.kind);
  const common = { 'create call (admission)': s.createReturned! - s.created, 'to pod IP (bind, sandbox)': s.sandbox - s.created };
  if (t.kind === 'plain') {
    return { ...common, 'volumes, app start': s.appRunning - s.sandbox, 'app readiness': s.ready - s.appRunning, total: s.ready - s.created };
  }
  const listening = s.sidecarListening ?? s.sidecarRunning!;
  const configured = s.sidecarConfigured ?? listening;
  if (s.sidecarFirst) {
    // The critical path: the sidecar, flb-init (the rules, then waiting for the sidecar), the app.
    // The sidecar's own steps run beside flb-init: they add only where flb-init waits for them.
    const rulesApplied = Math.min(Math.max(s.initRulesApplied ?? s.initDone!, s.initRunning!), s.initDone!);
    return {
      ...common,
      'volumes (to sidecar running)': s.sidecarRunning! - s.sandbox,
      // The sidecar's container start (its namespaces and mounts), then flb-init's spawn and the status write.
      'sidecar running -> init running': s.initRunning! - s.sidecarRunning!,
      'init: rules applied': rulesApplied - s.initRunning!,
      'init: waits for the sidecar': s.initDone! - rulesApplied,
      'app start (after init)': s.appRunning - s.initDone!,
      'app readiness': s.ready - s.appRunning,
      total: s.ready - s.created,
      '(beside init) sidecar: to listening': listening - s.sidecarRunning!,
      '(beside init) sidecar: to configured': configured - listening,
    };
  }
  return {
    ...common,
    'volumes (to init container running)': s.initRunning! - s.sandbox,
    'init container (flb-init)': s.initDone! - s.initRunning!,
    'init done -> sidecar running': s.sidecarRunning! - s.initDone!,
    'sidecar: to listening': listening - s.sidecarRunning!,
    'sidecar: to configured': configured - listening,
    // The postStart hook (wait-ready) returning, the startup probe's first run, the status write.
    'sidecar: to started (hook, startup probe)': s.sidecarStarted! - configured,
    'app start (after the sidecar)': s.appRunning - s.sidecarStarted!,
    'app readiness': s.ready - s.appRunning,
    total: s.ready - s.created,
  };
}

let env: DevEnvironment | undefined;
let mesh: MeshComponents | undefined;
let watch: AbortController | undefined;
let kubeConfig: KeepAliveKubeConfig | undefined;
try {
  env = await startDevEnvironment({ log, onProgress: progress });
  mesh = await startMeshComponents(env, { logLevel: 'warn', onProgress: progress });
  kubeConfig = KeepAliveKubeConfig.from(env.plane.kubeConfig);
  const core = kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NAMESPACES.injected, labels: { [INJECT_LABEL]: NAMESPACE_INJECT_ENABLED } } } });
  await core.createNamespace({ body: { metadata: { name: NAMESPACES.plain } } });
  const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(200);
    }
  };
  for (const namespace of Object.values(NAMESPACES)) {
    await until(`the default ServiceAccount of ${namespace}`, async () => Boolean(await core.readNamespacedServiceAccount({ name: 'default', namespace })));
  }
  // The bridge copies the repo's CA into injected namespaces; a pod made before would wait for its volume.
  await until('the repo CA ConfigMap', async () => Boolean(await core.readNamespacedConfigMap({ name: REPO_CA_CONFIGMAP, namespace: NAMESPACES.injected })));

  const tracked = new Map<string, Tracked>();
  let readyCount = 0;
  let onReady = () => {};
  const onEvent = (type: string, pod: V1Pod) => {
    const at = Date.now();
    const t = tracked.get(`${pod.metadata?.namespace}/${pod.metadata?.name}`);
    if (!t || type === 'DELETED' || t.finished) return;
    if (!observe(t, pod, at)) return;
    t.finished = true;
    if (t.kind === 'injected') Object.assign(t.seen, containerLogTimes(env!, pod));
    void containerCpu(env!, pod)
      .then((cpu) => Object.assign(t.seen, cpu))
      .catch(() => undefined)
      .finally(() => {
        readyCount++;
        onReady();
        void core.deleteNamespacedPod({ name: t.name, namespace: NAMESPACES[t.kind], gracePeriodSeconds: 0 }).catch(() => undefined);
      });
  };
  watch = await new Watch(env.plane.kubeConfig).watch('/api/v1/pods', { labelSelector: `${LABEL}=pod-start` }, onEvent, (error: unknown) => {
    if (error && readyCount < tracked.size) progress(`the pod watch ended early: ${String(error)}`);
  });

  const create = (kind: Kind, name: string) => {
    const t: Tracked = { kind, name, seen: { created: Date.now() }, finished: false };
    tracked.set(`${NAMESPACES[kind]}/${name}`, t);
    return core.createNamespacedPod({ namespace: NAMESPACES[kind], body: podSpec(kind, name) }).then(() => {
      t.seen.createReturned = Date.now();
    });
  };
  const allReady = (count: number, timeoutMs: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      onReady = () => {
        if (readyCount >= count) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      onReady();
    });

  // Warm-up, not counted: the first pods pay for cold file caches and the components' first requests.
  progress('warm-up: one pod of each kind');
  await Promise.all(KINDS.map((kind) => create(kind, `warmup-${kind}`)));
  if (!(await allReady(2, 120_000))) throw new Error('the warm-up pods did not become Ready in 2 minutes');
  await sleep(2000);
  const warmup = new Set(tracked.keys());

  const loadBefore = loadavg();
  // Who used the cores while the pods started: the servers, this process (the node simulator), the containers.
  const servers = [...env.plane.processes, ...mesh.processes()];
  const serverCpuBefore = servers.map((p) => cpuMs(p.pid));
  const selfCpuBefore = process.cpuUsage();
  const containersCpuBefore = reapedChildrenCpuMs();
  const intervalMs = 1000 / rate;
  const started = Date.now();
  const achievedRates: number[] = [];
  const roundOf = new Map<Tracked, number>();
  for (let round = 0; round < rounds; round++) {
    if (round > 0) await sleep(ROUND_PAUSE_MS);
    progress(`round ${round + 1} of ${rounds}: ${podsPerKind} pods of each kind, alternately, ${rate} pods/s in all`);
    const roundStarted = Date.now();
    const creations: Promise<void>[] = [];
    for (let i = 0; i < podsPerKind * 2; i++) {
      await sleep(roundStarted + i * intervalMs - Date.now());
      const kind = KINDS[i % 2]!;
      const name = `${kind}-${round}-${Math.floor(i / 2)}`;
      creations.push(create(kind, name).catch((error: unknown) => void progress(`creating a pod failed: ${String(error)}`)));
      roundOf.set(tracked.get(`${NAMESPACES[kind]}/${name}`)!, round);
    }
    achievedRates.push((podsPerKind * 2 - 1) / ((Date.now() - roundStarted) / 1000));
    await Promise.all(creations);
    const allBecameReady = await allReady(2 + (round + 1) * podsPerKind * 2, 180_000);
    if (!allBecameReady) progress(`only ${readyCount - 2} of ${(round + 1) * podsPerKind * 2} pods became Ready within 3 minutes`);
  }

  // The last pods' containers are reaped once killed: a moment for their exit to be counted.
  await sleep(3000);
  const phaseSeconds = (Date.now() - started) / 1000;
  const selfCpu = process.cpuUsage(selfCpuBefore);
  const cpuRows: Record<string, string | number>[] = [
    ...servers.map((p, i) => ({ process: p.name, 'CPU s': (cpuMs(p.pid) - serverCpuBefore[i]!) / 1000 })),
    { process: 'node simulator and this benchmark', 'CPU s': (selfCpu.user + selfCpu.system) / 1e6 },
    { process: "the pods' containers (ended)", 'CPU s': (reapedChildrenCpuMs() - containersCpuBefore) / 1000 },
  ];
  for (const row of cpuRows) row['cores'] = (row['CPU s'] as number) / phaseSeconds;

  const measured = [...tracked.entries()].filter(([key, t]) => !warmup.has(key) && t.seen.ready).map(([, t]) => t);
  const rows: Record<string, string | number>[] = [];
  const byKind = Object.fromEntries(KINDS.map((kind) => [kind, measured.filter((t) => t.kind === kind).map(steps)])) as Record<Kind, Record<string, number>[]>;
  const stepNames = [...new Set(KINDS.flatMap((kind) => byKind[kind].flatMap((s) => Object.keys(s))))];
  for (const step of stepNames) {
    const row: Record<string, string | number> = { step };
    for (const kind of KINDS) {
      const values = byKind[kind].map((s) => s[step]).filter((v): v is number => v !== undefined);
      row[`${kind} p50 ms`] = values.length ? Math.round(q(values, 0.5)) : '';
      row[`${kind} p99 ms`] = values.length ? Math.round(q(values, 0.99)) : '';
    }
    rows.push(row);
  }
  for (const [label, key] of [
    ['sidecar CPU to Ready', 'sidecarCpuMs'],
    ['app CPU to Ready', 'appCpuMs'],
  ] as const) {
    const row: Record<string, string | number> = { step: label };
    for (const kind of KINDS) {
      const values = measured.filter((t) => t.kind === kind && t.seen[key] !== undefined).map((t) => t.seen[key]!);
      row[`${kind} p50 ms`] = values.length ? q(values, 0.5) : '';
      row[`${kind} p99 ms`] = values.length ? q(values, 0.99) : '';
    }
    rows.push(row);
  }
  const totalsOf = (pods: Tracked[], kind: Kind) => pods.filter((t) => t.kind === kind).map((t) => steps(t).total!);
  const addedOver = (pods: Tracked[]) => ({
    p50: q(totalsOf(pods, 'injected'), 0.5) - q(totalsOf(pods, 'plain'), 0.5),
    p99: q(totalsOf(pods, 'injected'), 0.99) - q(totalsOf(pods, 'plain'), 0.99),
  });
  const added = addedOver(measured);
  const addedByRound = Array.from({ length: rounds }, (_, round) => addedOver(measured.filter((t) => roundOf.get(t) === round)));
  const totalRow = rows.find((r) => r.step === 'total')!;
  totalRow['added p50 ms'] = Math.round(added.p50);
  totalRow['added p99 ms'] = Math.round(added.p99);
  const apiSeconds = (kind: Kind) => measured.filter((t) => t.kind === kind && t.seen.apiCreateToReadyS !== undefined).map((t) => t.seen.apiCreateToReadyS!);
  const file = report(
    'pod-start',
    `Pod start, creation to Ready: ${measured.filter((t) => t.kind === 'injected').length} injected and ${measured.filter((t) => t.kind === 'plain').length} plain pods in ${rounds} rounds, alternately at ${rate} pods/s (${achievedRates.map((r) => r.toFixed(1)).join(', ')} achieved; load average ${loadBefore.map((l) => l.toFixed(1)).join(' ')} before)`,
    rows,
    {
      podsPerKind,
      rounds,
      rate,
      achievedRates,
      // Other work on the machine shows here: the pods' processes compete with it for the cores.
      loadAverage: { before: loadBefore, after: loadavg() },
      cpu: { phaseSeconds, byProcess: cpuRows },
      notReady: rounds * podsPerKind * 2 - measured.length,
      sidecarsThatWaitedForTheirCodebase: measured.filter((t) => t.seen.sidecarWaitedForPublish).length,
      addedMs: added,
      addedMsByRound: addedByRound,
      goalMs: GOAL_MS,
      apiTimestampsCreateToReadyS: Object.fromEntries(KINDS.map((kind) => [kind, { p50: q(apiSeconds(kind), 0.5), p99: q(apiSeconds(kind), 0.99) }])),
      pods: measured.map((t) => ({ kind: t.kind, name: t.name, round: roundOf.get(t)! + 1, seen: t.seen })),
    },
  );
  report('pod-start-cpu', `CPU used while the pods started (${phaseSeconds.toFixed(0)} s; ${availableParallelism()} cores)`, cpuRows);
  process.stdout.write(
    `injection adds ${Math.round(added.p50)} ms at p50, ${Math.round(added.p99)} ms at p99 over the ${rounds} rounds' pods (by round: ${addedByRound
      .map((a) => `${signed(a.p50)} p50, ${signed(a.p99)} p99`)
      .join('; ')}): goal (p99 < ${GOAL_MS} ms) ${added.p99 < GOAL_MS ? 'met' : 'missed'}\n`,
  );
  progress(`results in ${file}`);
} finally {
  watch?.abort();
  kubeConfig?.destroy();
  await mesh?.stop();
  await env?.stop();
}
