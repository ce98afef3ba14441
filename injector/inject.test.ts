// Golden tests in the style of Istio's: every `testdata/inject/<name>.yaml` is a fixture (pod,
// namespace, mesh and settings overrides); `<name>.golden.yaml` is the decision and the injected
// pod. UPDATE_GOLDEN=1 rewrites goldens; a golden without a fixture fails the suite.
import { describe, expect, it } from '@jest/globals';
import { readFileSync, readdirSync, writeFileSync, existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Container, V1Namespace, V1Pod } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';
import YAML from 'yaml';
import {
  API_VERSION,
  INTERCEPTION_ANNOTATION,
  InterceptionSchema,
  MeshSchema,
  REPO_CA_CONFIGMAP,
  REPO_CA_CONFIGMAP_KEY,
  REPO_CA_FILE_ENV,
  SIDECAR_CONTAINER_NAME,
  SIDECAR_INJECTED_LABEL,
  SIDECAR_STATUS_ANNOTATION,
  type Mesh,
} from '../common/contract/index.js';
import { MESH_IMAGE } from '../common/contract/version.js';
import { injectPod, REPO_VOLUME, type InjectionResult, type InjectorSettings } from './inject.js';
import { patchBase64, patchJson } from './patch.js';

const dir = new URL('./testdata/inject/', import.meta.url).pathname;
const update = process.env.UPDATE_GOLDEN === '1';
const fixtures = readdirSync(dir)
  .filter((f) => f.endsWith('.yaml') && !f.endsWith('.golden.yaml'))
  .map((f) => f.slice(0, -'.yaml'.length))
  .sort();

interface Fixture {
  namespace?: V1Namespace;
  pod: V1Pod;
  mesh?: Record<string, unknown>;
  settings?: Partial<Omit<InjectorSettings, 'mesh'>>;
}

function settingsFor(fixture: Fixture): InjectorSettings {
  return {
    mesh: MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', ...fixture.mesh }),
    nativeSidecars: true,
    version: '0.1.0-test',
    ...fixture.settings,
  };
}

function apply(pod: V1Pod, result: InjectionResult): V1Pod {
  if (result.action !== 'inject') return pod;
  // validate: every op must apply to the pod exactly as given (paths exist, indexes in range).
  return jsonpatch.applyPatch(structuredClone(pod), result.patch, true, false).newDocument;
}

function goldenOf(result: InjectionResult, injected: V1Pod): unknown {
  switch (result.action) {
    case 'inject':
      return { action: 'inject', because: result.because, reinvocation: result.reinvocation, warnings: result.warnings, pod: injected };
    case 'skip':
      return { action: 'skip', reason: result.reason, message: result.message, warnings: result.warnings };
    case 'deny':
      return { action: 'deny', message: result.message };
  }
}

describe('injection fixtures', () => {
  it('finds fixtures', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(20);
  });

  it('has no stale goldens', () => {
    const stale = readdirSync(dir)
      .filter((f) => f.endsWith('.golden.yaml'))
      .filter((f) => !fixtures.includes(f.slice(0, -'.golden.yaml'.length)));
    if (update) for (const f of stale) unlinkSync(join(dir, f));
    else expect(stale).toEqual([]);
  });

  describe.each(fixtures)('%s', (name) => {
    const fixture = YAML.parse(readFileSync(join(dir, `${name}.yaml`), 'utf8')) as Fixture;
    const settings = settingsFor(fixture);
    const result = injectPod(fixture.pod, fixture.namespace, settings);
    const injected = apply(fixture.pod, result);

    it('matches its golden (UPDATE_GOLDEN=1 regenerates)', () => {
      const goldenPath = join(dir, `${name}.golden.yaml`);
      const actual = YAML.stringify(goldenOf(result, injected), { lineWidth: 0 });
      if (update) writeFileSync(goldenPath, actual);
      expect(existsSync(goldenPath)).toBe(true);
      expect(actual).toBe(readFileSync(goldenPath, 'utf8'));
    });

    it('is idempotent: injecting the injected pod changes nothing', () => {
      const again = injectPod(injected, fixture.namespace, settings);
      expect(apply(injected, again)).toEqual(injected);
      if (result.action === 'inject') expect(again).toMatchObject({ action: 'skip', reason: 'already-injected' });
    });

    it("writes the webhook's patch text exactly as JSON.stringify would, from the parts built once per mesh", () => {
      if (result.action !== 'inject') return;
      expect(patchJson(result.patch)).toBe(JSON.stringify(result.patch));
      // The base64 the webhook answers with: the same JSON, with spaces between tokens where the
      // parts encoded once end.
      const decoded = Buffer.from(patchBase64(result.patch), 'base64').toString();
      expect(JSON.stringify(JSON.parse(decoded))).toBe(JSON.stringify(result.patch));
      // A second pod of the same mesh gets the same parts, and still the same text.
      const again = injectPod(structuredClone(fixture.pod), fixture.namespace, settings);
      expect(again.action === 'inject' && patchJson(again.patch)).toBe(JSON.stringify(result.patch));
    });

    it('does not touch the input', () => {
      const before = YAML.parse(readFileSync(join(dir, `${name}.yaml`), 'utf8')) as Fixture;
      expect(fixture.pod).toEqual(before.pod);
    });
  });
});

describe('injected pods', () => {
  const load = (name: string) => YAML.parse(readFileSync(join(dir, `${name}.yaml`), 'utf8')) as Fixture;
  const injectFixture = (name: string, overrides: Partial<InjectorSettings> = {}) => {
    const fixture = load(name);
    const result = injectPod(fixture.pod, fixture.namespace, { ...settingsFor(fixture), ...overrides });
    return { result, pod: apply(fixture.pod, result) };
  };
  const initContainer = (pod: V1Pod, name: string) => pod.spec!.initContainers!.find((c) => c.name === name)!;

  it('run the interception init container as root with NET_ADMIN and NET_RAW only, never privileged', () => {
    const { pod } = injectFixture('deployment-pod');
    const init = initContainer(pod, 'flb-init');
    expect(init.command).toEqual(['flb', 'iptables', 'apply']);
    expect(init.securityContext).toMatchObject({
      runAsUser: 0,
      privileged: false,
      allowPrivilegeEscalation: false,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    });
  });

  it('run the sidecar as UID 1500 without privilege escalation, as a native sidecar started before the init container', () => {
    const { pod } = injectFixture('deployment-pod');
    expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-sidecar', 'flb-init']);
    const sidecar = initContainer(pod, 'flb-sidecar');
    expect(sidecar).toMatchObject({ name: 'flb-sidecar', restartPolicy: 'Always' });
    expect(sidecar.securityContext).toMatchObject({ runAsUser: 1500, runAsNonRoot: true, allowPrivilegeEscalation: false });
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['app', 'worker']);
  });

  it('apply the rules while the native sidecar starts, and hold the app in flb-init until the sidecar is ready', () => {
    const { pod, result } = injectFixture('deployment-pod');
    const sidecar = initContainer(pod, 'flb-sidecar');
    // The kubelet counts a restartable init container with neither as started at once, and runs flb-init.
    expect(sidecar.lifecycle?.postStart).toBeUndefined();
    expect(sidecar.startupProbe).toBeUndefined();
    expect(initContainer(pod, 'flb-init').args).toEqual(['--wait-for-sidecar', '--sidecar-admin-port=15000', '--sidecar-timeout=120s']);
    expect(result.action === 'inject' && JSON.parse(pod.metadata!.annotations![SIDECAR_STATUS_ANNOTATION]!)).toMatchObject({
      native: true,
      initContainers: ['flb-sidecar', 'flb-init'],
    });
  });

  it("keep flb-init first, and the sidecar's postStart hook and startup probe, when the mesh's init command or waiter is another program", () => {
    for (const change of [
      (m: Mesh) => ({ ...m, init: { ...m.init, command: ['/usr/local/bin/proxy-init'] } }),
      (m: Mesh) => ({ ...m, sidecar: { ...m.sidecar, waitReadyCommand: ['pilot-agent', 'wait'] } }),
    ]) {
      const fixture = load('deployment-pod');
      const settings = settingsFor(fixture);
      const pod = apply(fixture.pod, injectPod(fixture.pod, fixture.namespace, { ...settings, mesh: change(settings.mesh) }));
      expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-init', 'flb-sidecar']);
      expect(initContainer(pod, 'flb-init').args).toBeUndefined();
      const sidecar = initContainer(pod, 'flb-sidecar');
      expect(sidecar.lifecycle!.postStart!.exec!.command![0]).toMatch(/flb|pilot-agent/);
      expect(sidecar.startupProbe).toEqual({ httpGet: { path: '/ready', port: 15902, scheme: 'HTTP' }, periodSeconds: 1, failureThreshold: 120 });
    }
  });

  it('give the sidecar what it needs to find its id and the repo', () => {
    const { pod } = injectFixture('deployment-pod');
    const env = Object.fromEntries(initContainer(pod, 'flb-sidecar').env!.map((e) => [e.name, e.value ?? e.valueFrom?.fieldRef?.fieldPath]));
    expect(env).toMatchObject({
      POD_NAME: 'metadata.name',
      POD_NAMESPACE: 'metadata.namespace',
      POD_IP: 'status.podIP',
      SERVICE_ACCOUNT: 'spec.serviceAccountName',
      FLB_WORKLOAD_KIND: 'Deployment',
      FLB_WORKLOAD_NAME: 'orders',
      FLB_REPO_URL: 'https://flb-repo.flomesh.svc:6060',
    });
    const repo = pod.spec!.volumes!.find((v) => v.name === 'flb-repo-access')!;
    expect(repo.projected!.sources![0]!.serviceAccountToken).toMatchObject({ audience: 'flb-repo', path: 'token' });
  });

  it("mount the repo's CA from the flb-repo-ca ConfigMap of the pod's namespace, not optional, and name the file for the sidecar", () => {
    const { pod } = injectFixture('deployment-pod');
    const sidecar = pod.spec!.initContainers!.find((c) => c.name === SIDECAR_CONTAINER_NAME)!;
    const mount = sidecar.volumeMounts!.find((m) => m.name === REPO_VOLUME)!;
    const ca = pod.spec!.volumes!.find((v) => v.name === REPO_VOLUME)!.projected!.sources!.find((s) => s.configMap)!.configMap!;
    // Not optional: without its CA the sidecar cannot trust the repo; the kubelet holds the pod and says why.
    expect(ca).toEqual({ name: REPO_CA_CONFIGMAP, items: [{ key: REPO_CA_CONFIGMAP_KEY, path: 'ca.crt' }] });
    expect(sidecar.env!.find((e) => e.name === REPO_CA_FILE_ENV)?.value).toBe(`${mount.mountPath}/ca.crt`);
    expect(mount.readOnly).toBe(true);
    // A plain-HTTP repo needs no CA: none is asked for.
    const http = injectFixture('http-repo').pod;
    expect(JSON.stringify(http.spec!.volumes)).not.toContain(REPO_CA_CONFIGMAP);
    expect(http.spec!.initContainers!.find((c) => c.name === SIDECAR_CONTAINER_NAME)!.env!.map((e) => e.name)).not.toContain(REPO_CA_FILE_ENV);
  });

  it("inject this release's image, never latest, and keep an image the user sets", () => {
    const { pod } = injectFixture('deployment-pod');
    const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    for (const c of pod.spec!.initContainers!) expect(c.image).toBe(`flomesh/flb-mesh:${version}`);
    expect(MESH_IMAGE).toBe(`flomesh/flb-mesh:${version}`);
    const own = MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', sidecar: { image: 'registry.example/flb:canary' } });
    expect(own.sidecar.image).toBe('registry.example/flb:canary');
    expect(own.init.image).toBe(`flomesh/flb-mesh:${version}`);
  });

  it('label injected pods so the control plane can select them, whether the pod had labels or not', () => {
    expect(injectFixture('deployment-pod').pod.metadata!.labels).toEqual({ app: 'orders', 'pod-template-hash': '7d9f8c6b5', [SIDECAR_INJECTED_LABEL]: 'true' });
    expect(injectFixture('minimal-pod').pod.metadata!.labels).toEqual({ [SIDECAR_INJECTED_LABEL]: 'true' });
    expect(injectFixture('pod-label-false').pod.metadata!.labels?.[SIDECAR_INJECTED_LABEL]).toBeUndefined();
  });

  it("tell the sidecar to listen on the mesh's ports, and the postStart hook which admin port to ask", () => {
    const { pod } = injectFixture('mesh-ports');
    const sidecar = pod.spec!.containers.find((c) => c.name === SIDECAR_CONTAINER_NAME)!;
    expect(sidecar.args).toEqual([
      '--admin-port=16000',
      '--outbound-port=16001',
      '--inbound-port=16003',
      '--metrics-port=16010',
      '--dns-port=16053',
      '--liveness-probe-port=16901',
      '--readiness-probe-port=16902',
      '--startup-probe-port=16903',
    ]);
    expect(sidecar.lifecycle!.postStart!.exec!.command).toEqual(['flb', 'sidecar', 'wait-ready', '--timeout=120s', '--admin-port=16000']);
    // A native sidecar started first is waited for by flb-init, on the same port.
    expect(initContainer(injectFixture('mesh-ports', { nativeSidecars: true }).pod, 'flb-init').args).toContain('--sidecar-admin-port=16000');
    expect(sidecar.readinessProbe!.httpGet!.port).toBe(16902);
    expect(pod.spec!.containers.find((c) => c.name === 'web')!.readinessProbe!.httpGet).toMatchObject({ port: 16902 });
  });

  it('rewrite HTTP, TCP and gRPC probes to the sidecar probe ports and keep the originals for the sidecar', () => {
    const { pod } = injectFixture('deployment-pod');
    const app = pod.spec!.containers[0]!;
    expect(app.livenessProbe).toEqual({ httpGet: { path: '/app-health/app/liveness', port: 15901, scheme: 'HTTP' }, periodSeconds: 10 });
    expect(app.readinessProbe).toEqual({ httpGet: { path: '/app-health/app/readiness', port: 15902, scheme: 'HTTP' }, initialDelaySeconds: 2 });
    expect(app.startupProbe).toEqual({ httpGet: { path: '/app-health/app/startup', port: 15903, scheme: 'HTTP' }, failureThreshold: 30 });
    expect(pod.spec!.containers[1]!.livenessProbe).toEqual({ exec: { command: ['cat', '/tmp/healthy'] } });
    const probes = JSON.parse(initContainer(pod, 'flb-sidecar').env!.find((e) => e.name === 'FLB_APP_PROBES')!.value!) as Record<string, { original: unknown }>;
    expect(probes['/app-health/app/liveness']!.original).toEqual({
      type: 'http',
      port: 8080,
      path: '/actuator/health/liveness',
      scheme: 'HTTP',
      headers: [{ name: 'X-Probe', value: 'kubelet' }],
    });
    expect(probes['/app-health/app/readiness']!.original).toEqual({ type: 'tcp', port: 8080 });
    expect(probes['/app-health/app/startup']!.original).toEqual({ type: 'grpc', port: 9090 });
  });

  it('carry validated exclusions to the init container and the annotation, merged with the mesh defaults', () => {
    const { pod } = injectFixture('exclusions');
    const annotation = InterceptionSchema.parse(JSON.parse(pod.metadata!.annotations![INTERCEPTION_ANNOTATION]!));
    expect(annotation).toMatchObject({
      excludeOutboundPorts: [25, 5432, 6379],
      excludeInboundPorts: [9100],
      excludeOutboundIpRanges: ['169.254.169.254/32', '10.10.0.0/16', '192.168.1.7/32'],
      includeOutboundIpRanges: ['10.0.0.0/8'],
    });
    expect(JSON.parse(initContainer(pod, 'flb-init').env![0]!.value!)).toEqual(annotation);
  });

  it('deny invalid annotations with a message naming the annotation', () => {
    const message =
      'annotation flomesh.io/outbound-port-exclusion-list: "postgres" is not a port number 1-65535 (expected a comma-separated list such as "5432,6379")';
    expect(injectFixture('exclusions-invalid').result).toEqual({
      action: 'deny',
      message,
      problem: 'pod annotation flomesh.io/outbound-port-exclusion-list is invalid',
      invalid: [
        {
          kind: 'annotation',
          key: 'flomesh.io/outbound-port-exclusion-list',
          message,
          problem: 'pod annotation flomesh.io/outbound-port-exclusion-list is invalid',
        },
      ],
    });
  });

  it('deny naming every bad label and annotation at once, and each bad item of a list', () => {
    const { result } = injectFixture('every-problem-at-once');
    expect(result.action === 'deny' && result.invalid.map((i) => `${i.kind} ${i.key}`)).toEqual([
      'label flomesh.io/inject',
      'annotation flomesh.io/outbound-port-exclusion-list',
      'annotation flomesh.io/outbound-ip-range-exclusion-list',
      'annotation flomesh.io/proxy-memory-limit',
    ]);
    expect(result.action === 'deny' && result.message).toContain('"postgres", "redis" are not port numbers');
    expect(result.action === 'deny' && result.problem).toBe(
      'pod label flomesh.io/inject is neither "true" nor "false"; pod annotation flomesh.io/outbound-port-exclusion-list is invalid; ' +
        'pod annotation flomesh.io/outbound-ip-range-exclusion-list is invalid; pod annotation flomesh.io/proxy-memory-limit is invalid',
    );
  });

  it('record what was injected in flomesh.io/sidecar-status', () => {
    const { pod } = injectFixture('non-native-sidecar');
    expect(JSON.parse(pod.metadata!.annotations![SIDECAR_STATUS_ANNOTATION]!)).toEqual({
      version: '0.1.0-test',
      mode: 'iptables',
      native: false,
      initContainers: ['flb-init'],
      containers: ['flb-sidecar'],
      volumes: ['flb-repo-access', 'flb-state'],
    });
    expect(pod.spec!.containers[0]!.lifecycle!.postStart!.exec!.command).toEqual(['flb', 'sidecar', 'wait-ready', '--timeout=120s', '--admin-port=15000']);
    expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-init', 'migrate']);
  });

  it('warn and point to CNI mode when Pod Security would reject the init container', () => {
    const { result } = injectFixture('pod-security-restricted');
    expect(result.action).toBe('inject');
    expect(result.action === 'inject' && result.podSecurityConflict).toMatch(/enforces Pod Security "restricted".*use the CNI interception mode/);
    const cni = injectFixture('cni-mode');
    expect(cni.result.action === 'inject' && cni.result.warnings).toEqual([]);
    expect(cni.pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
    expect(cni.pod.spec!.initContainers![0]!.securityContext).toMatchObject({ runAsUser: 1501, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
  });

  it('in eBPF mode add no iptables init container and no NET_ADMIN, only the unprivileged validation', () => {
    const ebpf = injectFixture('ebpf-mode');
    expect(ebpf.result.action === 'inject' && ebpf.result.warnings).toEqual([]);
    expect(ebpf.pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-validation', 'flb-sidecar']);
    expect(ebpf.pod.spec!.initContainers![0]!.command).toEqual(['flb', 'cni', 'validate']);
    expect(JSON.stringify(ebpf.pod)).not.toMatch(/NET_ADMIN|NET_RAW|"runAsUser":0/);
    expect(JSON.parse(ebpf.pod.metadata!.annotations![INTERCEPTION_ANNOTATION]!)).toMatchObject({ mode: 'ebpf' });
  });

  it('take the sidecar image and command from the mesh config (so a Pipy image can be injected)', () => {
    const fixture = load('minimal-pod');
    const mesh = MeshSchema.parse({
      apiVersion: API_VERSION,
      kind: 'Mesh',
      name: 'flb',
      sidecar: { image: 'flomesh/pipy:1.5', command: ['pipy', 'http://repo/flb/sidecars/'] },
    });
    const result = injectPod(fixture.pod, fixture.namespace, { mesh, nativeSidecars: true, version: 'x' });
    const sidecar = apply(fixture.pod, result).spec!.initContainers!.find((c) => c.name === 'flb-sidecar')!;
    expect(sidecar.image).toBe('flomesh/pipy:1.5');
    expect(sidecar.command).toEqual(['pipy', 'http://repo/flb/sidecars/']);
    // flb's port flags would mean nothing to another program.
    expect(sidecar.args).toBeUndefined();
  });
});

describe('a pod that chooses its interception mode (flomesh.io/interception-mode)', () => {
  const MODES = ['iptables', 'cni', 'ebpf'] as const;
  const meshIn = (mode: string, interception: Record<string, unknown> = {}) =>
    MeshSchema.parse({ apiVersion: API_VERSION, kind: 'Mesh', name: 'flb', interception: { mode, ...interception } });
  const namespace: V1Namespace = { metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled' } } };
  const podIn = (mode?: string, annotations: Record<string, string> = {}): V1Pod => ({
    metadata: { name: 'api', namespace: 'shop', annotations: { ...(mode === undefined ? {} : { 'flomesh.io/interception-mode': mode }), ...annotations } },
    spec: { containers: [{ name: 'api', image: 'example/api' }] },
  });
  const inject = (meshMode: string, podMode?: string, overrides: Partial<InjectorSettings> = {}) => {
    const pod = podIn(podMode);
    const result = injectPod(pod, namespace, { mesh: meshIn(meshMode), nativeSidecars: true, version: 'x', ...overrides });
    return { result, pod: apply(pod, result) };
  };
  /** What a user checks on the injected pod: the containers in order, the modes it records, and who needs NET_ADMIN. */
  const observed = (pod: V1Pod) => {
    const sidecar = [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].find((c) => c.name === SIDECAR_CONTAINER_NAME)!;
    return {
      initContainers: (pod.spec!.initContainers ?? []).map((c) => c.name),
      interceptionMode: (JSON.parse(pod.metadata!.annotations![INTERCEPTION_ANNOTATION]!) as { mode: string }).mode,
      statusMode: (JSON.parse(pod.metadata!.annotations![SIDECAR_STATUS_ANNOTATION]!) as { mode: string }).mode,
      sidecarMode: sidecar.env!.find((e) => e.name === 'FLB_INTERCEPTION_MODE')?.value,
      netAdmin: JSON.stringify(pod.spec).includes('NET_ADMIN'),
      sidecarHeld: sidecar.lifecycle?.postStart !== undefined,
    };
  };

  const allowed: [string, string][] = [
    ['iptables', 'iptables'],
    ['cni', 'iptables'],
    ['cni', 'cni'],
    ['ebpf', 'iptables'],
    ['ebpf', 'cni'],
    ['ebpf', 'ebpf'],
  ];
  it.each(allowed)('a %s mesh injects a pod that chose %s in that mode, in its order', (meshMode, podMode) => {
    const { result, pod } = inject(meshMode, podMode);
    expect(result.action).toBe('inject');
    // The sidecar first only in iptables mode, flb-init waiting for it; the validation of cni and
    // ebpf listens on the outbound port, so it runs before the sidecar binds it.
    expect(observed(pod)).toEqual(
      podMode === 'iptables'
        ? {
            initContainers: ['flb-sidecar', 'flb-init'],
            interceptionMode: 'iptables',
            statusMode: 'iptables',
            sidecarMode: 'iptables',
            netAdmin: true,
            sidecarHeld: false,
          }
        : {
            initContainers: ['flb-validation', 'flb-sidecar'],
            interceptionMode: podMode,
            statusMode: podMode,
            sidecarMode: podMode,
            netAdmin: false,
            sidecarHeld: true,
          },
    );
    const status = JSON.parse(pod.metadata!.annotations![SIDECAR_STATUS_ANNOTATION]!) as { initContainers: string[] };
    expect(status.initContainers).toEqual(observed(pod).initContainers);
  });

  it.each(MODES)("a pod without the annotation follows the %s mesh's mode", (meshMode) => {
    expect(observed(inject(meshMode).pod)).toMatchObject({ interceptionMode: meshMode, statusMode: meshMode, sidecarMode: meshMode });
  });

  it('keeps the order without native sidecars: the interception init container, the sidecar as the first container', () => {
    const { pod } = inject('ebpf', 'iptables', { nativeSidecars: false });
    expect(pod.spec!.initContainers!.map((c) => c.name)).toEqual(['flb-init']);
    expect(pod.spec!.containers.map((c) => c.name)).toEqual(['flb-sidecar', 'api']);
    expect(JSON.parse(pod.metadata!.annotations![SIDECAR_STATUS_ANNOTATION]!)).toMatchObject({
      mode: 'iptables',
      initContainers: ['flb-init'],
      containers: ['flb-sidecar'],
    });
  });

  it('refuses cni and ebpf in an iptables mesh, which runs no node agent, saying what to do', () => {
    for (const mode of ['cni', 'ebpf']) {
      const { result } = inject('iptables', mode);
      expect(result).toMatchObject({ action: 'deny', problem: 'pod annotation flomesh.io/interception-mode is invalid' });
      expect(result.action === 'deny' && result.message).toBe(
        `annotation flomesh.io/interception-mode: "${mode}" is not available: this mesh's interception.mode is "iptables", which deploys no CNI node agent ` +
          `to set the pod up, so it would run unmeshed or fail its validation; remove the annotation, or set the mesh's interception.mode to "${mode}" ` +
          `(its node agent also sets up "iptables" pods)`,
      );
    }
  });

  it('refuses ebpf in a cni mesh, whose node agent runs without eBPF', () => {
    const { result } = inject('cni', 'ebpf');
    expect(result.action === 'deny' && result.message).toBe(
      `annotation flomesh.io/interception-mode: "ebpf" is not available: this mesh's interception.mode is "cni", whose node agent runs without eBPF ` +
        `(unprivileged, no bpffs or cgroup v2 mounts), so the pod would fail its validation; choose "iptables" or "cni", or set the mesh's ` +
        `interception.mode to "ebpf" (its node agent does all three)`,
    );
  });

  it.each(['nftables', 'EBPF', '', 'toString', '__proto__'])('refuses %j as a mode, naming the annotation and the modes there are', (value) => {
    const { result } = inject('ebpf', value);
    expect(result.action === 'deny' && result.message).toBe(
      `annotation flomesh.io/interception-mode: ${JSON.stringify(value)} is not an interception mode (expected "iptables", "cni" or "ebpf")`,
    );
  });

  it("refuses, naming the annotation, a mode that cannot honour the mesh's settings instead of throwing", () => {
    // eBPF intercepts connect() before an interface is chosen, so the contract refuses it with
    // excludeInterfaces. A parsed ebpf mesh cannot carry them and a cni mesh refuses ebpf first; a
    // mesh object put together by hand (a library user) still must not make the injector throw.
    const cni = meshIn('cni', { excludeInterfaces: ['eth1'] });
    const mesh: Mesh = { ...cni, interception: { ...cni.interception, mode: 'ebpf' } };
    const result = injectPod(podIn('ebpf'), namespace, { mesh, nativeSidecars: true, version: 'x' });
    expect(result).toMatchObject({ action: 'deny', problem: 'pod annotation flomesh.io/interception-mode is invalid' });
    expect(result.action === 'deny' && result.message).toMatch(
      /^annotation flomesh\.io\/interception-mode: "ebpf" cannot honour this mesh's interception settings \(excludeInterfaces: /,
    );
  });

  it('tells Pod Security users to choose the mode the node agent sets up, where the mesh runs one', () => {
    const restricted: V1Namespace = {
      metadata: { name: 'shop', labels: { 'flomesh.io/inject': 'enabled', 'pod-security.kubernetes.io/enforce': 'restricted' } },
    };
    const result = injectPod(podIn('iptables'), restricted, { mesh: meshIn('ebpf'), nativeSidecars: true, version: 'x' });
    expect(result.action === 'inject' && result.podSecurityConflict).toMatch(/annotate the pod flomesh\.io\/interception-mode: ebpf/);
    expect(injectPod(podIn('cni'), restricted, { mesh: meshIn('ebpf'), nativeSidecars: true, version: 'x' })).toMatchObject({ action: 'inject', warnings: [] });
  });

  it('builds the parts of each mode once, not per pod', () => {
    const settings: InjectorSettings = { mesh: meshIn('ebpf'), nativeSidecars: true, version: 'x' };
    const first = MODES.map((mode) => injectPod(podIn(mode), namespace, settings));
    const again = MODES.map((mode) => injectPod(podIn(mode), namespace, settings));
    const interceptionContainer = (r: InjectionResult) => {
      const added = r.action === 'inject' ? r.patch.find((op) => op.path.startsWith('/spec/initContainers')) : undefined;
      return ((added as { value?: V1Container[] } | undefined)?.value ?? []).find((c) => c.name !== SIDECAR_CONTAINER_NAME);
    };
    // The same (frozen, shared) container comes back for the same mode: built once.
    for (let i = 0; i < MODES.length; i++) {
      expect(interceptionContainer(first[i]!)?.name).toBe(MODES[i] === 'iptables' ? 'flb-init' : 'flb-validation');
      expect(interceptionContainer(again[i]!)).toBe(interceptionContainer(first[i]!));
    }
  });
});
