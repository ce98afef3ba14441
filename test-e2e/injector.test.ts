import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { request } from 'node:https';
import { execa } from 'execa';
import { AppsV1Api, CoreV1Api, type CoreV1Event, type V1Namespace, type V1OwnerReference, type V1Pod } from '@kubernetes/client-node';
import { createLogger } from '../common/log.js';
import { API_VERSION, defaultMesh, REPO_CA_CONFIGMAP, SIDECAR_INJECTED_LABEL } from '../common/contract/index.js';
import { MESH_IMAGE } from '../common/contract/version.js';
import { caBundle } from '../injector/certs.js';
import { injectPod, type InjectorSettings } from '../injector/inject.js';
import { runInjector, type RunningInjector } from '../injector/runner.js';
import { installWebhookConfiguration, webhookConfiguration } from '../injector/webhook-config.js';
import { startControlPlane, freePorts, type ControlPlane } from '../devenv/controlplane.js';
import { testBinary } from '../devenv/cache.js';
import { eventually } from './harness/eventually.js';

const names = (pod: V1Pod) => ({
  init: (pod.spec?.initContainers ?? []).map((c) => c.name),
  containers: pod.spec?.containers.map((c) => c.name),
});
const isInjected = (pod: V1Pod) => pod.metadata?.annotations?.['flomesh.io/sidecar-status'] !== undefined && names(pod).init.includes('flb-sidecar');
const simplePod = (name: string, labels: Record<string, string> = {}): V1Pod => ({
  metadata: { name, labels },
  spec: {
    containers: [
      { name: 'app', image: 'example/app:1', ports: [{ name: 'http', containerPort: 8080 }], readinessProbe: { httpGet: { path: '/ready', port: 'http' } } },
    ],
  },
});
const ours = (events: CoreV1Event[]) => events.filter((e) => e.source?.component === 'flb-injector');
/** Short-lived certificates so the suite sees several renewals, and one of the CA. */
const SHORT_LIVED_CERTS = { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], certValidityMs: 9_000, caValidityMs: 30_000 };
/** Events per namespace in this suite: 10 at once, then 1 a second. */
const EVENT_RATE = { burst: 10, perSecond: 1 };

describe('the sidecar injector against a real kube-apiserver', () => {
  let plane: ControlPlane;
  let core: CoreV1Api;
  let injector: RunningInjector;
  // Forced, not detected: the suite must test this path whatever version the test apiserver reports.
  const settings: InjectorSettings = { mesh: defaultMesh(), nativeSidecars: true, version: '0.1.0-e2e' };
  const log = createLogger('injector-test', (process.env.FLB_TEST_LOG_LEVEL as 'warn' | undefined) ?? 'warn');
  const configName = 'flb-sidecar-injector';

  const install = async (url: string, failurePolicy: 'Fail' | 'Ignore') =>
    installWebhookConfiguration(
      plane.kubeConfig,
      webhookConfiguration({ name: configName, url, failurePolicy, timeoutSeconds: 5, meshNamespace: 'flomesh', caBundlePem: caBundle(injector.current()) }),
    );
  const injectorUrl = () => `https://127.0.0.1:${injector.port}/mutate`;
  const createNamespace = async (name: string, labels: Record<string, string> = {}) => {
    await core.createNamespace({ body: { metadata: { name, labels } } });
    await eventually(`ServiceAccount default in ${name}`, () => core.readNamespacedServiceAccount({ name: 'default', namespace: name }));
  };
  /** A Deployment of one pod; resolves with its ReplicaSet as an owner reference, once that exists. */
  const deploy = async (namespace: string, name: string): Promise<V1OwnerReference> => {
    const apps = plane.kubeConfig.makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name },
        spec: { replicas: 1, selector: { matchLabels: { app: name } }, template: { metadata: { labels: { app: name } }, spec: simplePod('x').spec! } },
      },
    });
    const rs = await eventually(
      `the ReplicaSet of ${namespace}/${name}`,
      async () => (await apps.listNamespacedReplicaSet({ namespace, labelSelector: `app=${name}` })).items[0],
    );
    return { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: rs.metadata!.name!, uid: rs.metadata!.uid!, controller: true, blockOwnerDeletion: true };
  };
  /** What anyone who reaches the injector's port can send: an AdmissionReview it makes up. */
  const forgeReview = (namespace: string, owner: V1OwnerReference | undefined, generateName: string) =>
    new Promise<number>((resolve, reject) => {
      const body = JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: randomUUID(),
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          operation: 'CREATE',
          namespace,
          object: {
            ...simplePod(''),
            metadata: { generateName, namespace, labels: { 'flomesh.io/inject': 'true' }, ...(owner ? { ownerReferences: [owner] } : {}) },
          },
        },
      });
      // The attacker does not check the injector's certificate; nothing else is needed.
      const req = request(
        { host: '127.0.0.1', port: injector.port, path: '/mutate', method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const droppedEvents = async (reason: string) => {
    const metrics = await (await fetch(`http://127.0.0.1:${injector.metricsPort}/metrics`)).text();
    return Number(new RegExp(`flb_injector_events_dropped_total\\{reason="${reason}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0);
  };

  beforeAll(async () => {
    plane = await startControlPlane();
    core = plane.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: 'flomesh' } } });
    injector = await runInjector({
      kubeConfig: plane.kubeConfig,
      settings,
      mesh: { fixed: settings.mesh },
      host: '127.0.0.1',
      port: 0,
      metricsPort: 0,
      secret: { namespace: 'flomesh', name: 'flb-injector-tls' },
      webhookConfigName: configName,
      certs: SHORT_LIVED_CERTS,
      checkIntervalMs: 300,
      caPropagationMs: 1500,
      eventRate: EVENT_RATE,
      log,
    });
    await install(injectorUrl(), 'Fail');
    await createNamespace('shop', { 'flomesh.io/inject': 'enabled' });
    await createNamespace('legacy');
  });
  afterAll(async () => {
    await injector?.stop();
    await plane?.stop();
  });

  it('injects the pods a Deployment makes in a labelled namespace, and a bare pod', async () => {
    const apps = plane.kubeConfig.makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({
      namespace: 'shop',
      body: {
        metadata: { name: 'orders' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: 'orders' } },
          template: { metadata: { labels: { app: 'orders' } }, spec: simplePod('x').spec! },
        },
      },
    });
    await core.createNamespacedPod({ namespace: 'shop', body: simplePod('bare') });
    const pods = await eventually('the Deployment pods', async () => {
      const list = await core.listNamespacedPod({ namespace: 'shop', labelSelector: 'app=orders' });
      return list.items.length === 2 ? list.items : undefined;
    });
    for (const pod of [...pods, await core.readNamespacedPod({ name: 'bare', namespace: 'shop' })]) {
      expect(names(pod)).toEqual({ init: ['flb-sidecar', 'flb-init'], containers: ['app'] });
      expect(pod.spec!.initContainers![0]!.restartPolicy).toBe('Always');
      expect(pod.spec!.containers[0]!.readinessProbe!.httpGet).toEqual({ path: '/app-health/app/readiness', port: 15902, scheme: 'HTTP' });
      expect(JSON.parse(pod.metadata!.annotations!['flomesh.io/sidecar-status']!)).toMatchObject({ version: '0.1.0-e2e', native: true });
    }
    const env = pods[0]!.spec!.initContainers![0]!.env!;
    expect(env.find((e) => e.name === 'FLB_WORKLOAD_NAME')?.value).toBe('orders');

    // The apiserver's own view: an Event on the ReplicaSet that owns the pods.
    const replicaSet = pods[0]!.metadata!.ownerReferences![0]!;
    const events = await eventually('an injection Event on the ReplicaSet', async () => {
      const list = await core.listNamespacedEvent({ namespace: 'shop', fieldSelector: `involvedObject.name=${replicaSet.name}` });
      const injected = list.items.filter((e) => e.reason === 'SidecarInjected');
      return injected.length >= 2 ? injected : undefined;
    });
    expect(events[0]!.message).toContain('namespace label flomesh.io/inject=enabled');
    expect(events[0]!.involvedObject).toMatchObject({ kind: 'ReplicaSet', name: replicaSet.name, uid: replicaSet.uid });
  });

  it("labels injected pods so a label selector finds them, mounts the repo's CA, and tells the sidecar the mesh's ports", async () => {
    await core.createNamespacedPod({ namespace: 'shop', body: simplePod('not-meshed', { 'flomesh.io/inject': 'false' }) });
    const pods = (await core.listNamespacedPod({ namespace: 'shop', labelSelector: `${SIDECAR_INJECTED_LABEL}=true` })).items;
    const podNames = pods.map((p) => p.metadata!.name!).sort();
    expect(podNames).toHaveLength(3);
    expect(podNames[0]).toBe('bare');
    expect(podNames.slice(1).every((n) => n.startsWith('orders-'))).toBe(true);
    expect(pods.every(isInjected)).toBe(true);
    const sidecar = pods[0]!.spec!.initContainers!.find((c) => c.name === 'flb-sidecar')!;
    expect(sidecar.image).toBe(MESH_IMAGE);
    expect(sidecar.args).toEqual(expect.arrayContaining(['--admin-port=15000', '--outbound-port=15001', '--readiness-probe-port=15902']));
    const ca = pods[0]!.spec!.volumes!.find((v) => v.name === 'flb-repo-access')!.projected!.sources!.find((source) => source.configMap)!.configMap!;
    expect(ca).toMatchObject({ name: REPO_CA_CONFIGMAP, items: [{ key: 'ca.crt', path: 'ca.crt' }] });
    expect(ca.optional).toBeFalsy();
  });

  it('injects exactly the pods `flb inject --explain` says it will, for every combination of namespace label, pod label and annotation', async () => {
    // What the apiserver sends the webhook depends on the configuration's selectors, which see
    // labels only; the injector's decision must agree, or --explain promises what the cluster does not do.
    const namespaceLabels = { enabled: 'enabled', disabled: 'disabled', unlabelled: undefined, odd: 'on' } as const;
    const podValues = [undefined, 'true', 'false', 'yes'] as const;
    for (const [name, value] of Object.entries(namespaceLabels)) await createNamespace(`agree-${name}`, value ? { 'flomesh.io/inject': value } : {});
    const disagreements: string[] = [];
    let cases = 0;
    for (const [nsName, nsValue] of Object.entries(namespaceLabels)) {
      const namespace = `agree-${nsName}`;
      const nsObject: V1Namespace = { metadata: { name: namespace, labels: nsValue ? { 'flomesh.io/inject': nsValue } : {} } };
      for (const label of podValues) {
        for (const annotation of podValues) {
          const pod = simplePod(`p-${label ?? 'none'}-${annotation ?? 'none'}`, label ? { 'flomesh.io/inject': label } : {});
          if (annotation) pod.metadata!.annotations = { 'flomesh.io/inject': annotation };
          const predicted = injectPod({ ...pod, metadata: { ...pod.metadata, namespace } }, nsObject, settings);
          const actual = await core.createNamespacedPod({ namespace, body: pod, dryRun: 'All' }).then(
            (created) => (isInjected(created) ? 'inject' : 'not injected'),
            (error: { body?: string }) => `refused: ${(JSON.parse(error.body ?? '{}') as { message?: string }).message ?? ''}`,
          );
          const expected = predicted.action === 'inject' ? 'inject' : predicted.action === 'deny' ? `refused: ${predicted.message}` : 'not injected';
          cases++;
          if (!(actual === expected || (predicted.action === 'deny' && actual.endsWith(`flb-mesh injector: ${predicted.message}`)))) {
            disagreements.push(`namespace ${nsName}, label ${label}, annotation ${annotation}: flb inject says ${expected}, the cluster did ${actual}`);
          }
        }
      }
    }
    expect(disagreements).toEqual([]);
    expect(cases).toBe(64);
  });

  it('injects with a postStart hook instead of a native sidecar when told to, whatever the apiserver version', async () => {
    const postStart = await runInjector({
      kubeConfig: plane.kubeConfig,
      settings: { ...settings, nativeSidecars: false },
      mesh: { fixed: settings.mesh },
      host: '127.0.0.1',
      port: 0,
      secret: { namespace: 'flomesh', name: 'flb-injector-tls-poststart' },
      webhookConfigName: 'flb-sidecar-injector-unused',
      certs: { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], certValidityMs: 3_600_000, caValidityMs: 7_200_000 },
      log,
    });
    try {
      await installWebhookConfiguration(
        plane.kubeConfig,
        webhookConfiguration({
          name: configName,
          url: `https://127.0.0.1:${postStart.port}/mutate`,
          failurePolicy: 'Fail',
          timeoutSeconds: 5,
          meshNamespace: 'flomesh',
          caBundlePem: caBundle(postStart.current()),
        }),
      );
      const pod = await eventually('the apiserver to call the postStart injector', async () => {
        const created = await core.createNamespacedPod({ namespace: 'shop', body: simplePod('post-start'), dryRun: 'All' }).catch(() => undefined);
        return created && names(created).containers?.[0] === 'flb-sidecar' ? created : undefined;
      });
      expect(names(pod)).toEqual({ init: ['flb-init'], containers: ['flb-sidecar', 'app'] });
      const sidecar = pod.spec!.containers[0]!;
      expect(sidecar.restartPolicy).toBeUndefined();
      expect(sidecar.lifecycle!.postStart!.exec!.command).toEqual(['flb', 'sidecar', 'wait-ready', '--timeout=120s', '--admin-port=15000']);
      expect(JSON.parse(pod.metadata!.annotations!['flomesh.io/sidecar-status']!)).toMatchObject({ native: false, containers: ['flb-sidecar'] });
    } finally {
      await install(injectorUrl(), 'Fail');
      await postStart.stop();
    }
    await eventually('the native-sidecar injector to answer again', async () => {
      const created = await core.createNamespacedPod({ namespace: 'shop', body: simplePod('native-again'), dryRun: 'All' }).catch(() => undefined);
      return created && names(created).init.includes('flb-sidecar') ? true : undefined;
    });
  });

  it('injects with the mesh settings ConfigMap as it is edited; injects nothing before good settings; keeps the last good through a bad edit, with an Event', async () => {
    const configMap = { namespace: 'flomesh', name: 'flb-mesh-e2e', key: 'mesh.yaml' };
    const meshYaml = (extra: string) => `apiVersion: ${API_VERSION}\nkind: Mesh\nname: shop\n${extra}`;
    const body = (text: string) => ({ metadata: { name: configMap.name }, data: { [configMap.key]: text } });
    const edit = (text: string) => core.replaceNamespacedConfigMap({ name: configMap.name, namespace: configMap.namespace, body: body(text) });
    const watched = await runInjector({
      kubeConfig: plane.kubeConfig,
      settings,
      mesh: { configMap },
      host: '127.0.0.1',
      port: 0,
      metricsPort: 0,
      // A replica of the suite's injector (its Secret, its configuration): the two keep one CA and
      // one caBundle, as replicas do, while the suite's renews its certificates every few seconds.
      secret: { namespace: 'flomesh', name: 'flb-injector-tls' },
      webhookConfigName: configName,
      certs: SHORT_LIVED_CERTS,
      checkIntervalMs: 300,
      caPropagationMs: 1500,
      log,
    });
    const useWatched = (failurePolicy: 'Fail' | 'Ignore') =>
      installWebhookConfiguration(
        plane.kubeConfig,
        webhookConfiguration({
          name: configName,
          url: `https://127.0.0.1:${watched.port}/mutate`,
          failurePolicy,
          timeoutSeconds: 5,
          meshNamespace: 'flomesh',
          caBundlePem: caBundle(watched.current()),
        }),
      );
    /** A pod through the apiserver (dry run: the webhook is called the same way): what it got, or the apiserver's refusal. */
    const tryPod = (name: string) =>
      core.createNamespacedPod({ namespace: 'shop', body: simplePod(name), dryRun: 'All' }).then(
        (pod) => ({ pod, refusal: undefined }),
        (error: { body?: string }) => ({ pod: undefined, refusal: (JSON.parse(error.body ?? '{}') as { message?: string }).message ?? String(error) }),
      );
    const sidecarOf = (pod: V1Pod) => pod.spec!.initContainers!.find((c) => c.name === 'flb-sidecar')!;
    const envOf = (pod: V1Pod, name: string) => sidecarOf(pod).env!.find((e) => e.name === name)?.value;
    const logLevelOf = (pod: V1Pod) => envOf(pod, 'FLB_LOG_LEVEL');
    // Pods this injector made: those of the mesh "shop" (the suite's injector may still be answering
    // right after the configuration changed).
    const injectedHere = (name: string) =>
      eventually(`${name} injected by the ConfigMap injector`, async () => {
        const { pod } = await tryPod(name);
        return pod && isInjected(pod) && envOf(pod, 'FLB_MESH') === 'shop' ? pod : undefined;
      });
    const injectedWith = (what: string, check: (pod: V1Pod) => boolean) =>
      eventually(what, async () => {
        const pod = await injectedHere('edited');
        return check(pod) ? pod : undefined;
      });
    const refusedNotReady = (name: string) =>
      eventually(`${name} refused by the ConfigMap injector`, async () => {
        const { refusal } = await tryPod(name);
        return refusal?.includes('flb-mesh injector is not ready') ? refusal : undefined;
      });
    const metric = async (name: string) =>
      Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`http://127.0.0.1:${watched.metricsPort}/metrics`)).text())?.[1] ?? 0);
    const notReadyAnswers = () => metric('flb_injector_admission_reviews_total\\{outcome="not-ready"\\}');
    const invalidSettingsEvents = async () =>
      (await core.listNamespacedEvent({ namespace: configMap.namespace })).items.filter(
        (e) => e.involvedObject.name === configMap.name && e.reason === 'InvalidMeshSettings' && e.source?.component === 'flb-injector',
      );
    try {
      // No ConfigMap yet: a 503 that the apiserver treats as a failed call, with our reason in its message.
      await useWatched('Fail');
      expect(await refusedNotReady('too-early')).toMatch(
        /^Internal error occurred: failed calling webhook "namespace.sidecar-injector.flomesh.io": failed to call webhook: flb-mesh injector is not ready: no mesh settings yet: ConfigMap flomesh\/flb-mesh-e2e does not exist$/,
      );
      expect(await metric('flb_injector_mesh_settings_loaded')).toBe(0);
      // failurePolicy Ignore: the pod runs, without a sidecar, as when the injector is down.
      await useWatched('Ignore');
      const admitted = await eventually('a pod admitted under Ignore after a 503 from the ConfigMap injector', async () => {
        const notReadyBefore = await notReadyAnswers();
        const { pod } = await tryPod('ignored');
        return pod && (await notReadyAnswers()) > notReadyBefore ? pod : undefined;
      });
      expect(names(admitted)).toEqual({ init: [], containers: ['app'] });
      await useWatched('Fail');

      // Bad from the start: still nothing injected, and the Event says why.
      const created = await core.createNamespacedConfigMap({ namespace: configMap.namespace, body: body(meshYaml('proxyUid: 0\n')) });
      const firstEvent = await eventually('an InvalidMeshSettings Event from the injector', async () => (await invalidSettingsEvents())[0]);
      expect(firstEvent.involvedObject).toMatchObject({ kind: 'ConfigMap', uid: created.metadata!.uid });
      expect(firstEvent.message).toBe(
        'invalid ConfigMap flomesh/flb-mesh-e2e key mesh.yaml: proxyUid: must not be root (0); no pod is injected until it is fixed (the webhook answers 503, so its failurePolicy decides)',
      );
      expect(await refusedNotReady('still-early')).toMatch(
        /flb-mesh injector is not ready: no mesh settings yet: invalid ConfigMap flomesh\/flb-mesh-e2e key mesh.yaml: proxyUid: must not be root \(0\)$/,
      );

      // Good settings: the next pod has them. Then each edit shows in the next pod.
      await edit(meshYaml('sidecar:\n  logLevel: warn\n'));
      const first = await injectedWith('a pod injected with logLevel warn', (pod) => logLevelOf(pod) === 'warn');
      expect(sidecarOf(first).args).toContain('--admin-port=15000');
      expect(await metric('flb_injector_mesh_settings_loaded')).toBe(1);
      const editedAt = Date.now();
      await edit(meshYaml('sidecar:\n  logLevel: debug\nports:\n  admin: 15100\n'));
      const second = await injectedWith('a pod injected with logLevel debug and admin port 15100', (pod) => logLevelOf(pod) === 'debug');
      console.log(`a ConfigMap edit reached the next injected pod in ${Date.now() - editedAt} ms`);
      expect(sidecarOf(second).args).toContain('--admin-port=15100');
      expect(watched.meshSettings()).toMatchObject({ mesh: { sidecar: { logLevel: 'debug' } }, problem: undefined });

      // A bad edit: the last good settings stay, an Event on the ConfigMap says what is wrong.
      await edit(meshYaml('sidecar:\n  logLevel: loud\nports:\n  admin: 15100\n'));
      const badEdit = await eventually('an Event for the bad edit', async () =>
        (await invalidSettingsEvents()).find((e) => e.message?.includes('sidecar.logLevel')),
      );
      expect(badEdit.message).toMatch(/^invalid ConfigMap flomesh\/flb-mesh-e2e key mesh.yaml: sidecar.logLevel: .*; the last good settings stay in use$/);
      expect(badEdit.type).toBe('Warning');
      expect(watched.meshSettings().problem).toMatch(/sidecar.logLevel/);
      expect(await metric('flb_injector_mesh_settings_refused')).toBe(1);
      const afterBadEdit = await injectedHere('after-bad-edit');
      expect(logLevelOf(afterBadEdit)).toBe('debug');
      expect(sidecarOf(afterBadEdit).args).toContain('--admin-port=15100');

      // Fixed: the next pod has the new settings; deleting the ConfigMap keeps them.
      await edit(meshYaml('sidecar:\n  logLevel: error\n'));
      await injectedWith('a pod injected with logLevel error', (pod) => logLevelOf(pod) === 'error');
      expect(watched.meshSettings().problem).toBeUndefined();
      await core.deleteNamespacedConfigMap({ name: configMap.name, namespace: configMap.namespace });
      await eventually('the deletion seen', async () => (watched.meshSettings().problem?.includes('was deleted') ? true : undefined));
      expect(logLevelOf(await injectedHere('after-delete'))).toBe('error');
      expect((await invalidSettingsEvents()).length).toBe(2);
    } finally {
      await install(injectorUrl(), 'Fail');
      await watched.stop();
      // The forged-review tests below count every flb-injector Event in the mesh's namespace.
      await core.deleteCollectionNamespacedEvent({ namespace: configMap.namespace, fieldSelector: `involvedObject.name=${configMap.name}` });
    }
    await eventually('the main injector to answer again', async () => {
      const { pod } = await tryPod('main-again');
      return pod && isInjected(pod) && envOf(pod, 'FLB_MESH') === settings.mesh.name ? true : undefined;
    });
  });

  it("raises no Event in Kubernetes' own namespaces or the mesh's from forged reviews, even naming real ReplicaSets there", async () => {
    // Not injected (the webhook configuration leaves these namespaces out), but their ReplicaSets are real.
    const targets = [
      { namespace: 'kube-system', owner: await deploy('kube-system', 'forged-target') },
      { namespace: 'flomesh', owner: await deploy('flomesh', 'forged-target') },
      { namespace: 'kube-system', owner: undefined },
      { namespace: 'kube-public', owner: undefined },
    ];
    for (const { namespace, owner } of targets) expect(await forgeReview(namespace, owner, 'forged-')).toBe(200);
    await injector.events.flush();
    for (const namespace of ['kube-system', 'kube-public', 'flomesh']) {
      expect(ours((await core.listNamespacedEvent({ namespace })).items)).toEqual([]);
    }
  });

  it('raises no Event from a forged review whose owner does not exist with that uid; the genuine uid gets one', async () => {
    const replicaSet = await deploy('shop', 'payments');
    expect(await forgeReview('shop', { ...replicaSet, uid: randomUUID() }, 'forged-uid-')).toBe(200);
    expect(await forgeReview('shop', { ...replicaSet, name: 'no-such-replicaset' }, 'forged-name-')).toBe(200);
    expect(await forgeReview('shop', undefined, 'forged-ownerless-')).toBe(200);
    expect(await forgeReview('shop', replicaSet, 'genuine-uid-')).toBe(200);
    await injector.events.flush();
    const messages = ours((await core.listNamespacedEvent({ namespace: 'shop' })).items).map((e) => e.message ?? '');
    expect(messages.filter((m) => m.includes('forged-'))).toEqual([]);
    expect(messages.filter((m) => m.includes('genuine-uid-'))).toHaveLength(1);
    expect(await droppedEvents('unverified')).toBeGreaterThanOrEqual(2);
  });

  it('rate-limits Events per namespace: a flood from one namespace raises a burst, and the others still get theirs', async () => {
    await createNamespace('flooded', { 'flomesh.io/inject': 'enabled' });
    const replicaSet = await deploy('flooded', 'orders');
    const droppedBefore = await droppedEvents('rate-limited');
    const started = Date.now();
    const flood = 300;
    for (let sent = 0; sent < flood; sent += 20) await Promise.all(Array.from({ length: 20 }, () => forgeReview('flooded', replicaSet, 'flood-')));
    const seconds = (Date.now() - started) / 1000;
    expect(await forgeReview('shop', await deploy('shop', 'after-flood'), 'forged-after-flood-')).toBe(200);
    await injector.events.flush();

    const raised = (namespace: string, marker: string) =>
      core.listNamespacedEvent({ namespace }).then((list) => ours(list.items).filter((e) => e.message?.includes(marker)).length);
    const flooded = await raised('flooded', 'flood-');
    console.log(`${flood} forged reviews in ${seconds.toFixed(1)} s raised ${flooded} Events`);
    // The bucket held at most a burst (less what the Deployment's own pod used) plus what refilled meanwhile.
    expect(flooded).toBeGreaterThan(0);
    expect(flooded).toBeLessThanOrEqual(EVENT_RATE.burst + Math.ceil(seconds * EVENT_RATE.perSecond));
    expect((await droppedEvents('rate-limited')) - droppedBefore).toBeGreaterThanOrEqual(flood - flooded);
    expect(await raised('shop', 'pod forged-after-flood-')).toBe(1);
  });

  it('leaves opted-out pods and unlabelled namespaces alone, and injects pods labelled "true" anywhere', async () => {
    await core.createNamespacedPod({ namespace: 'shop', body: simplePod('opted-out', { 'flomesh.io/inject': 'false' }) });
    await core.createNamespacedPod({ namespace: 'legacy', body: simplePod('plain') });
    await core.createNamespacedPod({ namespace: 'legacy', body: simplePod('opted-in', { 'flomesh.io/inject': 'true' }) });
    const read = (namespace: string, name: string) => core.readNamespacedPod({ name, namespace });
    const optedOut = await read('shop', 'opted-out');
    expect(names(optedOut)).toEqual({ init: [], containers: ['app'] });
    expect(optedOut.metadata?.annotations?.['flomesh.io/sidecar-status']).toBeUndefined();
    expect(optedOut.spec!.containers[0]!.readinessProbe!.httpGet!.port).toBe('http');
    expect(names(await read('legacy', 'plain'))).toEqual({ init: [], containers: ['app'] });
    expect(isInjected(await read('legacy', 'opted-in'))).toBe(true);
  });

  it('refuses a pod naming every bad label and annotation at once', async () => {
    const pod = simplePod('bad-everything', { 'flomesh.io/inject': 'yes' });
    pod.metadata!.annotations = { 'flomesh.io/outbound-port-exclusion-list': 'postgres', 'flomesh.io/proxy-memory-limit': 'lots' };
    const refusal = await core.createNamespacedPod({ namespace: 'shop', body: pod }).then(
      () => 'admitted',
      (error: { body?: string }) => (JSON.parse(error.body ?? '{}') as { message?: string }).message,
    );
    expect(refusal).toBe(
      'admission webhook "namespace.sidecar-injector.flomesh.io" denied the request: flb-mesh injector: pod label flomesh.io/inject must be "true" or "false", not "yes"; ' +
        'annotation flomesh.io/outbound-port-exclusion-list: "postgres" is not a port number 1-65535 (expected a comma-separated list such as "5432,6379"); ' +
        'annotation flomesh.io/proxy-memory-limit: "lots" is not a Kubernetes quantity such as 100m or 128Mi',
    );
  });

  it('refuses a pod whose exclusion annotation is invalid, saying which', async () => {
    const pod = simplePod('bad-annotation');
    pod.metadata!.annotations = { 'flomesh.io/outbound-ip-range-exclusion-list': '10.0.0.0/8,not-a-cidr' };
    const refusal = await core.createNamespacedPod({ namespace: 'shop', body: pod }).then(
      () => 'admitted',
      (error: { body?: string }) => (JSON.parse(error.body ?? '{}') as { message?: string }).message,
    );
    expect(refusal).toBe(
      'admission webhook "namespace.sidecar-injector.flomesh.io" denied the request: flb-mesh injector: annotation flomesh.io/outbound-ip-range-exclusion-list: "not-a-cidr" is not an IP address or CIDR (expected a comma-separated list such as "10.0.0.0/8,169.254.169.254/32")',
    );
  });

  it('tells users of a Pod Security restricted namespace why, and points to CNI mode', async () => {
    await createNamespace('secure', { 'flomesh.io/inject': 'enabled', 'pod-security.kubernetes.io/enforce': 'restricted' });
    const manifest = JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'api', namespace: 'secure' }, spec: simplePod('api').spec });
    // Not spawnSync: the injector answers from this process's event loop.
    const kubectl = await execa(testBinary('kubectl'), ['create', '-f', '-'], { input: manifest, reject: false, env: { KUBECONFIG: plane.kubeconfigPath } });
    expect(kubectl.exitCode).not.toBe(0);
    expect(kubectl.stderr).toContain('Warning: namespace secure enforces Pod Security "restricted", which rejects the flb-init init container');
    expect(kubectl.stderr).toContain('use the CNI interception mode');
    expect(kubectl.stderr).toMatch(/violates PodSecurity "restricted/);
    // Pods a controller makes: nobody sees the warning, so it is an Event on the ReplicaSet.
    const replicaSet = await deploy('secure', 'api');
    const conflict = await eventually('a PodSecurityConflict Event', async () => {
      const list = await core.listNamespacedEvent({ namespace: 'secure' });
      return list.items.find((e) => e.reason === 'PodSecurityConflict');
    });
    expect(conflict.involvedObject).toMatchObject({ kind: 'ReplicaSet', name: replicaSet.name, uid: replicaSet.uid });
    expect(conflict.message).toContain('use the CNI interception mode');
  });

  it('has no side effects on a server-side dry run', async () => {
    const dryRuns = async () =>
      Number(
        /flb_injector_injections_total\{reinvocation="false",dry_run="true"\} (\d+)/.exec(
          await (await fetch(`http://127.0.0.1:${injector.metricsPort}/metrics`)).text(),
        )?.[1] ?? 0,
      );
    const before = await dryRuns();
    const dry = await core.createNamespacedPod({ namespace: 'legacy', body: simplePod('dry-run-pod', { 'flomesh.io/inject': 'true' }), dryRun: 'All' });
    expect(isInjected(dry)).toBe(true);
    await expect(core.readNamespacedPod({ name: 'dry-run-pod', namespace: 'legacy' })).rejects.toMatchObject({ code: 404 });
    await injector.events.flush();
    const events = await core.listNamespacedEvent({ namespace: 'legacy' });
    expect(events.items.filter((e) => e.message?.includes('dry-run-pod'))).toEqual([]);
    expect((await dryRuns()) - before).toBe(1);
  });

  it('exports Prometheus metrics: reviews, injections, skips by reason, latency', async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${injector.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/flb_injector_admission_reviews_total\{outcome="inject"\} \d+/);
    expect(Number(/flb_injector_admission_reviews_total\{outcome="deny"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
    expect(metrics).toMatch(/flb_injector_review_duration_seconds_bucket\{le="0.001"\} \d+/);
  });

  it('with the injector unreachable: failurePolicy Fail refuses with a readable message, Ignore admits', async () => {
    const [deadPort] = await freePorts(1);
    await install(`https://127.0.0.1:${deadPort}/mutate`, 'Fail');
    await eventually('the apiserver to use the new configuration', async () => {
      try {
        await core.createNamespacedPod({ namespace: 'shop', body: simplePod('probe-config'), dryRun: 'All' });
        return undefined;
      } catch (error) {
        return String((error as { body?: unknown }).body ?? error).includes('failed calling webhook') ? true : undefined;
      }
    });
    await expect(core.createNamespacedPod({ namespace: 'shop', body: simplePod('refused') })).rejects.toMatchObject({
      body: expect.stringMatching(/failed calling webhook \\"namespace.sidecar-injector.flomesh.io\\".*connection refused/),
    });

    await install(`https://127.0.0.1:${deadPort}/mutate`, 'Ignore');
    const admitted = await eventually('the Ignore policy to apply', async () => {
      try {
        return await core.createNamespacedPod({ namespace: 'shop', body: simplePod('admitted') });
      } catch {
        return undefined;
      }
    });
    expect(names(admitted)).toEqual({ init: [], containers: ['app'] });
    await install(injectorUrl(), 'Fail');
  });

  it('injects every pod created while its certificates rotate (serving certificate and CA)', async () => {
    const firstCa = injector.current().caPem;
    const renewalsBefore = (await injector.metrics.certificateRenewals.get()).values[0]?.value ?? 0;
    // The configuration was swapped in the previous test; wait until our injector answers again.
    await eventually('the injector to be back', async () => {
      const pod = await core.createNamespacedPod({ namespace: 'shop', body: simplePod('back'), dryRun: 'All' });
      return isInjected(pod) ? true : undefined;
    });
    const created: string[] = [];
    const failures: string[] = [];
    const deadline = Date.now() + 25_000;
    let i = 0;
    while (Date.now() < deadline) {
      const name = `rotating-${i++}`;
      try {
        const pod = await core.createNamespacedPod({ namespace: 'shop', body: simplePod(name) });
        if (!isInjected(pod)) failures.push(`${name} was not injected`);
        created.push(name);
      } catch (error) {
        failures.push(`${name}: ${String((error as { body?: unknown }).body ?? error)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const renewals = ((await injector.metrics.certificateRenewals.get()).values[0]?.value ?? 0) - renewalsBefore;
    console.log(`${created.length} pods created during ${renewals} certificate renewals`);
    expect(failures).toEqual([]);
    expect(created.length).toBeGreaterThan(50);
    expect(renewals).toBeGreaterThanOrEqual(2);
    expect(injector.current().caPem).not.toBe(firstCa);
  });
});
