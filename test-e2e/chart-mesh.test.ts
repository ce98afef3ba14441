// The chart installed as a user installs it, onto the test control plane with pods that run (the
// node simulator maps the chart's images to this checkout's flb): the repo StatefulSet on its
// claim, two bridges on a Lease, two injectors behind the Service the webhook configuration names
// (the apiserver reaches it by `service:` with --enable-aggregator-routing, as there is no
// kube-proxy; pods reach ClusterIPs through the simulator's stand-in for it). Then a labelled
// namespace's pods get sidecars and call each other by name; `flb check` is green on that install,
// and red with the reason once the injector's Service is deleted.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { AdmissionregistrationV1Api, AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { REPO_CA_CONFIGMAP } from '../common/contract/index.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { getJson } from '../devenv/mesh.js';
import { CONTROL_PLANE_IMAGE } from '../devenv/node-simulator/images.js';
import { CHART_DIR, Helm } from './harness/chart.js';
import { eventually } from './harness/eventually.js';
import { GREEN_IN_IPTABLES_MODE, type CheckReport } from './harness/flb-check.js';
import { requireRoot } from './harness/netns.js';
import { demoDeployment, isPodReady, type ClientStats } from '../devenv/apps/workloads.js';

const MESH_NS = 'flomesh';
const APP_NS = 'shop';
const log = createLogger('chart-mesh-test', 'silent');
const FLB = fileURLToPath(new URL('../bin/flb.js', import.meta.url));

function post(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', timeout: 3000 }, (res) => {
      res.resume();
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the chart installed on the test control plane with pods that run', () => {
  let env: DevEnvironment;
  let helm: Helm;
  let core: CoreV1Api;

  const pods = async (namespace: string, selector?: string) =>
    (await core.listNamespacedPod({ namespace, ...(selector ? { labelSelector: selector } : {}) })).items;
  /** What a failed wait shows: every pod of the namespace with its containers' states and last log lines. */
  const describePods = async (namespace: string) => {
    const lines: string[] = [];
    for (const pod of await pods(namespace)) {
      lines.push(`${pod.metadata?.name} on ${pod.spec?.nodeName ?? '(unbound)'}: ${pod.status?.phase} ready=${isPodReady(pod)}`);
      for (const status of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
        lines.push(`  ${status.name}: ${JSON.stringify(status.state)} restarts=${status.restartCount}`);
        const file = env.simulator.logFile(pod, status.name);
        if (file && existsSync(file))
          lines.push(
            ...readFileSync(file, 'utf8')
              .trim()
              .split('\n')
              .slice(-8)
              .map((l) => `    ${l.slice(0, 400)}`),
          );
      }
    }
    return lines.join('\n');
  };
  const waitOrExplain = async <T>(what: string, namespace: string, probe: () => Promise<T | undefined>, timeoutMs: number) => {
    try {
      return await eventually(what, probe, timeoutMs);
    } catch (error) {
      const shown = namespace === MESH_NS ? [MESH_NS] : [namespace, MESH_NS];
      const described = await Promise.all(shown.map((ns) => describePods(ns).catch((e: unknown) => String(e))));
      throw new Error(`${(error as Error).message}\n${described.join('\n')}`, { cause: error });
    }
  };
  const clientStats = async () => {
    const ip = (await pods(APP_NS, 'app=client')).find(isPodReady)!.status!.podIP!;
    const stats = await getJson<ClientStats>(`http://${ip}:8081/stats`);
    if (!stats) throw new Error('the client did not answer');
    return stats;
  };

  beforeAll(async () => {
    requireRoot('the chart end-to-end test');
    env = await startDevEnvironment({
      log,
      nodes: [
        { name: 'chart-a', zone: 'zone-a' },
        { name: 'chart-b', zone: 'zone-b' },
      ],
      controlPlane: { apiserverArgs: ['--enable-aggregator-routing=true'] },
      serviceProxy: true,
      backoffBaseMs: 1000,
    });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    helm = new Helm(env.plane.kubeconfigPath);
  });
  afterAll(async () => {
    helm?.dispose();
    await env?.stop();
  });

  it('brings the control plane up: repo, two bridges with one leader, two injectors that keep the caBundle', async () => {
    const install = await helm.run(['install', 'flb', CHART_DIR, '--namespace', MESH_NS, '--create-namespace']);
    expect({ exitCode: install.exitCode, stderr: install.stderr }).toEqual({ exitCode: 0, stderr: '' });
    const running = await waitOrExplain(
      'five control plane pods Ready',
      MESH_NS,
      async () => {
        const ready = (await pods(MESH_NS)).filter(isPodReady);
        return ready.length === 5 ? ready : undefined;
      },
      150_000,
    );
    expect(running.map((p) => p.metadata!.labels!['app.kubernetes.io/name']).sort()).toEqual([
      'flb-bridge',
      'flb-bridge',
      'flb-injector',
      'flb-injector',
      'flb-repo',
    ]);
    for (const pod of running) expect(pod.spec!.containers[0]!.image).toBe(CONTROL_PLANE_IMAGE);

    const admission = env.plane.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    await eventually('the injector setting the caBundle', async () => {
      const config = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
      return (config.webhooks ?? []).every((w) => Boolean(w.clientConfig.caBundle)) ? true : undefined;
    });
    // One bridge leads (the Lease), the other stands by; both have listed the cluster.
    const statuses = await Promise.all(
      running
        .filter((p) => p.metadata!.labels!['app.kubernetes.io/name'] === 'flb-bridge')
        .map((p) => getJson<{ leader: boolean; sources: { state: string }[] }>(`http://${p.status!.podIP!}:15020/status`)),
    );
    expect(statuses.map((s) => s?.leader).sort()).toEqual([false, true]);
  });

  it("injects a labelled namespace's pods, whose client calls the echo Service by name through its sidecar", async () => {
    await core.createNamespace({ body: { metadata: { name: APP_NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: APP_NS }));
    await core.createNamespacedService({
      namespace: APP_NS,
      body: {
        // Calls may cross zones: the two nodes are in two.
        metadata: { name: 'echo', annotations: { 'flomesh.io/locality': 'none' } },
        spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 'http', appProtocol: 'http' }] },
      },
    });
    const apps = env.plane.kubeConfig.makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({ namespace: APP_NS, body: demoDeployment('echo', 3, ['echo'], { name: 'http', containerPort: 8080 }, 5) });
    await apps.createNamespacedDeployment({
      namespace: APP_NS,
      body: demoDeployment('client', 1, ['client', '--url', 'http://echo/', '--interval-ms', '50'], { name: 'stats', containerPort: 8081 }, 5),
    });
    const ready = await waitOrExplain(
      'four app pods Ready',
      APP_NS,
      async () => {
        const all = (await pods(APP_NS)).filter(isPodReady);
        return all.length === 4 ? all : undefined;
      },
      150_000,
    );
    for (const pod of ready) {
      expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-sidecar', 'flb-init']);
      expect(pod.metadata!.labels!['flomesh.io/sidecar-injected']).toBe('true');
    }
    // The bridge put the repo's CA where the sidecars mount it.
    expect((await core.readNamespacedConfigMap({ name: REPO_CA_CONFIGMAP, namespace: APP_NS })).data?.['ca.crt']).toContain('BEGIN CERTIFICATE');

    const echoPods = ready.filter((p) => p.metadata!.labels!.app === 'echo').map((p) => p.metadata!.name!);
    await waitOrExplain(
      'the client reaching all three echo pods without a failure',
      APP_NS,
      async () => {
        await post(`http://${(await pods(APP_NS, 'app=client')).find(isPodReady)!.status!.podIP!}:8081/reset`);
        await new Promise((r) => setTimeout(r, 2000));
        const stats = await clientStats();
        return stats.failed === 0 && stats.ok >= 20 && Object.keys(stats.byPod).length === 3 ? stats : undefined;
      },
      60_000,
    );
    expect(Object.keys((await clientStats()).byPod).sort()).toEqual(echoPods.sort());
  });

  it("flb check is green on the chart's install, and red with the reason once the injector's Service is deleted", async () => {
    // From this machine the repo's in-cluster name does not resolve: its pod's address, checked
    // against the name its certificate was issued for. The bridge is found through its Lease, the
    // client certificate in the chart's Secret, as a user's `flb check` finds them.
    const repoPod = (await pods(MESH_NS, 'app.kubernetes.io/name=flb-repo')).find(isPodReady)!;
    const check = async () => {
      const run = await execa(
        process.execPath,
        [
          FLB,
          'check',
          '--kubeconfig',
          env.plane.kubeconfigPath,
          '--repo-url',
          `https://${repoPod.status!.podIP!}:6060`,
          '--repo-tls-server-name',
          `flb-repo.${MESH_NS}.svc`,
          '--stale-after',
          '10s',
          '-o',
          'json',
        ],
        { reject: false, env: { FLB_LOG_LEVEL: 'silent' }, timeout: 60_000 },
      );
      return { code: run.exitCode, stderr: run.stderr, report: JSON.parse(run.stdout) as CheckReport };
    };
    const failing = (run: { report: CheckReport }) => run.report.results.filter((r) => r.status === 'fail').map((r) => r.id);

    // Sidecars are judged once they have run longer than --stale-after.
    const green = await eventually(
      'flb check with no failed check',
      async () => {
        const run = await check();
        return failing(run).length === 0 ? run : undefined;
      },
      60_000,
      2000,
    );
    expect({ code: green.code, stderr: green.stderr }).toEqual({ code: 0, stderr: '' });
    expect(green.report.results.map((r) => [r.id, r.status])).toEqual(GREEN_IN_IPTABLES_MODE);
    expect(green.report.results.find((r) => r.id === 'sidecars')!.detail).toBe('4 running sidecars, every one reported within 10s');

    await core.deleteNamespacedService({ name: 'flb-injector', namespace: MESH_NS });
    let seen = '';
    const red = await eventually(
      'flb check failing on the webhook',
      async () => {
        const run = await check();
        seen = JSON.stringify(run.report.results.filter((r) => r.status !== 'pass'));
        const failed = failing(run);
        return failed[0] === 'webhook-config' && failed.every((id) => id === 'webhook-config' || id === 'webhook-answers') ? run : undefined;
      },
      60_000,
      2000,
    ).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; last run: ${seen}`, { cause: error });
    });
    expect(red.code).toBe(1);
    // The dry run may still be injected for a while: the apiserver keeps its kept-alive connection
    // to the injector pod after the Service is gone (through kube-proxy's conntrack entry on a real
    // cluster too), and fails it only on a new connection.
    expect(red.stderr).toMatch(/^flb: [12] of 11 checks failed: webhook configuration(, webhook answers)?\nhint: each failed check has a hint$/);
    const byId = Object.fromEntries(red.report.results.map((r) => [r.id, r]));
    expect(byId['webhook-config']).toMatchObject({
      detail: `the webhook's Service ${MESH_NS}/flb-injector does not exist: the apiserver cannot reach the injector`,
      status: 'fail',
      hint: expect.stringContaining('helm upgrade the release to restore it'),
    });
    if (byId['webhook-answers']!.status === 'fail') expect(byId['webhook-answers']!.detail).toContain('service "flb-injector" not found');
  });
});
