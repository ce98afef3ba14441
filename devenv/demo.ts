// The demo `npm start` runs (`flb demo`): the mesh at work on the development environment, with no
// cluster and no registry. A labelled namespace with a client and a three-replica echo server, all
// injected and run for real; the client calls the server by name (`http://echo/`) through its
// sidecar, and the demo shows how the calls spread; then one server pod is deleted and the calls
// move to the others with none failing. A live table until Ctrl-C, then everything is removed.
import { readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { startDevEnvironment, type DevEnvironment } from './environment.js';
import { startMeshComponents, type MeshComponents } from './mesh.js';
import { demoDeployment, isPodReady, type ClientStats } from './apps/workloads.js';

export const DEMO_NAMESPACE = 'demo';

export interface DemoOptions {
  /** The live table and the lines a person reads. */
  out: NodeJS.WriteStream | NodeJS.WritableStream;
  /** Progress lines while it starts. */
  progress: (line: string) => void;
  /** Redraw the table in place (a terminal) or print it again each time (a pipe, a file). */
  interactive: boolean;
  /** Deleted after this long: one echo pod, to show traffic moving without a failed call. */
  deletePodAfterMs?: number;
  refreshMs?: number;
  kubeconfigOut?: string;
  /** The components' and demo's logs go here (default: inside the demo's folder, removed at the end). */
  logFile?: string;
}

function httpJson<T>(url: string, method = 'GET'): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as T);
        } catch (error) {
          reject(error as Error);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

export class Demo {
  private env?: DevEnvironment;
  private mesh?: MeshComponents;
  private core?: CoreV1Api;
  private readonly started = Date.now();
  private readonly events: string[] = [];
  private timer?: NodeJS.Timeout;
  private deleter?: NodeJS.Timeout;
  private lastLines = 0;
  private readonly logFile: string;

  constructor(private readonly options: DemoOptions) {
    this.logFile = options.logFile ?? join(tmpdir(), `flb-demo-${process.pid}.log`);
  }

  private stopping = false;
  private starting?: Promise<void>;

  /** A progress line; also where a Ctrl-C during start-up stops it (what started so far cleans up). */
  private step(message: string): void {
    if (this.stopping) throw new Error('the demo was stopped while starting');
    this.options.progress(`[${((Date.now() - this.started) / 1000).toFixed(1).padStart(5)}s] ${message}`);
  }

  start(): Promise<void> {
    this.starting = this.run();
    return this.starting;
  }

  private async run(): Promise<void> {
    const log = pino({ base: { component: 'demo' }, level: 'info' }, pino.destination({ dest: this.logFile, mkdir: true, sync: true }));
    this.step(`logs of the demo and the node simulator: ${this.logFile}${this.options.logFile ? '' : ' (removed at Ctrl-C; keep them with --log-file)'}`);
    this.step(
      'starting: a Kubernetes control plane, a pod network and a node simulator (about 20 s; the first `npm start` also builds the test servers, 5 to 8 minutes)',
    );
    this.env = await startDevEnvironment({
      log,
      nodes: [
        { name: 'flb-node-a', zone: 'zone-a' },
        { name: 'flb-node-b', zone: 'zone-b' },
      ],
      onProgress: (m) => this.step(m),
    });
    if (this.options.kubeconfigOut) {
      const { copyFileSync } = await import('node:fs');
      copyFileSync(this.env.plane.kubeconfigPath, this.options.kubeconfigOut);
    }
    this.mesh = await startMeshComponents(this.env, { onProgress: (m) => this.step(m) });
    this.core = this.env.plane.kubeConfig.makeApiClient(CoreV1Api);
    const apps = this.env.plane.kubeConfig.makeApiClient(AppsV1Api);
    this.step(
      `labelling namespace ${DEMO_NAMESPACE} with flomesh.io/inject=enabled; deploying echo (3 replicas, its Service balanced over both zones: flomesh.io/locality none) and a client that calls http://echo/`,
    );
    await this.core.createNamespace({ body: { metadata: { name: DEMO_NAMESPACE, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await this.waitFor('the namespace default ServiceAccount', async () =>
      Boolean(await this.core!.readNamespacedServiceAccount({ name: 'default', namespace: DEMO_NAMESPACE }).catch(() => undefined)),
    );
    await this.core.createNamespacedService({
      namespace: DEMO_NAMESPACE,
      // Two nodes in two zones: by default a sidecar keeps calls in its own zone while that zone has
      // healthy endpoints, so with one echo pod beside the client every call would go to it. The
      // demo shows balancing over every pod; `flomesh.io/locality: zone` (the default) shows the other.
      body: {
        metadata: { name: 'echo', annotations: { 'flomesh.io/locality': 'none' } },
        spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] },
      },
    });
    await apps.createNamespacedDeployment({ namespace: DEMO_NAMESPACE, body: demoDeployment('echo', 3, ['echo'], { name: 'http', containerPort: 8080 }) });
    await apps.createNamespacedDeployment({
      namespace: DEMO_NAMESPACE,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '100'], { name: 'stats', containerPort: 8081 }),
    });
    await this.waitFor(
      '4 pods injected, running and Ready',
      async () => {
        const pods = (await this.core!.listNamespacedPod({ namespace: DEMO_NAMESPACE })).items;
        const ready = pods.filter((p) => isPodReady(p));
        this.step(`pods ready: ${ready.length}/4 (${pods.map((p) => `${p.metadata?.name}: ${phaseOf(p)}`).join(', ')})`);
        return ready.length === 4 && pods.length === 4;
      },
      1000,
    );
    const ip = await this.clientIp();
    // The first calls went out while the echo pods were still starting: count from now.
    await httpJson(`http://${ip}:8081/reset`, 'POST');
    this.step(`the mesh is up in ${((Date.now() - this.started) / 1000).toFixed(0)} s`);
    this.options.out.write(
      [
        '',
        `kubectl works on it: export KUBECONFIG=${this.options.kubeconfigOut ?? this.env.plane.kubeconfigPath}`,
        `pods' logs are files under ${this.env.dir}/pods/<uid>/logs/, the components' under ${this.mesh.dir}/logs/ (all removed at Ctrl-C)`,
        '',
      ].join('\n'),
    );
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs ?? 2000);
    this.deleter = setTimeout(() => void this.deleteOnePod(), this.options.deletePodAfterMs ?? 15_000);
    await this.refresh();
  }

  private async waitFor(what: string, check: () => Promise<boolean>, intervalMs = 250, timeoutMs = 180_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`the demo timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }

  private async clientIp(): Promise<string> {
    const pods = await this.core!.listNamespacedPod({ namespace: DEMO_NAMESPACE, labelSelector: 'app=client' });
    const ip = pods.items.find(isPodReady)?.status?.podIP;
    if (!ip) throw new Error('the client pod has no address');
    return ip;
  }

  private async deleteOnePod(): Promise<void> {
    const stats = await httpJson<ClientStats>(`http://${await this.clientIp()}:8081/stats`).catch(() => undefined);
    const pods = (await this.core!.listNamespacedPod({ namespace: DEMO_NAMESPACE, labelSelector: 'app=echo' })).items.filter(isPodReady);
    const busiest = pods.sort((a, b) => (stats?.byPod[b.metadata!.name!] ?? 0) - (stats?.byPod[a.metadata!.name!] ?? 0))[0];
    if (!busiest) return;
    this.note(`deleted pod ${busiest.metadata!.name} (calls so far: ${stats?.ok ?? 0} ok, ${stats?.failed ?? 0} failed); its ReplicaSet makes another`);
    await this.core!.deleteNamespacedPod({ name: busiest.metadata!.name!, namespace: DEMO_NAMESPACE });
  }

  private note(event: string): void {
    this.events.push(`${new Date().toISOString().slice(11, 19)} ${event}`);
  }

  /** The table: how the client's calls spread, the service's endpoints, each sidecar's applied configuration. */
  async render(): Promise<string> {
    const lines: string[] = [];
    const uptime = Math.round((Date.now() - this.started) / 1000);
    lines.push(`flb-mesh demo, up ${uptime}s. Ctrl-C stops it and removes everything.`);
    const stats = await httpJson<ClientStats>(`http://${await this.clientIp().catch(() => '0.0.0.0')}:8081/stats`).catch(() => undefined);
    if (stats) {
      lines.push(
        '',
        `client -> http://echo/ (by name, through its sidecar): ${stats.ok} ok, ${stats.failed} failed${stats.lastError ? ` (last error: ${stats.lastError.trim()})` : ''}`,
      );
      const total = Math.max(1, stats.ok);
      for (const [pod, count] of Object.entries(stats.byPod).sort()) {
        lines.push(`  ${pod.padEnd(28)} ${String(count).padStart(6)}  ${'#'.repeat(Math.round((40 * count) / total))}`);
      }
    }
    const catalog = await this.repoJson<{
      vips: { address: string }[];
      ports: { port: number; protocol: string }[];
      endpoints: { address: string; port: number; healthy: boolean; zone?: string; metadata?: { pod?: string } }[];
    }>(`/repo/flb/mesh/services/echo.${DEMO_NAMESPACE}.json`);
    if (catalog) {
      lines.push(
        '',
        `service echo.${DEMO_NAMESPACE} in the catalog: VIP ${catalog.vips.map((v) => v.address).join(', ')} port ${catalog.ports.map((p) => `${p.port}/${p.protocol}`).join(', ')}`,
      );
      for (const e of catalog.endpoints)
        lines.push(
          `  ${`${e.address}:${e.port}`.padEnd(20)} ${(e.healthy ? 'ready' : 'not ready').padEnd(10)} ${(e.zone ?? '').padEnd(8)} ${e.metadata?.pod ?? ''}`,
        );
    }
    const pods = (await this.core!.listNamespacedPod({ namespace: DEMO_NAMESPACE }).catch(() => undefined))?.items ?? [];
    lines.push('', 'sidecars (their configuration as they report it to the repo):');
    for (const pod of pods.sort((a, b) => a.metadata!.name!.localeCompare(b.metadata!.name!))) {
      const id = `pod.${DEMO_NAMESPACE}.${pod.metadata!.name}`;
      const info = await this.repoJson<{ instances?: Record<string, { status?: { appliedVersion?: string } }> }>(`/api/v1/repo/flb/sidecars/${id}`);
      const latest = info ? await this.repoEtag(`/repo/flb/sidecars/${id}/`) : undefined;
      const applied = Object.values(info?.instances ?? {}).at(-1)?.status?.appliedVersion;
      const state = !info
        ? 'no codebase yet'
        : !applied
          ? `published ${latest}, not reported yet`
          : applied === latest
            ? `applied ${applied} (latest)`
            : `applied ${applied}, latest ${latest}`;
      lines.push(`  ${id.padEnd(40)} ${phaseOf(pod).padEnd(12)} ${state}`);
    }
    if (this.events.length) lines.push('', ...this.events.slice(-5));
    return `${lines.join('\n')}\n`;
  }

  private async refresh(): Promise<void> {
    const text = await this.render().catch((error: unknown) => `(could not read the state: ${(error as Error).message})\n`);
    if (this.options.interactive && this.lastLines > 0) this.options.out.write(`\x1b[${this.lastLines}A\x1b[J`);
    this.options.out.write(this.options.interactive ? text : `${text}\n`);
    this.lastLines = text.split('\n').length - 1;
  }

  private repoTls(): { ca: Buffer; cert: Buffer; key: Buffer } {
    const mesh = this.mesh!;
    return { ca: readFileSync(mesh.repoCaFile), cert: readFileSync(mesh.controlPlaneCert.certFile), key: readFileSync(mesh.controlPlaneCert.keyFile) };
  }

  /** The version a worker of the codebase would be served now (its etag). */
  private repoEtag(path: string): Promise<string | undefined> {
    return new Promise((resolve) => {
      const req = httpsRequest(`${this.mesh!.repoUrl}${path}`, { ...this.repoTls(), method: 'HEAD', timeout: 2000, agent: false }, (res) => {
        res.resume();
        const etag = res.headers.etag;
        resolve(res.statusCode === 200 && typeof etag === 'string' ? etag.replace(/^W\//, '').replace(/"/g, '') : undefined);
      });
      req.on('error', () => resolve(undefined));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  }

  private repoJson<T>(path: string): Promise<T | undefined> {
    const mesh = this.mesh!;
    const tls = this.repoTls();
    return new Promise((resolve) => {
      const req = httpsRequest(`${mesh.repoUrl}${path}`, { ...tls, timeout: 2000, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          try {
            resolve(res.statusCode === 200 ? (JSON.parse(body) as T) : undefined);
          } catch {
            resolve(undefined);
          }
        });
      });
      req.on('error', () => resolve(undefined));
      req.on('timeout', () => req.destroy());
      req.end();
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.deleter);
    const since = Date.now();
    const said = (what: string) => this.options.progress(`[stopping ${((Date.now() - since) / 1000).toFixed(1)}s] ${what}`);
    said('stopping');
    this.stopping = true;
    await this.starting?.catch(() => undefined);
    said('the mesh: repo, registry bridge, injector');
    await this.mesh?.stop();
    said('the pods, the node simulator, the control plane and the pod network');
    await this.env?.stop();
    if (!this.options.logFile) rmSync(this.logFile, { force: true });
    said('everything removed');
  }
}

function phaseOf(pod: V1Pod): string {
  if (pod.metadata?.deletionTimestamp) return 'Terminating';
  if (isPodReady(pod)) return 'Ready';
  const waiting = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].find(
    (c) => c.state?.waiting?.reason && c.state.waiting.reason !== 'PodInitializing',
  );
  return waiting?.state?.waiting?.reason ?? pod.status?.phase ?? 'Pending';
}
