// The chart with webhook.certManager.enabled: what it renders in both certificate modes (helm
// template), and on the test control plane with pods that run, the injector serving the
// certificate cert-manager would issue. cert-manager itself cannot run here (its images come from
// outside), so the test does its two jobs as it would: it issues the Certificate the chart renders
// into the Secret the Certificate names (cert-manager's controller), and it copies that Secret's
// ca.crt into the webhook configuration the annotation points at (its CA injector). Then the
// apiserver calls the injector, pods are injected, and a renewal written into the Secret is served
// by the running injectors without a restart, while the caBundle stays as "cert-manager" set it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { AdmissionregistrationV1Api, ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import { execa } from 'execa';
import YAML from 'yaml';
import { createLogger } from '../common/log.js';
import { createCertificateAuthority, issueCertificate, type CertificateAuthority } from '../common/pki.js';
import { startDevEnvironment, type DevEnvironment } from '../devenv/environment.js';
import { CHECKOUT, DEMO_IMAGE } from '../devenv/node-simulator/images.js';
import { isPodReady } from '../devenv/apps/workloads.js';
import { CHART_DIR, find, Helm, type KubeObject } from './harness/chart.js';
import { eventually } from './harness/eventually.js';
import type { CheckReport } from './harness/flb-check.js';
import { requireRoot } from './harness/netns.js';

type Container = { name: string; args?: string[]; volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] };
type PodSpec = { containers: Container[]; volumes?: { name: string; secret?: { secretName: string } }[] };
type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
type CertificateSpec = {
  secretName: string;
  dnsNames: string[];
  isCA?: boolean;
  duration?: string;
  renewBefore?: string;
  issuerRef: { name: string; kind: string; group: string };
};
const podSpec = (o: KubeObject) => (o.spec as { template: { spec: PodSpec } }).template.spec;
const injectorContainer = (objects: KubeObject[]) => podSpec(find(objects, 'Deployment', 'flb-injector')).containers[0]!;
const rules = (objects: KubeObject[], kind: 'Role' | 'ClusterRole') => (find(objects, kind, 'flb-injector').rules as Rule[]) ?? [];
const certManagerObjects = (objects: KubeObject[]) => objects.filter((o) => o.apiVersion.startsWith('cert-manager.io/'));
const INJECT_CA_FROM = 'cert-manager.io/inject-ca-from';

describe('the chart renders the webhook certificate two ways', () => {
  let helm: Helm;
  let own: KubeObject[];
  let selfSigned: KubeObject[];
  beforeAll(async () => {
    helm = new Helm();
    own = await helm.render();
    selfSigned = await helm.render({ webhook: { certManager: { enabled: true } } }, { namespace: 'mesh-system' });
  });
  afterAll(() => helm?.dispose());

  it("by default, the injector's own: it keeps the Secret and the caBundle, and nothing of cert-manager is rendered", () => {
    expect(certManagerObjects(own)).toEqual([]);
    const injector = injectorContainer(own);
    expect(injector.args).toEqual(expect.arrayContaining(['--secret=flb-injector-tls', '--config-name=flb-sidecar-injector']));
    expect(injector.args!.some((a) => a.startsWith('--tls-dir'))).toBe(false);
    const webhook = find(own, 'MutatingWebhookConfiguration', 'flb-sidecar-injector');
    expect(webhook.metadata.annotations?.[INJECT_CA_FROM]).toBeUndefined();
    expect(JSON.stringify(webhook)).not.toContain('caBundle');
    expect(rules(own, 'Role').filter((r) => r.resources.includes('secrets'))).toHaveLength(2);
    expect(rules(own, 'ClusterRole').find((r) => r.resources.includes('mutatingwebhookconfigurations'))?.verbs).toEqual(['get', 'update']);
  });

  it("with cert-manager: its own CA chain, a Certificate for the webhook's Service, mounted by the injector, the caBundle left to cert-manager", () => {
    expect(certManagerObjects(selfSigned).map((o) => `${o.kind}/${o.metadata.name}`)).toEqual([
      'Certificate/flb-injector-ca',
      'Certificate/flb-injector',
      'Issuer/flb-injector-selfsigned',
      'Issuer/flb-injector-ca',
    ]);
    for (const o of certManagerObjects(selfSigned)) expect(o.metadata.namespace).toBe('mesh-system');
    expect(find(selfSigned, 'Issuer', 'flb-injector-selfsigned').spec).toEqual({ selfSigned: {} });
    const ca = find(selfSigned, 'Certificate', 'flb-injector-ca').spec as CertificateSpec;
    expect(ca).toMatchObject({ isCA: true, secretName: 'flb-injector-ca', issuerRef: { name: 'flb-injector-selfsigned', kind: 'Issuer' } });
    expect(find(selfSigned, 'Issuer', 'flb-injector-ca').spec).toEqual({ ca: { secretName: 'flb-injector-ca' } });
    const serving = find(selfSigned, 'Certificate', 'flb-injector').spec as CertificateSpec;
    expect(serving).toMatchObject({
      dnsNames: ['flb-injector.mesh-system.svc', 'flb-injector.mesh-system.svc.cluster.local'],
      duration: '2160h',
      renewBefore: '720h',
      issuerRef: { name: 'flb-injector-ca', kind: 'Issuer', group: 'cert-manager.io' },
    });
    expect(serving.isCA).toBeUndefined();

    // The injector serves the Secret that Certificate fills, from the folder it is mounted on, and makes no certificate of its own.
    const spec = podSpec(find(selfSigned, 'Deployment', 'flb-injector'));
    const volume = spec.volumes!.find((v) => v.secret?.secretName === serving.secretName)!;
    const mount = spec.containers[0]!.volumeMounts!.find((m) => m.name === volume.name)!;
    expect(mount.readOnly).toBe(true);
    const args = spec.containers[0]!.args!;
    expect(args).toContain(`--tls-dir=${mount.mountPath}`);
    for (const flag of ['--secret', '--config-name', '--dns-name', '--cert-validity', '--ca-validity']) {
      expect(args.filter((a) => a.startsWith(flag))).toEqual([]);
    }

    // cert-manager's CA injector fills the caBundle from that Certificate; the chart renders none, and the injector may not touch it.
    const webhook = find(selfSigned, 'MutatingWebhookConfiguration', 'flb-sidecar-injector');
    expect(webhook.metadata.annotations).toEqual({ [INJECT_CA_FROM]: 'mesh-system/flb-injector' });
    expect(JSON.stringify(webhook)).not.toContain('caBundle');
    expect(rules(selfSigned, 'ClusterRole').filter((r) => r.resources.includes('mutatingwebhookconfigurations'))).toEqual([]);
    expect(rules(selfSigned, 'Role').filter((r) => r.resources.includes('secrets'))).toEqual([]);
  });

  it('renders the webhook configuration `flb webhook install --cert-manager-certificate` prints', async () => {
    const printed = await execa(process.execPath, [
      join(CHECKOUT, 'bin/flb.js'),
      'webhook',
      'install',
      '--service',
      'mesh-system/flb-injector:443',
      '--namespace',
      'mesh-system',
      '--cert-manager-certificate',
      'mesh-system/flb-injector',
      '--print',
    ]);
    const built = YAML.parse(printed.stdout) as KubeObject;
    const rendered = find(selfSigned, 'MutatingWebhookConfiguration', 'flb-sidecar-injector');
    const { labels: renderedLabels, ...renderedMetadata } = rendered.metadata;
    const { labels: builtLabels, ...builtMetadata } = built.metadata;
    expect({ ...rendered, metadata: renderedMetadata }).toEqual({ ...built, metadata: builtMetadata });
    expect(renderedLabels).toMatchObject(builtLabels!);
  });

  it("signs with the user's issuer when one is named, and renders no CA of its own", async () => {
    const objects = await helm.render({
      webhook: {
        certManager: { enabled: true, issuerRef: { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' }, duration: '720h', renewBefore: '240h' },
      },
    });
    expect(certManagerObjects(objects).map((o) => `${o.kind}/${o.metadata.name}`)).toEqual(['Certificate/flb-injector']);
    expect(find(objects, 'Certificate', 'flb-injector').spec).toMatchObject({
      issuerRef: { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' },
      duration: '720h',
      renewBefore: '240h',
    });
  });

  it('refuses bad cert-manager values naming the field', async () => {
    const cases: [unknown, RegExp][] = [
      [{ webhook: { certManager: { enabled: true, duration: 'ninety days' } } }, /\/webhook\/certManager\/duration/],
      [{ webhook: { certManager: { enabled: true, issuerRef: { name: 'Corp CA' } } } }, /\/webhook\/certManager\/issuerRef\/name/],
      [{ webhook: { certManager: { enabled: true, issuer: 'corp-ca' } } }, /\/webhook\/certManager.*issuer/],
      [{ webhook: { certManager: { enabled: 'sometimes' } } }, /\/webhook\/certManager\/enabled/],
    ];
    for (const [values, field] of cases) {
      const result = await helm.run(['template', 'flb', CHART_DIR, '-n', 'flomesh', '-f', helm.valuesFile('bad', values)]);
      expect({ values, exitCode: result.exitCode }).toEqual({ values, exitCode: 1 });
      expect(result.stderr).toMatch(field);
    }
  });
});

/** The two kinds the chart renders, as cert-manager's CRDs serve them (their schemas are not checked here). */
const certManagerCrd = (kind: string, plural: string) => ({
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${plural}.cert-manager.io` },
  spec: {
    group: 'cert-manager.io',
    scope: 'Namespaced',
    names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        // The client's name for x-kubernetes-preserve-unknown-fields (it drops names it does not know).
        schema: { openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true } },
      },
    ],
  },
});

/** The certificate a TLS client is shown at address:port (the injector's pod), as a SHA-256 fingerprint. */
function servedFingerprint(host: string, port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, ca, servername: 'flb-injector.flomesh.svc', timeout: 3000 }, () => {
      const shown = socket.getPeerX509Certificate();
      socket.end();
      if (shown) resolve(shown.fingerprint256);
      else reject(new Error('no certificate shown'));
    });
    socket.on('timeout', () => socket.destroy(new Error('TLS handshake timed out')));
    socket.on('error', reject);
  });
}

describe('the chart with cert-manager on the test control plane with pods that run', () => {
  const MESH_NS = 'flomesh';
  const APP_NS = 'cm-shop';
  let env: DevEnvironment;
  let helm: Helm;
  let core: CoreV1Api;
  let admission: AdmissionregistrationV1Api;
  let custom: CustomObjectsApi;
  let authority: CertificateAuthority;
  let certificate: CertificateSpec;

  const injectorPods = async () => (await core.listNamespacedPod({ namespace: MESH_NS, labelSelector: 'app.kubernetes.io/name=flb-injector' })).items;
  const caBundles = async () =>
    ((await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' })).webhooks ?? []).map((w) => w.clientConfig.caBundle);
  /** What cert-manager's controller does for the Certificate: a key and certificate for its names, signed by its CA, into its Secret. */
  const issue = async () => {
    const serving = issueCertificate(authority, { commonName: certificate.dnsNames[0]!, usage: 'server', dnsNames: certificate.dnsNames, validDays: 90 });
    const b64 = (text: string) => Buffer.from(text).toString('base64');
    const body = {
      metadata: { name: certificate.secretName, namespace: MESH_NS, annotations: { 'cert-manager.io/certificate-name': 'flb-injector' } },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': b64(serving.certPem), 'tls.key': b64(serving.keyPem), 'ca.crt': b64(authority.certPem) },
    };
    try {
      await core.replaceNamespacedSecret({ name: certificate.secretName, namespace: MESH_NS, body });
    } catch (error) {
      if ((error as { code?: number }).code !== 404) throw error;
      await core.createNamespacedSecret({ namespace: MESH_NS, body });
    }
    return new X509Certificate(serving.certPem).fingerprint256;
  };
  const createPod = async (name: string): Promise<V1Pod> =>
    core.createNamespacedPod({
      namespace: APP_NS,
      body: { metadata: { name, labels: { app: name } }, spec: { containers: [{ name: 'app', image: DEMO_IMAGE, args: ['echo'] }] } },
    });
  const injected = (pod: V1Pod) => (pod.spec?.initContainers ?? []).map((c) => c.name);

  beforeAll(async () => {
    requireRoot('the chart cert-manager end-to-end test');
    env = await startDevEnvironment({
      log: createLogger('chart-cert-manager-test', 'silent'),
      nodes: [{ name: 'cm-a', zone: 'zone-a' }],
      controlPlane: { apiserverArgs: ['--enable-aggregator-routing=true'] },
      serviceProxy: true,
      backoffBaseMs: 1000,
    });
    core = env.plane.kubeConfig.makeApiClient(CoreV1Api);
    admission = env.plane.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    custom = env.plane.kubeConfig.makeApiClient(CustomObjectsApi);
    helm = new Helm(env.plane.kubeconfigPath);
    const extensions = env.plane.kubeConfig.makeApiClient(ApiextensionsV1Api);
    for (const [kind, plural] of [
      ['Certificate', 'certificates'],
      ['Issuer', 'issuers'],
    ] as const) {
      await extensions.createCustomResourceDefinition({ body: certManagerCrd(kind, plural) });
    }
    await eventually('the cert-manager kinds served', async () => {
      await custom.listNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'default', plural: 'certificates' });
      await custom.listNamespacedCustomObject({ group: 'cert-manager.io', version: 'v1', namespace: 'default', plural: 'issuers' });
      return true;
    });
    authority = createCertificateAuthority('flb-mesh injector CA (as cert-manager would make it)');
  });
  afterAll(async () => {
    helm?.dispose();
    await env?.stop();
  });

  it("installs; the injectors wait for the Certificate's Secret, then serve it, and the apiserver calls them once the caBundle is set", async () => {
    const install = await helm.run(['install', 'flb', CHART_DIR, '--namespace', MESH_NS, '--create-namespace', '--set', 'webhook.certManager.enabled=true']);
    expect({ exitCode: install.exitCode, stderr: install.stderr }).toEqual({ exitCode: 0, stderr: '' });
    certificate = (
      (await custom.getNamespacedCustomObject({
        group: 'cert-manager.io',
        version: 'v1',
        namespace: MESH_NS,
        plural: 'certificates',
        name: 'flb-injector',
      })) as {
        spec: CertificateSpec;
      }
    ).spec;
    expect(certificate.dnsNames).toEqual([`flb-injector.${MESH_NS}.svc`, `flb-injector.${MESH_NS}.svc.cluster.local`]);

    // Until cert-manager has issued it, the injectors cannot start (their Secret volume is missing).
    await new Promise((r) => setTimeout(r, 3000));
    expect((await injectorPods()).filter(isPodReady)).toEqual([]);
    const firstFingerprint = await issue();

    const ready = await eventually(
      'two injectors Ready',
      async () => {
        const pods = (await injectorPods()).filter(isPodReady);
        return pods.length === 2 ? pods : undefined;
      },
      120_000,
    );
    for (const pod of ready) expect(await servedFingerprint(pod.status!.podIP!, 9443, authority.certPem)).toBe(firstFingerprint);

    // The CA injector's part: the caBundle from the Secret of the Certificate the annotation names.
    const config = await admission.readMutatingWebhookConfiguration({ name: 'flb-sidecar-injector' });
    expect(config.metadata?.annotations?.[INJECT_CA_FROM]).toBe(`${MESH_NS}/flb-injector`);
    expect(await caBundles()).toEqual([undefined, undefined]);
    const secret = await core.readNamespacedSecret({ name: certificate.secretName, namespace: MESH_NS });
    for (const webhook of config.webhooks ?? []) webhook.clientConfig.caBundle = secret.data!['ca.crt'];
    await admission.replaceMutatingWebhookConfiguration({ name: 'flb-sidecar-injector', body: config });

    await core.createNamespace({ body: { metadata: { name: APP_NS, labels: { 'flomesh.io/inject': 'enabled' } } } });
    await eventually('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: APP_NS }));
    const pod = await eventually('a pod created through the webhook', () => createPod('first').catch(() => undefined), 30_000);
    expect(injected(pod)).toEqual(['flb-sidecar', 'flb-init']);
    expect(pod.metadata?.labels?.['flomesh.io/sidecar-injected']).toBe('true');
    // Nothing of the injector's own certificates: no Secret written.
    await expect(core.readNamespacedSecret({ name: 'flb-injector-tls', namespace: MESH_NS })).rejects.toMatchObject({ code: 404 });
  });

  it('serves a renewed certificate without a restart, and leaves the caBundle as cert-manager set it', async () => {
    const before = await injectorPods();
    const bundles = await caBundles();
    const renewedFingerprint = await issue();
    // The simulated kubelet refreshes Secret volumes every 5 s by the ..data swap, as the kubelet does (every minute or so).
    for (const pod of before) {
      await eventually(
        `${pod.metadata!.name} serving the renewed certificate`,
        async () => ((await servedFingerprint(pod.status!.podIP!, 9443, authority.certPem)) === renewedFingerprint ? true : undefined),
        30_000,
      );
    }
    const after = await injectorPods();
    expect(after.map((p) => [p.metadata!.uid, p.status!.containerStatuses![0]!.restartCount])).toEqual(before.map((p) => [p.metadata!.uid, 0]));
    const pod = await createPod('second');
    expect(injected(pod)).toEqual(['flb-sidecar', 'flb-init']);
    expect(await caBundles()).toEqual(bundles);
  });

  it("flb check's webhook checks pass, reading cert-manager's Secret through the Certificate the webhook configuration names", async () => {
    const run = await execa(process.execPath, [join(CHECKOUT, 'bin/flb.js'), 'check', '--kubeconfig', env.plane.kubeconfigPath, '-o', 'json'], {
      reject: false,
      env: { FLB_LOG_LEVEL: 'silent' },
      timeout: 60_000,
    });
    const report = JSON.parse(run.stdout) as CheckReport;
    expect(report.results.filter((r) => r.id.startsWith('webhook-')).map((r) => [r.id, r.status, r.detail])).toEqual([
      ['webhook-config', 'pass', expect.any(String)],
      ['webhook-answers', 'pass', expect.any(String)],
      ['webhook-ca-bundle', 'pass', expect.any(String)],
    ]);
  });
});
