import type { V1Container, V1EnvVar, V1Namespace, V1Pod, V1Volume } from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';
import {
  INBOUND_PORT_EXCLUSION_ANNOTATION,
  INIT_CONTAINER_NAME,
  INTERCEPTION_ANNOTATION,
  InterceptionSchema,
  OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION,
  OUTBOUND_PORT_EXCLUSION_ANNOTATION,
  PROXY_RESOURCE_ANNOTATIONS,
  SIDECAR_CONTAINER_NAME,
  SIDECAR_STATUS_ANNOTATION,
  VALIDATION_CONTAINER_NAME,
  type Interception,
  type Mesh,
} from '../common/contract/index.js';
import { AnnotationError, parseCidrList, parsePortList, union } from './exclusions.js';
import { appendToArray, insertIntoArray, setMapEntries } from './patch.js';
import { decide, SKIP_REASONS, type SkipReason } from './policy.js';
import { rewriteProbes, type AppProbe, type ProbeRewrite } from './probes.js';

export interface InjectorSettings {
  mesh: Mesh;
  /** Inject the sidecar as an init container with restartPolicy Always (Kubernetes 1.29+). */
  nativeSidecars: boolean;
  /** flb-mesh version, recorded in the sidecar-status annotation. */
  version: string;
}

export type InjectionResult =
  | {
      action: 'inject';
      patch: Operation[];
      /** Why the pod was selected, e.g. "namespace label flomesh.io/inject=enabled". */
      because: string;
      /** A pod that already had the sidecar, whose new containers only needed probe rewrites. */
      reinvocation: boolean;
      warnings: string[];
      /** Set when the namespace's Pod Security level will reject the interception init container. */
      podSecurityConflict?: string;
    }
  | { action: 'skip'; reason: SkipReason; message: string; warnings: string[] }
  /** `problem`: what is wrong in our own words only, for Events (`message` quotes the pod's values). */
  | { action: 'deny'; message: string; problem: string };

export const APP_PROBES_ENV = 'FLB_APP_PROBES';
export const REPO_TOKEN_VOLUME = 'flb-repo-token';
export const STATE_VOLUME = 'flb-state';
export const REPO_TOKEN_DIR = '/var/run/secrets/flomesh.io/repo';
export const STATE_DIR = '/var/lib/flb';

export interface SidecarStatus {
  version: string;
  mode: Interception['mode'];
  native: boolean;
  initContainers: string[];
  containers: string[];
  volumes: string[];
}

/**
 * The injection: a pure function of the pod, its namespace and the mesh settings, returning a
 * JSON patch (RFC 6902) against the pod as given, a named skip reason, or a denial for input
 * the user must fix. The webhook and `flb inject` are thin shells around it.
 */
export function injectPod(
  pod: V1Pod,
  namespace: V1Namespace | undefined,
  settings: InjectorSettings,
  /** The workload a pod template belongs to, when there is no ownerReference to read it from (`flb inject`). */
  workload?: { kind: string; name: string },
): InjectionResult {
  const { mesh } = settings;
  const decision = decide(pod, namespace, mesh);
  if ('error' in decision) return { action: 'deny', message: decision.error, problem: decision.problem };
  if (!decision.inject) return { action: 'skip', reason: decision.reason, message: SKIP_REASONS[decision.reason], warnings: [] };

  const warnings: string[] = [];
  if (isInjected(pod)) return reinvoke(pod, mesh, decision.because, warnings);

  let parts: InterceptionParts;
  let resources: NonNullable<V1Container['resources']>;
  try {
    parts = interceptionParts(pod, mesh);
    resources = sidecarResources(pod, mesh);
  } catch (error) {
    if (error instanceof AnnotationError) return { action: 'deny', message: error.message, problem: `annotation ${error.annotation} is invalid` };
    throw error;
  }

  const containers = pod.spec?.containers ?? [];
  const rewrites = rewriteProbes(containers, mesh.ports, warnings);
  const sidecar = sidecarContainer(settings, resources, rewrites, workload ?? ownerWorkload(pod));
  const { interception } = parts;
  const initContainers: V1Container[] = [];
  if (interception.mode === 'iptables') initContainers.push(parts.init);
  // In CNI mode the node agent wrote the rules; a pod that started before the plugin was on its node
  // has none, and this check says so instead of letting the app run unmeshed.
  if (interception.mode === 'cni') initContainers.push(validationContainer(mesh, parts.json));
  if (settings.nativeSidecars) initContainers.push(sidecar);
  const volumes = sidecarVolumes(mesh);
  const status: SidecarStatus = {
    version: settings.version,
    mode: interception.mode,
    native: settings.nativeSidecars,
    initContainers: initContainers.map((c) => c.name),
    containers: settings.nativeSidecars ? [] : [sidecar.name],
    volumes: volumes.map((v) => v.name ?? ''),
  };

  const annotations: Record<string, string> = {
    [SIDECAR_STATUS_ANNOTATION]: JSON.stringify(status),
    [INTERCEPTION_ANNOTATION]: parts.json,
  };
  // An app that exposes its own metrics keeps its scrape settings.
  if (pod.metadata?.annotations?.['prometheus.io/scrape'] === undefined) {
    Object.assign(annotations, { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(mesh.ports.metrics), 'prometheus.io/path': '/metrics' });
  }

  const patch: Operation[] = [];
  if (pod.metadata === undefined) patch.push({ op: 'add', path: '/metadata', value: {} });
  patch.push(...setMapEntries('/metadata/annotations', pod.metadata?.annotations, annotations));
  // Probe replacements use the container indexes as given, so they come before any insertion.
  for (const rewrite of rewrites) patch.push({ op: 'replace', path: `/spec/containers/${rewrite.containerIndex}/${rewrite.field}`, value: rewrite.probe });
  patch.push(...insertIntoArray('/spec/initContainers', pod.spec?.initContainers, 0, initContainers));
  if (!settings.nativeSidecars) patch.push(...insertIntoArray('/spec/containers', containers, 0, [sidecar]));
  patch.push(...appendToArray('/spec/volumes', pod.spec?.volumes, volumes));

  const podSecurityConflict = interception.mode === 'iptables' ? podSecurityProblem(namespace) : undefined;
  if (podSecurityConflict) warnings.push(podSecurityConflict);
  return { action: 'inject', patch, because: decision.because, reinvocation: false, warnings, ...(podSecurityConflict ? { podSecurityConflict } : {}) };
}

export function isInjected(pod: V1Pod): boolean {
  return (
    pod.metadata?.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined ||
    [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].some((c) => c.name === SIDECAR_CONTAINER_NAME)
  );
}

/**
 * Reinvocation: another webhook ran after us and may have added containers. The sidecar is not
 * added again, but probes of containers we have not seen are rewritten and handed to the sidecar.
 */
function reinvoke(pod: V1Pod, mesh: Mesh, because: string, warnings: string[]): InjectionResult {
  const containers = pod.spec?.containers ?? [];
  const appContainers = containers.map((c, i) => ({ c, i })).filter(({ c }) => c.name !== SIDECAR_CONTAINER_NAME);
  const rewrites = rewriteProbes(
    appContainers.map(({ c }) => c),
    mesh.ports,
    warnings,
  ).map((r) => ({ ...r, containerIndex: appContainers[r.containerIndex]!.i }));
  const located = findSidecar(pod);
  if (rewrites.length === 0 || !located) {
    return { action: 'skip', reason: 'already-injected', message: SKIP_REASONS['already-injected'], warnings };
  }
  const patch: Operation[] = rewrites.map((r) => ({ op: 'replace', path: `/spec/containers/${r.containerIndex}/${r.field}`, value: r.probe }));
  const env = Array.isArray(located.container.env) ? located.container.env : [];
  const index = env.findIndex((e) => e?.name === APP_PROBES_ENV);
  const known = index >= 0 ? parseProbeMap(env[index]!.value) : {};
  const value = JSON.stringify({ ...known, ...probeMap(rewrites) });
  const envPath = `/spec/${located.list}/${located.index}/env`;
  // The whole entry: one that someone mangled (valueFrom, no value) would not take a value's replace.
  if (index >= 0) patch.push({ op: 'replace', path: `${envPath}/${index}`, value: { name: APP_PROBES_ENV, value } });
  else patch.push(...appendToArray(envPath, Array.isArray(located.container.env) ? located.container.env : undefined, [{ name: APP_PROBES_ENV, value }]));
  return { action: 'inject', patch, because, reinvocation: true, warnings };
}

/** The probes the sidecar already knows; a value someone else mangled is replaced, not trusted. */
function parseProbeMap(value: unknown): Record<string, AppProbe> {
  try {
    const parsed = JSON.parse(String(value ?? '{}')) as unknown;
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, AppProbe>) : {};
  } catch {
    return {};
  }
}

function findSidecar(pod: V1Pod): { list: 'initContainers' | 'containers'; index: number; container: V1Container } | undefined {
  for (const list of ['initContainers', 'containers'] as const) {
    const index = (pod.spec?.[list] ?? []).findIndex((c) => c.name === SIDECAR_CONTAINER_NAME);
    if (index >= 0) return { list, index, container: pod.spec![list]![index]! };
  }
  return undefined;
}

function probeMap(rewrites: ProbeRewrite[]): Record<string, AppProbe> {
  return Object.fromEntries(rewrites.map((r) => [r.path, r.original]));
}

const EXCLUSION_ANNOTATIONS = [
  INBOUND_PORT_EXCLUSION_ANNOTATION,
  OUTBOUND_PORT_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION,
  OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION,
];

interface InterceptionParts {
  interception: Interception;
  json: string;
  /** Frozen: shared by every pod with the same settings, so nothing may change it. */
  init: V1Container;
}

/**
 * Most pods carry no exclusion annotations, so their interception settings, its JSON and the init
 * container are the same for every pod of a mesh: built once (zod parsing and serialising them
 * was a fifth of the webhook's CPU per review, bench/webhook.ts).
 */
const interceptionMemo = new WeakMap<Mesh, Map<string, InterceptionParts>>();

function interceptionParts(pod: V1Pod, mesh: Mesh): InterceptionParts {
  const annotations = pod.metadata?.annotations ?? {};
  const key = EXCLUSION_ANNOTATIONS.map((a) => annotations[a] ?? '\u0000').join('\u0001');
  let perMesh = interceptionMemo.get(mesh);
  if (!perMesh) interceptionMemo.set(mesh, (perMesh = new Map()));
  let parts = perMesh.get(key);
  if (!parts) {
    const interception = interceptionFor(pod, mesh);
    parts = { interception, json: JSON.stringify(interception), init: deepFreeze(initContainer(mesh, interception)) };
    if (perMesh.size >= 1000) perMesh.clear();
    perMesh.set(key, parts);
  }
  return parts;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** The mesh's interception defaults narrowed by the pod's exclusion annotations. */
export function interceptionFor(pod: V1Pod, mesh: Mesh): Interception {
  const annotations = pod.metadata?.annotations ?? {};
  const list = <T>(name: string, parse: (annotation: string, value: string) => T[]): T[] =>
    annotations[name] === undefined ? [] : parse(name, annotations[name]);
  const m = mesh.interception;
  return InterceptionSchema.parse({
    version: 1,
    mode: m.mode,
    proxyUid: mesh.proxyUid,
    outboundPort: mesh.ports.outbound,
    inboundPort: mesh.ports.inbound,
    dnsPort: mesh.ports.dns,
    sidecarPorts: Object.values(mesh.ports),
    captureDns: m.captureDns,
    ipv6: m.ipv6,
    excludeInboundPorts: union(m.excludeInboundPorts, list(INBOUND_PORT_EXCLUSION_ANNOTATION, parsePortList)),
    excludeOutboundPorts: union(m.excludeOutboundPorts, list(OUTBOUND_PORT_EXCLUSION_ANNOTATION, parsePortList)),
    excludeOutboundIpRanges: union(m.excludeOutboundIpRanges, list(OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION, parseCidrList)),
    includeOutboundIpRanges: union(m.includeOutboundIpRanges, list(OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION, parseCidrList)),
    excludeInterfaces: m.excludeInterfaces,
  });
}

const QUANTITY = /^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/;

function sidecarResources(pod: V1Pod, mesh: Mesh): NonNullable<V1Container['resources']> {
  const annotations = pod.metadata?.annotations ?? {};
  const pick = (name: string, fallback: string | undefined): string | undefined => {
    const value = annotations[name];
    if (value === undefined) return fallback;
    if (!QUANTITY.test(value)) throw new AnnotationError(name, `${JSON.stringify(value)} is not a Kubernetes quantity such as 100m or 128Mi`);
    return value;
  };
  const { requests, limits } = mesh.sidecar.resources;
  const compact = (o: Record<string, string | undefined>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Record<string, string>;
  return {
    requests: compact({
      cpu: pick(PROXY_RESOURCE_ANNOTATIONS.cpuRequest, requests.cpu),
      memory: pick(PROXY_RESOURCE_ANNOTATIONS.memoryRequest, requests.memory),
    }),
    limits: compact({ cpu: pick(PROXY_RESOURCE_ANNOTATIONS.cpuLimit, limits.cpu), memory: pick(PROXY_RESOURCE_ANNOTATIONS.memoryLimit, limits.memory) }),
  };
}

/** The workload a pod belongs to, for the sidecar's identity and metrics: a Deployment, not its ReplicaSet. */
export function ownerWorkload(pod: V1Pod): { kind: string; name: string } {
  const owner = pod.metadata?.ownerReferences?.find((o) => o.controller) ?? pod.metadata?.ownerReferences?.[0];
  const hash = pod.metadata?.labels?.['pod-template-hash'];
  if (owner?.kind === 'ReplicaSet' && hash && owner.name.endsWith(`-${hash}`)) {
    return { kind: 'Deployment', name: owner.name.slice(0, -hash.length - 1) };
  }
  if (owner) return { kind: owner.kind, name: owner.name };
  return { kind: 'Pod', name: pod.metadata?.name ?? pod.metadata?.generateName ?? '' };
}

function fieldEnv(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

function sidecarContainer(
  settings: InjectorSettings,
  resources: NonNullable<V1Container['resources']>,
  rewrites: ProbeRewrite[],
  owner: { kind: string; name: string },
): V1Container {
  const { mesh } = settings;
  // A fresh object each time: shared references would come out as YAML anchors in `flb inject`.
  const ready = () => ({ httpGet: { path: '/ready', port: mesh.ports.readinessProbe, scheme: 'HTTP' } });
  return {
    name: SIDECAR_CONTAINER_NAME,
    image: mesh.sidecar.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: mesh.sidecar.command,
    ...(mesh.sidecar.args.length ? { args: mesh.sidecar.args } : {}),
    // A native sidecar starts before the app's containers and stops after them (Jobs complete).
    ...(settings.nativeSidecars ? { restartPolicy: 'Always' } : {}),
    env: [
      // The sidecar derives its id (pod.<namespace>.<name>) from these at run time: a pod made from
      // generateName has no name yet at admission.
      fieldEnv('POD_NAME', 'metadata.name'),
      fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
      fieldEnv('POD_UID', 'metadata.uid'),
      fieldEnv('POD_IP', 'status.podIP'),
      fieldEnv('POD_IPS', 'status.podIPs'),
      fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
      fieldEnv('NODE_NAME', 'spec.nodeName'),
      { name: 'FLB_WORKLOAD_KIND', value: owner.kind },
      { name: 'FLB_WORKLOAD_NAME', value: owner.name },
      { name: 'FLB_MESH', value: mesh.name },
      { name: 'FLB_REPO_URL', value: mesh.repo.url },
      { name: 'FLB_REPO_TOKEN_FILE', value: `${REPO_TOKEN_DIR}/token` },
      { name: 'FLB_STATE_DIR', value: STATE_DIR },
      { name: 'FLB_LOG_LEVEL', value: mesh.sidecar.logLevel },
      { name: APP_PROBES_ENV, value: JSON.stringify(probeMap(rewrites)) },
      ...(mesh.sidecar.nodeOptions ? [{ name: 'NODE_OPTIONS', value: mesh.sidecar.nodeOptions }] : []),
    ],
    ports: [{ name: 'flb-metrics', containerPort: mesh.ports.metrics, protocol: 'TCP' }],
    readinessProbe: { ...ready(), periodSeconds: 2, failureThreshold: 3 },
    ...(settings.nativeSidecars
      ? { startupProbe: { ...ready(), periodSeconds: 1, failureThreshold: 120 } }
      : { lifecycle: { postStart: { exec: { command: mesh.sidecar.waitReadyCommand } } } }),
    resources,
    securityContext: {
      runAsUser: mesh.proxyUid,
      runAsGroup: mesh.proxyUid,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
    volumeMounts: [
      { name: REPO_TOKEN_VOLUME, mountPath: REPO_TOKEN_DIR, readOnly: true },
      { name: STATE_VOLUME, mountPath: STATE_DIR },
    ],
  };
}

function initContainer(mesh: Mesh, interception: Interception): V1Container {
  return {
    name: INIT_CONTAINER_NAME,
    image: mesh.init.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: mesh.init.command,
    env: [{ name: 'FLB_INTERCEPTION', value: JSON.stringify(interception) }],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Root with NET_ADMIN and NET_RAW to write the pod's nat table, and nothing more.
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { add: ['NET_ADMIN', 'NET_RAW'], drop: ['ALL'] },
    },
  };
}

function validationContainer(mesh: Mesh, interceptionJson: string): V1Container {
  return {
    name: VALIDATION_CONTAINER_NAME,
    image: mesh.init.image,
    imagePullPolicy: mesh.sidecar.imagePullPolicy,
    command: ['flb', 'cni', 'validate'],
    env: [{ name: 'FLB_INTERCEPTION', value: interceptionJson }],
    resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
    // Any UID but the proxy's, or its test connection would not be redirected; no privilege at all.
    securityContext: {
      runAsUser: mesh.proxyUid + 1,
      runAsGroup: mesh.proxyUid + 1,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}

function sidecarVolumes(mesh: Mesh): V1Volume[] {
  return [
    {
      name: REPO_TOKEN_VOLUME,
      projected: { sources: [{ serviceAccountToken: { audience: mesh.repo.tokenAudience, expirationSeconds: 3600, path: 'token' } }] },
    },
    { name: STATE_VOLUME, emptyDir: {} },
  ];
}

/** Pod Security baseline and restricted both forbid NET_ADMIN: say so, and what to do. */
function podSecurityProblem(namespace: V1Namespace | undefined): string | undefined {
  const level = namespace?.metadata?.labels?.['pod-security.kubernetes.io/enforce'];
  if (level !== 'baseline' && level !== 'restricted') return undefined;
  return (
    `namespace ${namespace?.metadata?.name} enforces Pod Security "${level}", which rejects the ${INIT_CONTAINER_NAME} init container ` +
    `(NET_ADMIN and NET_RAW as root); use the CNI interception mode (mesh interception.mode: cni), ` +
    `or enforce "privileged" in this namespace`
  );
}
