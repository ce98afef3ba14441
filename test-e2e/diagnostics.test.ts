import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { AdmissionregistrationV1Api, AppsV1Api, CoreV1Api, DiscoveryV1Api, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { startMeshComponents, type MeshComponents } from '../devenv/mesh.js';
import { DEMO_IMAGE } from '../devenv/node-simulator/images.js';
import { eventually } from './harness/eventually.js';
import { GREEN_IN_IPTABLES_MODE, type CheckReport } from './harness/flb-check.js';
import { requireRoot } from './harness/netns.js';

// The diagnostics as an operator runs them, on the development environment with the mesh running:
// `flb check` green, then red with the reason once the webhook is broken; `flb proxy-status` and
// `flb proxy-config` on the injected pods. The commands run as processes of this checkout's `flb`.
const NS = 'shop';
const log = createLogger('diagnostics-test', 'silent');
const FLB = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

const isReady = (pod: V1Pod) => pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true && !pod.metadata?.deletionTimestamp;

describe('flb check, proxy-status and proxy-config on a running mesh', () => {
  let env: DevEnvironment;
  let mesh: MeshComponents;
  let core: CoreV1Api;

  /** `flb <args>` with where the repo and the bridge are on this environment. */
  const flb = (...args: string[]) =>
    execa(process.execPath, [FLB, ...args], { reject: false, env: { FLB_LOG_LEVEL: 'silent' }, timeout: 60_000 }).then((r) => ({
      code: r.exitCode,
      stdout: r.stdout,
      stderr: r.stderr,
    }));
  const located = () => [
    '--kubeconfig',
    env.plane.kubeconfigPath,
    '--repo-url',
    mesh.repoUrl,
    '--repo-ca-file',
    mesh.repoCaFile,
    '--repo-cert-file',
    mesh.controlPlaneCert.certFile,
    '--repo-key-file',
    mesh.controlPlaneCert.keyFile,
  ];
  const check = async () => {
    const run = await flb('check', ...located(), ...mesh.bridgeAdminUrls.flatMap((url) => ['--bridge-url', url]), '--stale-after', '10s', '-o', 'json');
    return { ...run, report: JSON.parse(run.stdout) as CheckReport };
  };
  const pods = async () => (await core.listNamespacedPod({ namespace: NS })).items;
  /**
   * Runs flb check until its failed checks are exactly `failing`. Retried because the repo drops a
   * codebase's sole instance from GET /api/v1/repo/<codebase> on every other report (see the
   * report of this change): a sidecar then reads as not reporting for 5 s at a time.
   */
  const checkUntil = (failing: string[]) =>
    eventually(
      `flb check failing exactly ${failing.join(', ') || 'nothing'}`,
      async () => {
        const run = await check();
        const failed = run.report.results.filter((r) => r.status === 'fail').map((r) => r.id);
        return JSON.stringify(failed) === JSON.stringify(failing) ? run : undefined;
      },
      60_000,
      1000,
    );

  beforeAll(async () => {
    requireRoot('the diagnostics end-to-end test');
    env = await startDevEnvironment({ log, nodes: [{ name: 'diag-a', zone: 'zone-a' }], backoffBaseMs: 1000 });
    mesh = await startMeshComponents(env, { bridges: 1 });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await core.createNamespace({ body: { metadata: { name: 'plain' } } });
    await eventually('the default ServiceAccounts', async () => {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: NS });
      return core.readNamespacedServiceAccount({ name: 'default', namespace: 'plain' });
    });
    await core.createNamespacedService({
      namespace: NS,
      body: { metadata: { name: 'echo' }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] } },
    });
    await env.plane.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({
      namespace: NS,
      body: {
        metadata: { name: 'echo' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'echo' } },
          template: {
            metadata: { labels: { app: 'echo' } },
            spec: {
              terminationGracePeriodSeconds: 5,
              containers: [
                {
                  name: 'echo',
                  image: DEMO_IMAGE,
                  args: ['echo'],
                  ports: [{ name: 'http', containerPort: 8080 }],
                  readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 1 },
                },
              ],
            },
          },
        },
      },
    });
    await eventually('two echo pods Ready', async () => ((await pods()).filter(isReady).length === 2 ? true : undefined), 120_000);
    // A pod without a sidecar (its namespace is not labelled): it need not run.
    await core.createNamespacedPod({
      namespace: 'plain',
      body: { metadata: { name: 'lonely' }, spec: { containers: [{ name: 'app', image: DEMO_IMAGE, args: ['echo'] }] } },
    });
  }, 300_000);
  afterAll(async () => {
    await mesh?.stop();
    await env?.stop();
  });

  it('flb proxy-status lists every injected pod with the version it applied equal to the latest', async () => {
    const names = (await pods()).map((p) => `pod.${NS}.${p.metadata!.name!}`).sort();
    const rows = await eventually(
      'both sidecars synced',
      async () => {
        const run = await flb('proxy-status', ...located(), '-o', 'json');
        expect(run.stderr).toBe('');
        const parsed = JSON.parse(run.stdout) as { id: string; state: string; applied?: string; latest?: string }[];
        return parsed.length === 2 && parsed.every((r) => r.state === 'SYNCED') ? parsed : undefined;
      },
      30_000,
      1000,
    );
    expect(rows.map((r) => r.id)).toEqual(names);
    for (const row of rows) {
      expect(row.applied).toBe(row.latest);
      expect(row.latest).toMatch(/\+/); // <own version>+<mesh version>: a derived codebase's etag
    }
    const table = await flb('proxy-status', ...located());
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^SIDECAR +STATE +APPLIED +LATEST +REJECTED +SOURCE +LAST REPORT$/);
    for (const name of names) expect(table.stdout).toMatch(new RegExp(`^${name.replace(/\./g, '\\.')} +SYNCED +(\\S+) +\\1 +0 +repo +\\d+s ago$`, 'm'));
  });

  it("flb proxy-config shows a pod's service, its endpoints and listeners, and says so for a pod without a sidecar", async () => {
    const [first, second] = (await pods()).filter(isReady);
    // Retried while the repo shows no instance for the codebase (see checkUntil).
    const run = await eventually(
      'a report of the applied version',
      async () => {
        const answer = await flb('proxy-config', ...located(), `${NS}/${first!.metadata!.name!}`);
        return answer.stdout.includes('(the latest)') ? answer : undefined;
      },
      30_000,
      1000,
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`sidecar pod.${NS}.${first!.metadata!.name!}: pod ${NS}/${first!.metadata!.name!} on diag-a, zone zone-a`);
    expect(run.stdout).toMatch(/configuration: applied \S+ \(the latest\); reported \d+s ago, ready/);
    const clusterIp = (await core.readNamespacedService({ name: 'echo', namespace: NS })).spec!.clusterIP!;
    expect(run.stdout).toMatch(new RegExp(`^echo\\.shop +kubernetes +- +${clusterIp.replace(/\./g, '\\.')} +80/http +round-robin$`, 'm'));
    for (const pod of [first!, second!])
      expect(run.stdout).toMatch(new RegExp(`^echo\\.shop +${pod.status!.podIP!.replace(/\./g, '\\.')}:8080 +zone-a +1 +0 +healthy$`, 'm'));
    expect(run.stdout).toMatch(/^15001 +all addresses \(captured\) +outbound/m);
    expect(run.stdout).toMatch(/^8080 +\S+ +http$/m);

    // A Service whose endpoints are the first echo pod on its port and on one nobody listens on,
    // with an active HTTP check (a TCP check would pass: the pod's own sidecar accepts every
    // intercepted port): every sidecar takes the second out, and proxy-config says so.
    await core.createNamespacedService({
      namespace: NS,
      body: {
        metadata: { name: 'flaky', annotations: { 'flomesh.io/health-check': '{protocol: http, path: /healthz, intervalMs: 300, timeoutMs: 200}' } },
        spec: { ports: [{ name: 'http', port: 80, appProtocol: 'http' }] },
      },
    });
    const slice = (name: string, port: number) => ({
      metadata: { name, labels: { 'kubernetes.io/service-name': 'flaky' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port, protocol: 'TCP' }],
      endpoints: [{ addresses: [first!.status!.podIP!], conditions: { ready: true }, zone: 'zone-a' }],
    });
    const discovery = env.plane.kubeConfig.makeApiClient(DiscoveryV1Api);
    await discovery.createNamespacedEndpointSlice({ namespace: NS, body: slice('flaky-live', 8080) });
    await discovery.createNamespacedEndpointSlice({ namespace: NS, body: slice('flaky-dead', 8099) });
    const ip = first!.status!.podIP!.replace(/\./g, '\\.');
    let shown = '';
    const checked = await eventually(
      "the sidecar's report of the endpoint its active check took out",
      async () => {
        const answer = await flb('proxy-config', ...located(), `${NS}/${second!.metadata!.name!}`);
        shown = answer.stdout + answer.stderr;
        return new RegExp(`^flaky\\.shop +${ip}:8099 +zone-a +1 +0 +UNHEALTHY \\(active check\\)$`, 'm').test(answer.stdout) ? answer : undefined;
      },
      30_000,
      1000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; proxy-config said:\n${shown}`, { cause: error });
    });
    expect(checked.stdout).toMatch(new RegExp(`^flaky\\.shop +${ip}:8080 +zone-a +1 +0 +healthy$`, 'm'));
    expect(checked.stdout).toContain("ENDPOINTS (health: the registry's, then the sidecar's active checks and outlier ejections, as of its last report)");

    const lonely = await flb('proxy-config', ...located(), '-n', 'plain', 'lonely');
    expect(lonely.code).toBe(1);
    expect(lonely.stdout).toBe('');
    expect(lonely.stderr).toContain('flb: pod plain/lonely has no sidecar: it was not injected (no flomesh.io/sidecar-status annotation)');
  });

  it('flb check is green on the running mesh', async () => {
    // Sidecars are judged once they have run longer than --stale-after.
    await new Promise((r) => setTimeout(r, 10_000));
    const { code, report, stderr } = await checkUntil([]);
    const byId = Object.fromEntries(report.results.map((r) => [r.id, r]));
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    expect(report.results.map((r) => [r.id, r.status])).toEqual(GREEN_IN_IPTABLES_MODE);
    expect(byId['webhook-answers']!.detail).toContain(
      `a dry-run pod in namespace ${NS} (labelled flomesh.io/inject=enabled) was injected: flb-sidecar as a native sidecar`,
    );
    expect(byId.sidecars!.detail).toBe('2 running sidecars, every one reported within 10s');
    expect(byId['bridge-leader']!.detail).toMatch(/^flb-bridge-0 leads \(Lease flomesh\/flb-bridge renewed \d+s ago\)$/);
    // The dry run stored nothing.
    expect((await pods()).filter((p) => p.metadata!.name!.startsWith('flb-check-'))).toEqual([]);
  });

  it('flb check is red with the reason once the injector is stopped, and once the webhook points at a Service that does not exist', async () => {
    await mesh
      .processes()
      .find((p) => p.name === 'flb-injector')!
      .stop();
    const stopped = await checkUntil(['webhook-answers']);
    expect(stopped.code).toBe(1);
    expect(stopped.stderr).toBe('flb: 1 of 11 checks failed: webhook answers\nhint: each failed check has a hint');
    const answers = stopped.report.results.find((r) => r.id === 'webhook-answers')!;
    expect(answers.status).toBe('fail');
    expect(answers.detail).toMatch(/was refused: .*failed calling webhook .*connection refused/);
    expect(answers.hint).toContain('the injector is not running or not reachable from the apiserver');

    // What a chart install has: the webhook reached through the injector's Service, here deleted.
    const admission = env.plane.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const config = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
    for (const webhook of config.webhooks ?? [])
      webhook.clientConfig = { service: { namespace: 'flomesh', name: 'flb-injector', port: 443, path: '/mutate' }, caBundle: webhook.clientConfig.caBundle! };
    await admission.replaceMutatingWebhookConfiguration({ name: 'flb-sidecar-injector', body: config });
    const deleted = await checkUntil(['webhook-config', 'webhook-answers']);
    expect(deleted.code).toBe(1);
    const byId = Object.fromEntries(deleted.report.results.map((r) => [r.id, r]));
    expect(byId['webhook-config']).toMatchObject({
      status: 'fail',
      detail: "the webhook's Service flomesh/flb-injector does not exist: the apiserver cannot reach the injector",
    });
    expect(byId['webhook-answers']).toMatchObject({ status: 'fail', detail: expect.stringContaining('service "flb-injector" not found') });
    // The same report as a person reads it.
    const table = await flb('check', ...located(), ...mesh.bridgeAdminUrls.flatMap((url) => ['--bridge-url', url]));
    expect(table.code).toBe(1);
    expect(table.stdout).toContain("[FAIL] webhook configuration: the webhook's Service flomesh/flb-injector does not exist");
    expect(table.stdout).toContain('       hint: helm upgrade the release to restore it');
    expect(table.stdout).toMatch(/\n\d of 11 checks failed$/);
  });
});
